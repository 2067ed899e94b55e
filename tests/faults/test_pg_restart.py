"""PostgreSQL stopped with ``-m immediate`` during sustained ingest, then started again.

A cluster of the test's own (never the shared one); an API replica, a worker with its bridge
and the projection runner as real processes, none restarted. While the database is down the
API answers 503 ``store_unavailable`` with ``Retry-After`` within seconds and ``/readyz`` is
not ready; afterwards everything recovers by itself, and the counts are those of the crash
test: nothing lost, nothing doubled, read models equal a rebuild.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from dealflow.bench.chaos import ChaosConfig, ChaosRun, run_chaos
from tests.faults.conftest import OwnPostgres

pytestmark = [pytest.mark.postgres, pytest.mark.temporal, pytest.mark.slow]

DOWN_SECONDS = 6.0


def _restart_database(cluster: OwnPostgres, seen: dict[str, Any]) -> Any:
    def disrupt(run: ChaosRun) -> None:
        api = run.fleet.members["api-1"].url
        headers = {"Authorization": f"Bearer {run.token}"}
        cluster.stop_immediately()
        run.note("database stopped (-m immediate)")
        down_at = time.monotonic()
        started = time.monotonic()
        ready = httpx.get(f"{api}/readyz", timeout=60)
        seen["readyz"] = (ready.status_code, round(time.monotonic() - started, 2))
        started = time.monotonic()
        write = httpx.post(
            f"{api}/v1/deals/outage-probe/events",
            json={"type": "opened", "event_id": "probe", "pipeline_id": "chaos", "name": "P"},
            headers=headers,
            timeout=60,
        )
        seen["write"] = (
            write.status_code,
            write.json().get("error"),
            write.headers.get("Retry-After"),
            round(time.monotonic() - started, 2),
        )
        time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - down_at)))
        cluster.start()
        run.note("database started")
        started = time.monotonic()
        run.fleet.wait_ready("api-1", run.token, timeout=60)
        seen["api_ready_after_start_s"] = round(time.monotonic() - started, 2)
        run.note("API ready again")

    return disrupt


@pytest.mark.timeout(600)
def test_database_restart_under_load(own_postgres: OwnPostgres, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}
    report = run_chaos(
        ChaosConfig(
            database_url=own_postgres.url,
            workdir=tmp_path,
            apis=1,
            workers=1,
            threads=3,
            before=4.0,
            after=5.0,
            disrupt=_restart_database(own_postgres, seen),
        )
    )
    print(f"\n{report.render()}\n{seen}\n{report.events}")
    assert report.ok, report.violations
    status, error, retry_after, took = seen["write"]
    assert (status, error) == (503, "store_unavailable") and retry_after, seen
    assert took < 5, f"a write during the outage took {took} s"
    assert seen["readyz"][0] == 503 and seen["readyz"][1] < 5, seen
    # The load saw the outage too, and every 503 it got carried Retry-After.
    assert report.figures["unavailable_with_retry_after"] > 0, report.figures
    assert report.figures["events_lost"] == 0 and report.figures["events_duplicated"] == 0
    assert report.figures["restarts"] == 0  # nothing was restarted by hand
