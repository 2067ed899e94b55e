"""The static part of each open deal's score, kept per deal version and basis, so that a
pipeline's open deals are ranked by score in one SQL statement (issue 10: the dashboard's
top-scored panel loaded and scored all 300,000 open deals of a pipeline at a million deals,
28.8 s).

A row is ``(deal_id, basis, deal_version, static_part, stage_entered_at, opened_at)`` (see
:mod:`engine.scoring.ranking`). It is a fact about one version of one deal under one basis, so
it never goes wrong, only out of date: a deal that moved on (``deal_version`` below the read
model's) or a new model or rules version (another ``basis``) makes it missing, and missing rows
are computed from the deal's events, by the query that needs them or ahead of it by
:func:`refresh` (the projection process runs it in the background). The table is not a read
model of the fold: a rebuild of the read models leaves it alone and it stays valid.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from engine.scoring.bulk import load_deals
from engine.scoring.ranking import (
    MODEL,
    RULES,
    Basis,
    TimeTerm,
    basis_for,
    calibration,
    static_part,
    time_terms,
)
from engine.scoring.service import latest_model
from projections.queries.common import ITEM_COLUMNS
from projections.readmodel.records import to_us
from projections.readmodel.schema import CURRENT_TABLE

TABLE = "rm_deal_scores"
CHUNK = 2_000  # deals loaded and written per transaction while filling
_created: set[int] = set()
_ITEMS = ", ".join(f"d.{name.strip()}" for name in ITEM_COLUMNS.split(","))

_DDL = (
    "CREATE TABLE IF NOT EXISTS {table} (deal_id TEXT PRIMARY KEY, pipeline_id TEXT NOT NULL,"
    " basis TEXT NOT NULL, deal_version INTEGER NOT NULL, static_part {real} NOT NULL,"
    " stage_entered_at BIGINT NOT NULL, opened_at BIGINT NOT NULL)"
)


def ensure_table(app: Any) -> None:
    if id(app.db) in _created:
        return
    real = "DOUBLE PRECISION" if app.db.is_postgres else "REAL"
    app.db.execute_script([_DDL.format(table=TABLE, real=real)])
    _created.add(id(app.db))


def _open_deals(pipeline_id: str, stage: str | None) -> tuple[str, list[Any]]:
    where, params = "d.pipeline_id = %s AND d.status = 'open'", [pipeline_id]
    if stage is not None:
        where += " AND d.stage = %s"
        params.append(stage)
    return where, params


# A row is current for a deal when it was computed from the read model's version or a later one
# (the event store may be ahead of the read model; the query always scored the latest state).
_JOIN = "s.deal_id = d.deal_id AND s.basis = %s AND s.deal_version >= d.version"


def missing(app: Any, pipeline_id: str, basis: Basis, *, limit: int | None = None) -> list[str]:
    """Open deals of the pipeline without a current row for ``basis``."""
    where, params = _open_deals(pipeline_id, None)
    rows = app.db.fetchall(
        f"SELECT d.deal_id FROM {CURRENT_TABLE} d LEFT JOIN {TABLE} s ON {_JOIN}"
        f" WHERE {where} AND s.deal_id IS NULL" + (f" LIMIT {int(limit)}" if limit else ""),
        [basis.key, *params],
    )
    return [row["deal_id"] for row in rows]


def fill(app: Any, pipeline_id: str, basis: Basis, deal_ids: list[str]) -> int:
    """Compute and store the rows of ``deal_ids`` (open deals); how many were written."""
    written = 0
    for chunk in _chunks(deal_ids, CHUNK):
        rows = [
            (
                deal_id,
                pipeline_id,
                basis.key,
                deal.version,
                static_part(basis, deal),
                to_us(deal.stage_entered_at),
                to_us(deal.opened_at),
            )
            for deal_id, deal in load_deals(app, chunk).items()
            if not deal.is_closed and deal.pipeline_id == pipeline_id
        ]
        if not rows:
            continue
        with app.db.transaction() as cur:
            cur.executemany(
                f"INSERT INTO {TABLE} (deal_id, pipeline_id, basis, deal_version, static_part,"
                " stage_entered_at, opened_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (deal_id) DO UPDATE SET pipeline_id = excluded.pipeline_id,"
                " basis = excluded.basis, deal_version = excluded.deal_version,"
                " static_part = excluded.static_part,"
                " stage_entered_at = excluded.stage_entered_at, opened_at = excluded.opened_at",
                rows,
            )
        written += len(rows)
    return written


def refresh(app: Any, pipeline_id: str, basis: Basis, *, limit: int | None = None) -> int:
    """Fill what is missing (at most ``limit`` deals); rows of closed deals and of other bases
    are left for :func:`prune`. Nothing to keep under ``none``: every score is null."""
    if basis.kind not in (MODEL, RULES):
        return 0
    ensure_table(app)
    return fill(app, pipeline_id, basis, missing(app, pipeline_id, basis, limit=limit))


def prune(app: Any, pipeline_id: str, basis: Basis) -> int:
    """Drop the pipeline's rows that no longer serve: another basis, or a deal no longer open."""
    ensure_table(app)
    with app.db.transaction() as cur:
        cur.execute(
            f"DELETE FROM {TABLE} WHERE pipeline_id = %s AND (basis <> %s OR NOT EXISTS"
            f" (SELECT 1 FROM {CURRENT_TABLE} d WHERE d.deal_id = {TABLE}.deal_id"
            " AND d.status = 'open'))",
            (pipeline_id, basis.key),
        )
        return cur.rowcount


