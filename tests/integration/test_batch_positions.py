"""The batch path's log positions on PostgreSQL: a batch draws one block of notification ids
under the table lock, so every recorded outcome's position is its event's row, the block is
contiguous in the order the events were decided, and the next write (batch or single) comes
after it. And the pool's connections run without JIT (it compiled a batch's deal read anew
every time)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dealflow.bench.synthetic import BENCH_PIPELINE, BENCH_PIPELINE_ID, stream, to_command
from engine.application import DealflowApp
from engine.domain.deal import deal_uuid
from engine.domain.pipeline import PipelineDefinition
from engine.persistence.recorders import COPY_THRESHOLD
from engine.persistence.settings import StoreSettings


@pytest.fixture
def app(pg_url: str, tmp_path: Path) -> Iterator[DealflowApp]:
    app = DealflowApp(StoreSettings(database_url=pg_url, home=tmp_path / "home"))
    app.put_pipeline(BENCH_PIPELINE_ID, PipelineDefinition.model_validate(BENCH_PIPELINE), "test")
    try:
        yield app
    finally:
        app.close()


def _rows(app: DealflowApp) -> dict[tuple[str, int], int]:
    rows = app.db.fetchall(
        f"SELECT originator_id, originator_version, notification_id FROM {app.db.events_table}"
    )
    return {(str(r["originator_id"]), r["originator_version"]): r["notification_id"] for r in rows}


def test_a_batch_draws_one_contiguous_block_and_the_next_write_follows(app: DealflowApp) -> None:
    pairs = list(stream(120, seed=5))
    first, rest = pairs[:400], pairs[400:]
    assert len(first) >= COPY_THRESHOLD  # the COPY path
    head = app.max_position()
    outcomes = app.ingest([to_command(d, b) for d, b in first])
    recorded = [o for o in outcomes if o.status == "recorded"]
    assert len(recorded) == len(first)
    rows = _rows(app)
    # Every position is its event's row...
    for outcome in recorded:
        key = (str(deal_uuid(outcome.deal_id)), outcome.version or 0)
        assert outcome.position == rows[key], outcome
    stored = sorted(rows.values())
    # ...and the batch's rows (its follow-ups included) are one block right after the head.
    block = [n for n in stored if n > head]
    assert block == list(range(head + 1, head + 1 + len(block)))
    assert app.max_position() == block[-1]
    # The next batch and a single event come after it, still without a gap.
    app.ingest([to_command(d, b) for d, b in rest[:200]])
    app.ingest([to_command(d, b) for d, b in rest[200:201]])
    after = sorted(n for n in _rows(app).values() if n > block[-1])
    assert after and after[0] == block[-1] + 1
    assert after == list(range(after[0], after[0] + len(after)))


def test_pooled_connections_run_without_jit(app: DealflowApp) -> None:
    assert app.db.fetchall("SHOW jit")[0]["jit"] == "off"
