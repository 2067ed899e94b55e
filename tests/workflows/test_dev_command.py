"""`dealflow dev`: the whole stack in one process tree, driven over HTTP, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.workflows.conftest import TICK_DAYS, pipeline_body, sequence_body
from workflows.devserver import free_port, port_free

pytestmark = [pytest.mark.temporal, pytest.mark.slow]
TOKEN = "dev-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _until(check: object, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()  # type: ignore[operator]
        except httpx.HTTPError:
            result = None
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out: {check}")


def test_dev_stack_end_to_end(tmp_path: Path) -> None:
    api_port, temporal_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("TEMPORAL_ADDRESS", "DATABASE_URL")}
    env.update(DEALFLOW_HOME=str(tmp_path / "home"), DEALFLOW_BOOTSTRAP_TOKEN=TOKEN)
    command = [
        str(Path(sys.executable).with_name("dealflow")),
        "dev",
        "--port",
        str(api_port),
        "--temporal-port",
        str(temporal_port),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{api_port}"
    try:
        _until(lambda: httpx.get(f"{base}/openapi.json").status_code == 200, 60)
        with httpx.Client(base_url=base, headers=AUTH) as http:
            body = pipeline_body(
                max_days=TICK_DAYS,
                escalation={"manager_after_days": TICK_DAYS / 2, "flag_after_days": TICK_DAYS},
            )
            assert http.put("/v1/pipelines/test", json=body).status_code == 200
            assert (
                http.put(
                    "/v1/sequences/welcome", json=sequence_body([0, 5 * TICK_DAYS])
                ).status_code
                == 200
            )
            http.post(
                "/v1/deals/d1/events",
                json={
                    "type": "opened",
                    "event_id": "o1",
                    "pipeline_id": "test",
                    "name": "Dev",
                    "stage": "qualification",
                },
            ).raise_for_status()

            def types() -> list[str]:
                return [e["type"] for e in http.get("/v1/deals/d1/history").json()["events"]]

            _until(lambda: "nurture_touch_sent" in types(), 30)
            http.post(
                "/v1/deals/d1/events",
                json={"type": "activity_logged", "event_id": "a1", "activity": "reply"},
            ).raise_for_status()
            _until(lambda: "nurture_stopped" in types() and "flagged_stale" in types(), 30)
            stops = [
                e["data"]
                for e in http.get("/v1/deals/d1/history").json()["events"]
                if e["type"] == "nurture_stopped"
            ]
            assert stops == [{"sequence_id": "welcome", "reason": "reply"}]
            assert http.get("/v1/deals/d1").json()["stale"] is True
            assert len(http.get("/v1/outbox", params={"deal_id": "d1"}).json()["messages"]) == 3
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0
    assert _until(lambda: port_free(temporal_port) and port_free(api_port), 10)
