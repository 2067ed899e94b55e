"""The runner: exactly-once under crashes and competing runners, the live paths (subscription on
PostgreSQL, polling on SQLite) equal a rebuild, and rebuilds are identical to live read models."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from engine.application import DealflowApp
from engine.domain.pipeline import PipelineDefinition
from engine.persistence.settings import StoreSettings
from projections.readmodel.schema import CURRENT_TABLE, HISTORY_TABLE, PIPELINES_TABLE, STAYS_TABLE
from projections.runtime import ProjectionsService
from projections.synthetic import BENCH_PIPELINE, BENCH_PIPELINE_ID, stream, to_command

TABLES = {
    CURRENT_TABLE: "deal_uuid",
    HISTORY_TABLE: "deal_uuid, version",
    STAYS_TABLE: "deal_uuid, seq",
    PIPELINES_TABLE: "pipeline_id",
}


def dump(app: DealflowApp) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every read-model table, in key order, as plain tuples."""
    return {
        table: [
            tuple(str(v) for v in tuple(row))
            if not isinstance(row, dict)
            else tuple(str(v) for v in row.values())
            for row in app.db.fetchall(f"SELECT * FROM {table} ORDER BY {order}")
        ]
        for table, order in TABLES.items()
    }


@pytest.fixture
def app(store_settings: StoreSettings) -> Iterator[DealflowApp]:
    application = DealflowApp(store_settings)
    application.put_pipeline(
        BENCH_PIPELINE_ID, PipelineDefinition.model_validate(BENCH_PIPELINE), "test"
    )
    try:
        yield application
    finally:
        application.close()


def ingest(app: DealflowApp, deals: int, seed: int, prefix: str, chunk: int = 300) -> int:
    pairs = list(stream(deals, seed=seed, wave=25, prefix=prefix))
    for start in range(0, len(pairs), chunk):
        outcomes = app.ingest([to_command(d, b) for d, b in pairs[start : start + chunk]])
        assert all(o.status == "recorded" for o in outcomes)
    return len(pairs)


def test_live_runner_equals_a_rebuild(app: DealflowApp) -> None:
    """Events arrive while the runner follows the log (the subscription on PostgreSQL, polling on
    SQLite), in small batches of whatever arrived; a rebuild in big pages gives the same rows."""
    service = ProjectionsService(app, run=True)
    service.start()
    try:
        ingest(app, 60, seed=5, prefix="live", chunk=37)
        assert service.wait(app.max_position(), timeout=30)
        assert service.status()[0]["lag"] == 0
    finally:
        service.stop()
    live = dump(app)
    assert len(live[CURRENT_TABLE]) == 60
    service.rebuild()
    assert dump(app) == live


def test_a_crash_mid_batch_and_a_restart_count_nothing_twice(
    app: DealflowApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(app, 50, seed=9, prefix="crash")
    reference = ProjectionsService(app, run=False)
    reference.catch_up()
    expected = dump(app)
    reference.view.reset()

    service = ProjectionsService(app, run=False)
    service.runner.page = 100
    view_class = type(service.view)
    original = view_class._write
    calls = {"n": 0}

    def crashing_write(self: Any, curs: Any, changes: Any) -> None:
        calls["n"] += 1
        original(self, curs, changes)  # the rows are written... then the process "dies"
        if calls["n"] == 3:
            raise RuntimeError("killed mid-batch")

    monkeypatch.setattr(view_class, "_write", crashing_write)
    with pytest.raises(RuntimeError):
        service.catch_up()
    assert service.position() > 0  # two batches committed, the third rolled back
    monkeypatch.setattr(view_class, "_write", original)
    restarted = ProjectionsService(app, run=False)
    restarted.catch_up()
    assert dump(app) == expected


def test_competing_runners_apply_each_batch_once(app: DealflowApp) -> None:
    ingest(app, 50, seed=11, prefix="race")
    reference = ProjectionsService(app, run=False)
    reference.catch_up()
    expected = dump(app)
    reference.view.reset()
    runners = [ProjectionsService(app, run=False) for _ in range(3)]
    for service in runners:
        service.runner.page = 64
    errors: list[BaseException] = []

    def work(service: ProjectionsService) -> None:
        try:
            service.catch_up()
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=work, args=(s,)) for s in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # SQLite may refuse a competing writer outright ("database is locked"); nothing half-done stays.
    runners[0].catch_up()
    assert dump(app) == expected
    assert all("locked" in str(e) for e in errors), errors


def test_rebuild_by_name_and_status(app: DealflowApp) -> None:
    ingest(app, 10, seed=1, prefix="named")
    service = ProjectionsService(app, run=False)
    assert service.status()[0]["lag"] == app.max_position()
    service.catch_up()
    before = dump(app)
    service.rebuild("deals")
    assert dump(app) == before
    assert service.status()[0]["lag"] == 0
    assert service.wait(app.max_position(), timeout=0.1)
    assert not service.wait(app.max_position() + 1, timeout=0.1)
