"""A projection that cannot process an event is loud, never a silent stall (issue 9, defect 8).

The edge now refuses NUL, but an event the read side cannot hold may still be in a log (written
before the fix, or by a future bug). Here one is put in behind the API's back; on PostgreSQL
the projection fails on it. ``/readyz`` says ``degraded`` and names the error, ``/metrics``
exports the failure, the runner process itself is unready, and all of that is visible from a
replica that does not run the projection.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dealflow.http import create_app
from dealflow.runtime import build_services
from engine.application import Command, request_hash
from engine.commands import OpenedIn
from engine.persistence.settings import StoreSettings
from tests.hardening.conftest import AUTH, TEST_TOKEN, TestClient

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _poison(app: object, deal_id: str) -> None:
    # Built without validation, as an event of an older release could have been stored.
    payload = OpenedIn.model_construct(
        type="opened", event_id=f"{deal_id}-open", pipeline_id="default", name="bad\x00name"
    )
    command = Command(
        deal_id=deal_id,
        type="opened",
        event_id=f"{deal_id}-open",
        payload=payload,
        request_hash=request_hash(deal_id, {"type": "opened"}),
        actor="tester",
    )
    outcome = app.ingest([command])[0]  # type: ignore[attr-defined]
    assert outcome.status == "recorded", outcome


def test_a_stuck_projection_is_visible_everywhere(pg_url: str, tmp_path: Path) -> None:
    settings = StoreSettings(database_url=pg_url, home=tmp_path)
    runner = build_services(settings, bootstrap_token=TEST_TOKEN, run_projections=True)
    replica = build_services(settings, bootstrap_token=TEST_TOKEN, run_projections=False)
    try:
        with TestClient(create_app(runner)) as runs, TestClient(create_app(replica)) as api:
            _poison(runner.app, "poisoned")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                ready = api.get("/readyz").json()
                if ready["status"] == "degraded":
                    break
                time.sleep(0.2)
            assert ready["status"] == "degraded", ready
            (deals,) = [p for p in ready["projections"] if p["name"] == "deals"]
            assert deals["failing"] and "0x00" in deals["last_error"], deals
            assert deals["lag"] >= 1
            metrics = api.get("/metrics", headers=AUTH).text
            assert 'dealflow_projection_failing{projection="deals"} 1' in metrics
            status = api.get("/v1/projections", headers=AUTH).json()["projections"]
            assert status[0]["failing"] and status[0]["failing_for_s"] >= 0
            # The same from the process that runs the projection.
            assert runs.get("/readyz").json()["status"] == "degraded"
            # Writes still work meanwhile (the store is fine, only one read model is stuck).
            write = api.post(
                "/v1/deals/fine/events",
                json={"type": "opened", "event_id": "fine", "pipeline_id": "default", "name": "F"},
                headers=AUTH,
            )
            assert write.status_code == 201, write.text
    finally:
        replica.close()
        runner.close()
