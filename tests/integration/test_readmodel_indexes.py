"""The read side's covering indexes (PostgreSQL): the statements whose cost grew with a million
deals (the median's walk inside a day bucket, the stale count as of a time) can be answered from
the index alone, and an index an earlier schema built is replaced without rebuilding the tables."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dealflow.bench.synthetic import BENCH_PIPELINE, BENCH_PIPELINE_ID, stream, to_command
from engine.application import DealflowApp
from engine.domain.pipeline import PipelineDefinition
from engine.persistence import db as db_module
from engine.persistence.settings import StoreSettings
from projections.queries.board import board
from projections.queries.common import Moment, snapshot
from projections.queries.metrics import metrics
from projections.readmodel.records import to_us
from projections.readmodel.schema import CURRENT_TABLE, HISTORY_TABLE, RETIRED_INDEXES
from projections.runtime import ProjectionsService


@pytest.fixture
def loaded(pg_url: str, tmp_path: Path) -> Iterator[tuple[DealflowApp, str]]:
    app = DealflowApp(StoreSettings(database_url=pg_url, home=tmp_path / "home"))
    try:
        app.put_pipeline(
            BENCH_PIPELINE_ID, PipelineDefinition.model_validate(BENCH_PIPELINE), "test"
        )
        start = datetime.now(UTC) - timedelta(days=200)
        pairs = list(stream(300, seed=3, wave=50, start=start))
        for first in range(0, len(pairs), 500):
            outcomes = app.ingest([to_command(d, b) for d, b in pairs[first : first + 500]])
            assert all(o.status == "recorded" for o in outcomes)
        ProjectionsService(app, run=False).catch_up()
        # What autovacuum does on a server: the visibility map index-only scans rely on.
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
        yield app, pg_url
    finally:
        app.close()


def _recorded(monkeypatch: pytest.MonkeyPatch, call: Callable[[], Any]) -> tuple[list[Any], Any]:
    """Every (sql, params) ``call`` runs, and what it returned."""
    seen: list[Any] = []
    original = db_module.Cursor.execute

    def recording(self: db_module.Cursor, sql: str, params: Any = ()) -> db_module.Cursor:
        seen.append((sql, tuple(params)))
        return original(self, sql, params)

    with monkeypatch.context() as patch:
        patch.setattr(db_module.Cursor, "execute", recording)
        answer = call()
    return seen, answer


def _statements(app: DealflowApp, moment: Moment, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every (sql, params) the fast metrics path runs for ``moment``."""
    return _recorded(monkeypatch, lambda: metrics(app, BENCH_PIPELINE_ID, moment))[0]


def _plan(url: str, table: str, index: str, sql: str, params: tuple[Any, ...]) -> str:
    """The plan of ``sql`` when ``index`` is the only index of ``table`` and PostgreSQL may not
    scan the table or bitmap-scan it (in a transaction rolled back afterwards): an index-only
    scan only if that index covers every column the statement reads."""
    with psycopg.connect(url) as conn:
        others = [
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexname <> %s",
                (table, index),
            ).fetchall()
        ]
        for name in others:
            if name.endswith("_pkey"):
                conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
            else:
                conn.execute(f"DROP INDEX {name}")
        conn.execute("SET LOCAL enable_seqscan = off")
        conn.execute("SET LOCAL enable_bitmapscan = off")
        plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN {sql}", params).fetchall())
        conn.rollback()
    return plan


