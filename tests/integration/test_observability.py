"""Operability: one structured log line per request (never a token), and OpenTelemetry spans
across the HTTP request, the ingest transaction and the projection batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from dealflow.http import create_app
from dealflow.runtime import build_services
from engine.persistence.settings import StoreSettings
from tests.conftest import AUTH, TEST_TOKEN
from tests.live import dealflow_env, free_port, wait_healthy
from tests.tracing import recorded_spans

with __import__("warnings").catch_warnings():
    __import__("warnings").simplefilter("ignore")
    from fastapi.testclient import TestClient

OPEN = {"type": "opened", "event_id": "o-1", "pipeline_id": "default", "name": "Acme"}


def _serve(
    tmp_path: Path, *, stdout: int = subprocess.DEVNULL, **env: str
) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "dealflow", "serve", "--port", str(port)],
        env=dealflow_env(tmp_path / "home", DEALFLOW_BOOTSTRAP_TOKEN=TEST_TOKEN, **env),
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, process)
    except AssertionError:
        process.kill()
        raise
    return process, base


def _stop(process: subprocess.Popen[str]) -> str:
    return _stop_both(process)[1]


def _stop_both(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.terminate()
    out, err = process.communicate(timeout=30)
    return out or "", err


def test_json_request_logs_off_a_terminal_never_carry_a_token(tmp_path: Path) -> None:
    process, base = _serve(tmp_path)  # stderr is a pipe: JSON by default
    try:
        made = httpx.post(
            f"{base}/v1/tokens", headers=AUTH, json={"name": "crm-sync", "scopes": ["ingest"]}
        ).json()["token"]
        posted = httpx.post(
            f"{base}/v1/deals/acme/events",
            headers={"Authorization": f"Bearer {made}", "X-Request-ID": "req-42"},
            json=OPEN,
        )
        assert posted.status_code == 201 and posted.headers["x-request-id"] == "req-42"
        page = httpx.get(f"{base}/?token={made}")
        assert page.status_code == 200
        assert len(httpx.get(f"{base}/v1/deals/nope", headers=AUTH).headers["x-request-id"]) == 32
    finally:
        err = _stop(process)
    assert made not in err and TEST_TOKEN not in err
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    requests = [r for r in records if r["logger"] == "dealflow.http"]
    post = next(r for r in requests if r["request_id"] == "req-42")
    assert post["route"] == "/v1/deals/{deal_id}/events" and post["method"] == "POST"
    assert post["status"] == 201 and post["token"] == "crm-sync" and post["latency_ms"] > 0
    assert {"time", "level", "message"} <= set(post)
    dashboard = next(r for r in requests if r["route"] == "/")
    assert dashboard["status"] == 200 and dashboard["token"] is None
    missing = next(r for r in requests if r["route"] == "/v1/deals/{deal_id}")
    assert missing["status"] == 404 and missing["token"] == "bootstrap"
    # uvicorn's own access log (which printed query strings) is off; nothing is unstructured.
    assert all(line.startswith("{") for line in err.splitlines() if line.strip())


def test_text_logs_when_asked(tmp_path: Path) -> None:
    process, base = _serve(tmp_path, DEALFLOW_LOG_FORMAT="text")
    try:
        httpx.get(f"{base}/v1/deals", headers=AUTH)
    finally:
        err = _stop(process)
    line = next(line for line in err.splitlines() if "GET /v1/deals 200" in line)
    assert not line.startswith("{") and "dealflow.http" in line and "token=bootstrap" in line


def test_spans_follow_a_write_from_the_request_to_the_projection(tmp_path: Path) -> None:
    services = build_services(
        StoreSettings(database_url=None, home=tmp_path), bootstrap_token=TEST_TOKEN
    )
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    try:
        with recorded_spans() as spans, TestClient(create_app(services)) as client:
            response = client.post(
                "/v1/deals/acme/events",
                headers={**AUTH, "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
                json=OPEN,
            )
            assert response.status_code == 201
            services.projections.catch_up()
            assert client.get("/?token=s3cret-dashboard-token&pipeline=default").status_code == 200
            by_name: dict[str, Any] = {s.name: s for s in spans}
            assert "s3cret" not in repr([dict(s.attributes or {}) for s in spans])
            assert by_name["GET /"].attributes["http.response.status_code"] == 200
    finally:
        services.close()
    server = by_name["POST /v1/deals/{deal_id}/events"]
    ingest = by_name["dealflow.ingest"]
    assert format(server.context.trace_id, "032x") == trace_id  # the caller's trace continues
    assert ingest.parent is not None and ingest.parent.span_id == server.context.span_id
    assert (
        ingest.attributes["dealflow.commands"] == 1 and ingest.attributes["dealflow.recorded"] == 1
    )
    assert server.attributes["http.response.status_code"] == 201
    assert server.attributes["dealflow.token"] == "bootstrap"
    batch = by_name["dealflow.projection.batch"]
    assert batch.attributes["dealflow.events"] >= 1


def test_tracing_is_switched_on_by_otel_variables(tmp_path: Path) -> None:
    process, base = _serve(
        tmp_path, stdout=subprocess.PIPE, OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="api-1"
    )
    try:
        posted = httpx.post(f"{base}/v1/deals/acme/events", headers=AUTH, json=OPEN)
        assert posted.status_code == 201
    finally:
        out, err = _stop_both(process)  # shutdown flushes the batch processor
    assert '"name": "POST /v1/deals/{deal_id}/events"' in out, err[-3000:]
    assert '"name": "dealflow.ingest"' in out
    assert '"service.name": "api-1"' in out


def test_what_switches_tracing_on() -> None:
    from dealflow.telemetry import tracing_requested

    assert tracing_requested({"OTEL_TRACES_EXPORTER": "console"})
    assert tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert not tracing_requested({})
    assert not tracing_requested({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"})
    assert not tracing_requested({"OTEL_TRACES_EXPORTER": "none"})
