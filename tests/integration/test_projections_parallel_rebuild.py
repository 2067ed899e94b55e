"""The parallel rebuild (deal ranges folded in worker processes) equals the incremental read
models row for row, and the runner carries on from where it stopped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import projections.readmodel.rebuild as rebuild_module
from dealflow.bench.synthetic import BENCH_PIPELINE, BENCH_PIPELINE_ID, stream, to_command
from engine.application import DealflowApp
from engine.domain.pipeline import PipelineDefinition
from engine.persistence.settings import StoreSettings
from projections.readmodel.compare import comparable_rows
from projections.readmodel.schema import VIEW_TABLES
from projections.runtime import ProjectionsService


def _ingest(app: DealflowApp, pairs: list[tuple[str, dict[str, Any]]]) -> None:
    for start in range(0, len(pairs), 500):
        outcomes = app.ingest([to_command(d, b) for d, b in pairs[start : start + 500]])
        assert all(o.status == "recorded" for o in outcomes)


def test_parallel_rebuild_equals_the_incremental_read_models(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = DealflowApp(StoreSettings(database_url=pg_url, home=tmp_path / "home"))
    try:
        app.put_pipeline(
            BENCH_PIPELINE_ID, PipelineDefinition.model_validate(BENCH_PIPELINE), "test"
        )
        service = ProjectionsService(app, run=False)
        # Half a year back to half a year ahead of now: "now" has events after it.
        start = datetime.now(UTC) - timedelta(days=180)
        pairs = list(stream(400, seed=11, wave=60, start=start))
        _ingest(app, pairs[: len(pairs) * 2 // 3])
        service.runner.page = 97  # deals straddle many batches
        service.catch_up()
        _ingest(app, pairs[len(pairs) * 2 // 3 :])
        service.catch_up()
        incremental = comparable_rows(app)
        assert len(incremental["rm_deals"]) == 400

        monkeypatch.setattr(rebuild_module, "RANGE_EVENTS", 300)  # many ranges per worker
        stats = rebuild_module.parallel_rebuild(app, service.view, workers=2)
        assert stats.ranges > 4 and stats.deals == 400
        assert stats.events == sum(1 for _ in pairs)
        rebuilt = comparable_rows(app)
        for table in VIEW_TABLES:
            assert rebuilt[table] == incremental[table], table
        assert service.view.position() == app.max_position()

        # The runner carries on from the rebuilt position, as if nothing had happened.
        more = list(stream(60, seed=12, wave=30, start=start, prefix="more"))
        _ingest(app, more)
        service.catch_up()
        after = comparable_rows(app)
        service.view.reset()
        service.catch_up()
        assert comparable_rows(app) == after
        assert service.view.position() == app.max_position()
    finally:
        app.close()