def test_the_bucket_walks_read_the_index_alone(
    loaded: tuple[DealflowApp, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, url = loaded
    row = app.db.fetchone(
        "SELECT MIN(opened_at) AS lo, MAX(last_event_at) AS hi FROM rm_deals WHERE pipeline_id = %s",
        (BENCH_PIPELINE_ID,),
    )
    now = Moment(to_us(datetime.now(UTC)), historical=False)
    past = Moment((int(row["lo"]) + int(row["hi"])) // 2, historical=True)
    checked = set()
    for moment in (now, past):
        table = HISTORY_TABLE if moment.historical else CURRENT_TABLE
        for sql, params in _statements(app, moment, monkeypatch):
            walk = "AS dur FROM" in sql and "OFFSET" in sql  # the median's walk in its bucket
            probe = "MIN(closed_at - opened_at)" in sql  # its probe: one value in the bucket?
            if walk or probe:
                index = f"{table}_won_dur_cover"
            elif "flagged_stale = 0" in sql and f"FROM {HISTORY_TABLE} " in sql:  # stale as of
                index = f"{HISTORY_TABLE}_open_lasting"
            else:
                continue
            plan = _plan(url, table, index, sql, params)
            # (Backward: the median walks its bucket from the nearer end.)
            assert re.search(f"Index Only Scan (Backward )?using {index} ", plan), (sql, plan)
            checked.add((moment.historical, index))
    # Both medians (now, as of) and the stale count as of were found and checked.
    assert checked == {
        (False, f"{CURRENT_TABLE}_won_dur_cover"),
        (True, f"{HISTORY_TABLE}_won_dur_cover"),
        (True, f"{HISTORY_TABLE}_open_lasting"),
    }


def test_the_board_as_of_walks_the_partial_index_alone(
    loaded: tuple[DealflowApp, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The board's page as of a time repeats the partial index's condition (rows valid for
    some time), so PostgreSQL walks that index, index-only, to find the page's keys."""
    app, url = loaded
    row = app.db.fetchone(
        "SELECT MIN(opened_at) AS lo, MAX(last_event_at) AS hi FROM rm_deals WHERE pipeline_id = %s",
        (BENCH_PIPELINE_ID,),
    )
    past = Moment((int(row["lo"]) + int(row["hi"])) // 2, historical=True)
    seen, answer = _recorded(monkeypatch, lambda: board(app, BENCH_PIPELINE_ID, past, limit=5))
    assert any(column["deals"] for column in answer["columns"])
    pages = [(sql, params) for sql, params in seen if "JOIN (SELECT deal_uuid, version" in sql]
    assert pages
    index = f"{HISTORY_TABLE}_board_lasting"
    for sql, params in pages:
        plan = _plan(url, HISTORY_TABLE, index, sql, params)
        assert f"Index Only Scan using {index} " in plan, (sql, plan)


def test_a_retired_index_is_dropped_and_the_rows_are_kept(
    loaded: tuple[DealflowApp, str],
) -> None:
    app, url = loaded
    with psycopg.connect(url, autocommit=True) as conn:
        # The index the covering one replaced, as an earlier schema built it.
        conn.execute(
            f"CREATE INDEX {RETIRED_INDEXES[0]} ON {CURRENT_TABLE}"
            " (pipeline_id, (closed_at - opened_at)) WHERE status = 'won'"
        )
    before = app.db.fetchone(f"SELECT COUNT(*) AS n FROM {CURRENT_TABLE}")["n"]
    service = ProjectionsService(app, run=False)  # the views start again
    assert service.view.position() == app.max_position()  # nothing to rebuild
    assert app.db.fetchone(f"SELECT COUNT(*) AS n FROM {CURRENT_TABLE}")["n"] == before == 300
    names = {
        r["indexname"]
        for r in app.db.fetchall("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
    }
    assert not names.intersection(RETIRED_INDEXES)
    assert {f"{CURRENT_TABLE}_won_dur_cover", f"{HISTORY_TABLE}_won_dur_cover"} <= names


def test_a_bounded_snapshot_plans_serially_and_leaks_nothing(
    loaded: tuple[DealflowApp, str],
) -> None:
    app, url = loaded
    with psycopg.connect(url) as conn:
        defaults = [
            conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("max_parallel_workers_per_gather", "jit")
        ]
    assert defaults != ["0", "off"]  # otherwise this test shows nothing
    for _ in range(3):  # the pool hands the same connections back
        with snapshot(app, bounded=True) as cur:
            assert (
                cur.execute("SHOW max_parallel_workers_per_gather").fetchone()[
                    "max_parallel_workers_per_gather"
                ]
                == "0"
            )
            assert cur.execute("SHOW jit").fetchone()["jit"] == "off"
        with snapshot(app) as cur:  # the scans (the oracle) keep the pool's settings
            assert [
                cur.execute("SHOW max_parallel_workers_per_gather").fetchone()[
                    "max_parallel_workers_per_gather"
                ],
                cur.execute("SHOW jit").fetchone()["jit"],
            ] == [defaults[0], "off"]  # the pool's connections never JIT (pgfactory)
