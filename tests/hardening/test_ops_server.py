"""The ops port of the worker and the projection runner (engine.ops_server): loopback unless a
deployment opens it, probes open, ``/metrics`` with a ``read`` token like the API's."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.ops_server import OpsServer, start_from_env
from engine.persistence.settings import StoreSettings
from engine.services import Services
from engine.settings import Settings
from tests.conftest import TEST_TOKEN
from tests.helpers import api_services
from tests.live import free_port


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    with api_services(StoreSettings(database_url=None, home=tmp_path)) as wired:
        yield wired


@pytest.fixture
def ops(services: Services) -> Iterator[str]:
    server = OpsServer(
        free_port(),
        ready=lambda: True,
        metrics=lambda: {"dealflow_log_position": 7.0},
        authenticate=services.tokens.authenticate,
    ).start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_probes_are_open_and_metrics_need_a_read_token(ops: str, services: Services) -> None:
    assert httpx.get(f"{ops}/healthz").status_code == 200
    assert httpx.get(f"{ops}/readyz").status_code == 200

    anonymous = httpx.get(f"{ops}/metrics")
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer ")
    assert anonymous.json()["error"] == "unauthorized"
    assert "dealflow_log_position" not in anonymous.text
    unknown = httpx.get(f"{ops}/metrics", headers=_bearer("df_nope"))
    assert unknown.status_code == 401 and "invalid_token" in unknown.headers["WWW-Authenticate"]

    ingest = services.tokens.create("ops-ingest", ["ingest"])
    narrow = httpx.get(f"{ops}/metrics", headers=_bearer(ingest))
    assert narrow.status_code == 403 and narrow.json()["error"] == "forbidden", narrow.text

    for token in (services.tokens.create("ops-read", ["read"]), TEST_TOKEN):
        scraped = httpx.get(f"{ops}/metrics", headers=_bearer(token))
        assert scraped.status_code == 200, scraped.text
        assert scraped.headers["content-type"].startswith("text/plain")
        assert "dealflow_log_position 7.0" in scraped.text


def test_metrics_while_the_token_cannot_be_checked(services: Services) -> None:
    def store_down(_: str) -> None:
        raise RuntimeError("store unreachable")

    server = OpsServer(free_port(), lambda: False, dict, authenticate=store_down).start()
    try:
        answer = httpx.get(f"http://127.0.0.1:{server.port}/metrics", headers=_bearer("x"))
        assert answer.status_code == 503 and answer.json()["error"] == "store_unavailable"
    finally:
        server.stop()


def test_it_listens_on_loopback_unless_told(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("DEALFLOW_METRICS_PORT", str(port))
    monkeypatch.delenv("DEALFLOW_METRICS_HOST", raising=False)
    assert Settings.load().metrics_host == "127.0.0.1"
    for host in (None, "0.0.0.0"):
        if host is not None:
            monkeypatch.setenv("DEALFLOW_METRICS_HOST", host)
        server = start_from_env(lambda: True, dict, services.tokens.authenticate)
        assert server is not None
        try:
            assert server._server.server_address[0] == (host or "127.0.0.1")
        finally:
            server.stop()


def test_a_silent_connection_is_let_go(services: Services) -> None:
    server = OpsServer(
        free_port(), lambda: True, dict, services.tokens.authenticate, timeout=0.5
    ).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            started = time.monotonic()
            assert sock.recv(1024) == b""  # closed by the server
            assert time.monotonic() - started < 2
        assert httpx.get(f"http://127.0.0.1:{server.port}/healthz").status_code == 200
    finally:
        server.stop()
