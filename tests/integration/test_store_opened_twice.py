"""Two processes opening one new store at once (the projection runner and a `projections
status`): the one that loses the race to create the read-model tables still opens the store (CI
once saw the runner exit with `Failed to record tracking for __migration__ 1`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError, ProgrammingError
from eventsourcing.sqlite import SQLiteDatastore

from engine.application import DealflowApp
from engine.persistence.settings import StoreSettings
from projections.readmodel.views import DealsViewMixin, PostgresDealsView, SQLiteDealsView


def _second_looks_first(
    view: DealsViewMixin, missing: type[Exception], monkeypatch: pytest.MonkeyPatch
) -> list[int]:
    """Make ``view`` find no tracking table on its first look (``missing`` is what the store
    raises for that), as if it looked just before another process created it."""
    looks: list[int] = []
    real_look = view.max_tracking_id  # type: ignore[attr-defined]

    def look_before_the_other_creates(name: str) -> Any:
        looks.append(1)
        if len(looks) == 1:
            raise missing("no such table: tracking")
        return real_look(name)

    monkeypatch.setattr(view, "max_tracking_id", look_before_the_other_creates)
    return looks


def _opens_after_the_other(
    first: DealsViewMixin,
    second: DealsViewMixin,
    missing: type[Exception],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    looks = _second_looks_first(second, missing, monkeypatch)
    first.create_views()
    second.create_views()  # must open the store, not fail on the migration row
    assert len(looks) == 2
    assert second.max_tracking_id(second.table_migration_identifier) == 1  # type: ignore[attr-defined]


def test_sqlite_view_created_by_another_process_after_our_look_still_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "store.sqlite")
    first = SQLiteDealsView(SQLiteDatastore(path, single_row_tracking=True))
    second = SQLiteDealsView(SQLiteDatastore(path, single_row_tracking=True))
    _opens_after_the_other(first, second, OperationalError, monkeypatch)


def test_postgres_view_created_by_another_process_after_our_look_still_opens(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = DealflowApp(StoreSettings(database_url=pg_url, home=tmp_path / "home"))
    try:
        datastore = app.recorder.datastore  # type: ignore[attr-defined]
        _opens_after_the_other(
            PostgresDealsView(datastore),
            PostgresDealsView(datastore),
            ProgrammingError,
            monkeypatch,
        )
    finally:
        app.close()
