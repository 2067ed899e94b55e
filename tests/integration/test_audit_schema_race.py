"""The audit checkpoint tables created by several callers at once on a new PostgreSQL store (the
checkpoint thread and an audit request): every one of them gets the tables, none an error
(``CREATE TABLE IF NOT EXISTS`` run concurrently collides in the catalog)."""

from __future__ import annotations

import threading
from pathlib import Path

from engine.application import DealflowApp
from engine.audit.checkpoints import ensure_schema, latest_checkpoint
from engine.persistence.settings import StoreSettings


def test_callers_creating_the_checkpoint_tables_at_once_all_succeed(
    pg_url: str, tmp_path: Path
) -> None:
    app = DealflowApp(StoreSettings(database_url=pg_url, home=tmp_path / "home"))
    try:
        callers = 8
        start = threading.Barrier(callers)
        errors: list[BaseException] = []

        def create() -> None:
            start.wait(10)
            try:
                ensure_schema(app.db)
            except BaseException as error:  # noqa: BLE001 - collected for the assertion
                errors.append(error)

        threads = [threading.Thread(target=create) for _ in range(callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        assert latest_checkpoint(app) is None  # the tables are there, and empty
    finally:
        app.close()
