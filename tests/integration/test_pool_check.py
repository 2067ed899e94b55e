"""The pool's pre-ping (engine.persistence.pgfactory.check_idle_connection): a healthy idle
connection is handed out without a round trip; one whose backend was terminated (as by a
restart or a failover) is noticed and replaced before anyone uses it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine.application import DealflowApp
from engine.persistence.settings import StoreSettings


@pytest.fixture
def app(pg_url: str, tmp_path: Path) -> Iterator[DealflowApp]:
    application = DealflowApp(StoreSettings(database_url=pg_url, home=tmp_path / "home"))
    try:
        yield application
    finally:
        application.close()


@pytest.fixture
def full_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How often a connection was asked with an empty query (psycopg_pool's own check)."""
    asked: list[int] = []
    real = psycopg.Connection.execute

    def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if query == "":
            asked.append(1)
        return real(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", counted)
    return asked


def test_a_healthy_connection_is_handed_out_without_a_round_trip(
    app: DealflowApp, full_checks: list[int]
) -> None:
    for _ in range(20):
        assert app.db.fetchone("SELECT 1 AS one")["one"] == 1
    assert full_checks == []


def test_a_terminated_backend_is_replaced_before_it_is_used(
    app: DealflowApp, pg_url: str, full_checks: list[int]
) -> None:
    pid = app.db.fetchone("SELECT pg_backend_pid() AS pid")["pid"]
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    # The checkout that meets it notices the closed connection and takes another: no error,
    # whichever connection of the pool comes next.
    for _ in range(20):
        assert app.db.fetchone("SELECT pg_backend_pid() AS pid")["pid"] != pid
    assert full_checks  # the readable socket was asked, and found dead