def refresh_all(app: Any, *, limit: int | None = None) -> int:
    """One pass over every pipeline: prune, then fill what is missing under its current basis
    (the projection process's refresher; ``dealflow bench query`` after loading)."""
    from projections.readmodel.schema import PIPELINES_TABLE

    written = 0
    for row in app.db.fetchall(f"SELECT pipeline_id FROM {PIPELINES_TABLE} ORDER BY pipeline_id"):
        pipeline_id = row["pipeline_id"]
        ref = app.pipeline_ref(pipeline_id)
        basis = basis_for(ref.definition, ref.version, latest_model(app, pipeline_id))
        if basis.kind in (MODEL, RULES):
            prune(app, pipeline_id, basis)
        written += refresh(app, pipeline_id, basis, limit=limit)
    return written


def _score_sql(basis: Basis, at: int, postgres: bool) -> tuple[str, list[Any]]:
    """The score at ``at`` (microseconds) as a SQL expression over the row ``s``, computed as
    :func:`engine.scoring.service.score_deal` does: under rules the stored score; under a model
    the calibrated probability of the static part plus both time terms, times 100, rounded."""
    if basis.kind != MODEL:
        return "s.static_part", []
    least, greatest = ("LEAST", "GREATEST") if postgres else ("MIN", "MAX")
    parts, params = ["s.static_part"], []
    for term in time_terms(basis):
        parts.append(_time_term(term, least, greatest))
        params += [at, term.low, term.high, term.mean, term.coef, term.scale]
    a, b = calibration(basis)
    decision = " + ".join(parts)
    # exp() past +-709 is out of float range (PostgreSQL raises); the probability is 0 or 1 then.
    sql = f"round(100.0 / (1.0 + exp({greatest}({least}(%s * ({decision}) + %s, 700.0), -700.0))))"
    return sql, [a, *params, b]


def _time_term(term: TimeTerm, least: str, greatest: str) -> str:
    # features._days: round(max(seconds, 0) / 86400, 6); predict clips it to the training range.
    days = (
        f"round(CAST({greatest}(%s - s.{term.origin}, 0) AS DOUBLE PRECISION)"
        " / 86400000000.0 * 1000000.0) / 1000000.0"
    )
    return f"(({least}({greatest}({days}, %s), %s) - %s) * %s / %s)"


def ranked(
    app: Any,
    cur: Any,
    pipeline_id: str,
    basis: Basis,
    at: int,
    *,
    stage: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Any], int]:
    """A page of open deal rows (:data:`ITEM_COLUMNS` and ``score``) in score order (ties: deal id in code point order, as
    Python sorts) and how many open deals lack a current row (the page is only right at 0).

    One statement: the counts come with the rows (a window over the join), so the steady
    state reads the pipeline's open deals once. Past the last page there are no rows and so no
    counts, but then the page is empty whatever the rows hold."""
    where, params = _open_deals(pipeline_id, stage)
    binary = 'COLLATE "C"' if app.db.is_postgres else ""
    if basis.kind not in (MODEL, RULES):
        rows = cur.execute(
            f"SELECT {_ITEMS}, NULL AS score FROM {CURRENT_TABLE} d WHERE {where}"
            f" ORDER BY d.deal_id {binary} LIMIT %s OFFSET %s",
            [*params, limit, offset],
        ).fetchall()
        return rows, 0
    score, score_params = _score_sql(basis, at, app.db.is_postgres)
    rows = cur.execute(
        f"SELECT {_ITEMS}, {score} AS score,"
        " COUNT(*) OVER () - COUNT(s.deal_id) OVER () AS gaps"
        f" FROM {CURRENT_TABLE} d LEFT JOIN {TABLE} s ON {_JOIN}"
        f" WHERE {where} ORDER BY score DESC, d.deal_id {binary} LIMIT %s OFFSET %s",
        [*score_params, basis.key, *params, limit, offset],
    ).fetchall()
    return rows, int(rows[0]["gaps"]) if rows else 0


def count_open(cur: Any, pipeline_id: str, stage: str | None) -> int:
    where, params = _open_deals(pipeline_id, stage)
    found = cur.execute(f"SELECT COUNT(*) AS n FROM {CURRENT_TABLE} d WHERE {where}", params)
    return int(found.fetchone()["n"])


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
