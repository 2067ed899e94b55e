"""Each deal's static score part, kept per pipeline and basis and followed along the event log,
so that a pipeline's open deals are ranked by score from an index (issue 10: the dashboard's
top-scored panel loaded and scored all 169,000 open deals of a pipeline at a million deals,
28.8 s; ranking them in one statement over a join still took 0.3-1.6 s).

A row is ``(pipeline_id, basis, deal_id, deal_version, is_open, stage, static_part,
stage_entered_at, opened_at)`` (see :mod:`engine.scoring.ranking`). A *mark* per pipeline and
basis is the log position the rows follow: every deal event up to it is reflected. Bringing
them up to date reads the events after the mark (a primary-key range of the log) and recomputes
the deals they touch, so the cost is that of what changed, not of the pipeline. The projection
process does it in the background (``DEALFLOW_SCORE_REFRESH``); a query does the rest.

A pipeline's first fill (and the first after a model is retrained: another basis) loads every
open deal, 38 s at a million deals; until it is done the query scores every deal instead. The
tables are not read models of the fold: a rebuild of the read models leaves them alone.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from engine.domain.deal_basics import deal_uuid
from engine.domain.errors import NotFound
from engine.domain.pipeline import PipelineDefinition, Scoring
from engine.scoring.bulk import load_states
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
from engine.scoring.service import MODEL as MODEL_DEFINITION
from engine.scoring.service import latest_model
from projections.queries.common import ITEM_COLUMNS, snapshot, tracked_position
from projections.readmodel.records import to_us
from projections.readmodel.schema import CURRENT_TABLE, PIPELINES_TABLE

TABLE = "rm_deal_scores"
MARKS = "rm_deal_score_marks"
CHUNK = 2_000  # deals loaded and written per transaction
# The databases whose tables exist (weakly held: an id() could be reused by a later database).
_created: weakref.WeakSet[Any] = weakref.WeakSet()
_ITEMS = ", ".join(f"d.{name.strip()}" for name in ITEM_COLUMNS.split(","))


def ensure_tables(app: Any) -> None:
    if app.db in _created:
        return
    pg = app.db.is_postgres
    real, binary = ("DOUBLE PRECISION", ' COLLATE "C"') if pg else ("REAL", "")
    app.db.execute_script(
        [
            f"CREATE TABLE IF NOT EXISTS {TABLE} (pipeline_id TEXT NOT NULL, basis TEXT NOT NULL,"
            f" deal_id TEXT{binary} NOT NULL, deal_version INTEGER NOT NULL,"
            " is_open SMALLINT NOT NULL, stage TEXT NOT NULL,"
            f" static_part {real} NOT NULL, stage_entered_at BIGINT NOT NULL,"
            " opened_at BIGINT NOT NULL, PRIMARY KEY (pipeline_id, basis, deal_id))",
            # The ranking walks this from the top: by static part, ties by deal id.
            f"CREATE INDEX IF NOT EXISTS {TABLE}_rank ON {TABLE}"
            " (pipeline_id, basis, is_open, static_part, deal_id)",
            f"CREATE TABLE IF NOT EXISTS {MARKS} (pipeline_id TEXT NOT NULL, basis TEXT NOT NULL,"
            " position BIGINT NOT NULL, PRIMARY KEY (pipeline_id, basis))",
        ]
    )
    _created.add(app.db)


def current_basis(app: Any, pipeline_id: str) -> Basis:
    ref = app.pipeline_ref(pipeline_id)
    return basis_for(ref.definition, ref.version, latest_model(app, pipeline_id))


def mark(app: Any, pipeline_id: str, basis: Basis) -> int | None:
    row = app.db.fetchone(
        f"SELECT position FROM {MARKS} WHERE pipeline_id = %s AND basis = %s",
        (pipeline_id, basis.key),
    )
    return None if row is None else int(row["position"])


def previous_bases(
    app: Any, pipeline_id: str, current: Basis
) -> list[tuple[Basis, PipelineDefinition]]:
    """The pipeline's other kept bases, newest mark first, each with the definition to score
    by: while a new model's rows are filled (38 s at a million deals), the last one ranks."""
    bases = []
    for key in _other_bases(app, pipeline_id, current):
        kind, _, number = key.partition(":")
        if kind == MODEL:
            version, body = app.read_definition(MODEL_DEFINITION, pipeline_id, int(number))
            definition = app.pipeline_ref(pipeline_id).definition
            bases.append((Basis(key, MODEL, current.scoring, (version, body)), definition))
        elif kind == RULES:
            definition = app.pipeline_ref(pipeline_id, int(number)).definition
            scoring = definition.scoring or Scoring()
            bases.append((Basis(key, RULES, scoring, None), definition))
    return bases


# -- keeping the rows ---------------------------------------------------------------------------


def first_fill(app: Any, pipeline_id: str, basis: Basis, *, limit: int | None = None) -> bool:
    """Rows for every deal open in the read models, marked at their position (deals opened or
    changed after it are picked up from the log). False, with nothing done, past ``limit``."""
    with snapshot(app) as cur:
        position = tracked_position(app, cur)
        rows = cur.execute(
            f"SELECT deal_uuid FROM {CURRENT_TABLE} WHERE pipeline_id = %s AND status = 'open'",
            (pipeline_id,),
        ).fetchall()
    if limit is not None and len(rows) > limit:
        return False
    ids = [_uuid(row["deal_uuid"]) for row in rows]
    for chunk in _chunks(ids, CHUNK):
        _write(app, pipeline_id, basis, load_states(app, chunk), None)
    _write(app, pipeline_id, basis, {}, position)
    if app.db.is_postgres and len(ids) > CHUNK:
        # Statistics now, not when autovacuum comes by: planned for an empty table, the
        # ranking's walks are not taken through the index.
        app.db.execute_script([f"ANALYZE {TABLE}"])
    return True


def catch_up(app: Any, pipeline_id: str, basis: Basis, *, limit: int | None = None) -> bool:
    """Follow the log from the mark to its head: the deals its events touch are recomputed.
    False when there is no mark yet, or more than ``limit`` events to read (nothing done)."""
    start = mark(app, pipeline_id, basis)
    if start is None:
        return False
    head = app.max_position()
    if limit is not None and head - start > limit:
        return False
    while start < head:
        page = app.recorder.select_notifications(start + 1, CHUNK, stop=head)
        if not page:
            break
        touched = {n.originator_id for n in page}
        start = page[-1].id
        _write(app, pipeline_id, basis, load_states(app, touched), start)
    if start < head:  # nothing (of ours or anyone's) after the last page: the head is reached
        _write(app, pipeline_id, basis, {}, head)
    return True


def _write(
    app: Any, pipeline_id: str, basis: Basis, deals: dict[UUID, Any], position: int | None
) -> None:
    """Upsert the rows of ``deals`` (this pipeline's; a closed deal stays as a closed row, so
    that a writer holding an older state can't bring it back) and raise the mark. One
    transaction: a mark is never seen before the rows it stands for."""
    rows = [
        (
            pipeline_id,
            basis.key,
            deal.deal_id,
            deal.version,
            int(not deal.is_closed),
            deal.stage,
            static_part(basis, deal) if not deal.is_closed else 0.0,
            to_us(deal.stage_entered_at),
            to_us(deal.opened_at),
        )
        for deal in deals.values()
        if deal.pipeline_id == pipeline_id
    ]
    with app.db.transaction() as cur:
        if rows:
            cur.executemany(
                f"INSERT INTO {TABLE} (pipeline_id, basis, deal_id, deal_version, is_open, stage,"
                " static_part, stage_entered_at, opened_at) VALUES (%s, %s, %s, %s, %s, %s, %s,"
                " %s, %s) ON CONFLICT (pipeline_id, basis, deal_id) DO UPDATE SET"
                " deal_version = excluded.deal_version, is_open = excluded.is_open,"
                " stage = excluded.stage, static_part = excluded.static_part,"
                " stage_entered_at = excluded.stage_entered_at, opened_at = excluded.opened_at"
                f" WHERE excluded.deal_version >= {TABLE}.deal_version",
                rows,
            )
        if position is not None:
            cur.execute(
                f"INSERT INTO {MARKS} (pipeline_id, basis, position) VALUES (%s, %s, %s)"
                " ON CONFLICT (pipeline_id, basis) DO UPDATE SET position = excluded.position"
                f" WHERE excluded.position > {MARKS}.position",
                (pipeline_id, basis.key, position),
            )


def refresh(app: Any, pipeline_id: str, basis: Basis) -> None:
    """Bring the pipeline's rows for ``basis`` up to the log's head, filling them first if
    there are none; then drop the rows and marks of any other basis."""
    if basis.kind not in (MODEL, RULES):
        return
    ensure_tables(app)
    if not catch_up(app, pipeline_id, basis):
        first_fill(app, pipeline_id, basis)
        catch_up(app, pipeline_id, basis)
    # Another basis's rows are found through its mark and deleted by their key's prefix once
    # this one is complete, so a pass with nothing to drop reads only the marks. (A first fill
    # cut short before its mark leaves rows no query reads: they are keyed by their basis.)
    others = _other_bases(app, pipeline_id, basis)
    if others:
        with app.db.transaction() as cur:
            for table in (TABLE, MARKS):
                cur.executemany(
                    f"DELETE FROM {table} WHERE pipeline_id = %s AND basis = %s",
                    [(pipeline_id, other) for other in others],
                )


def _other_bases(app: Any, pipeline_id: str, basis: Basis) -> list[str]:
    """The pipeline's other marked bases, newest mark first."""
    found = app.db.fetchall(
        f"SELECT basis FROM {MARKS} WHERE pipeline_id = %s AND basis <> %s ORDER BY position DESC",
        (pipeline_id, basis.key),
    )
    return [str(row["basis"]) for row in found]


def refresh_all(app: Any) -> int:
    """One pass over every pipeline (the projection process's refresher; the benches after
    loading); how many pipelines are scored."""
    pipelines = app.db.fetchall(f"SELECT pipeline_id FROM {PIPELINES_TABLE} ORDER BY pipeline_id")
    scored = 0
    for row in pipelines:
        try:
            basis = current_basis(app, row["pipeline_id"])
        except NotFound:
            continue  # deals of a pipeline whose definition is gone: nothing to score them by
        if basis.kind in (MODEL, RULES):
            refresh(app, row["pipeline_id"], basis)
            scored += 1
    return scored


# -- ranking ------------------------------------------------------------------------------------


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


def _floor(basis: Basis, page: list[Any]) -> tuple[str, float] | None:
    """Where the candidates end. Every deal ranked at or above the page's last place scores at
    least the lowest score among the first rows by static part; under a model that bounds the
    static part from below (the time terms move a decision by a bounded amount). None: no
    bound (every open deal is a candidate)."""
    if not page:
        return None
    lowest = min(float(row["score"]) for row in page)
    if basis.kind == RULES:
        return ">=", lowest
    a, b = calibration(basis)
    if lowest <= 0.5 or a == 0:
        return None
    # round(100 p) >= lowest  <=>  p >= (lowest - 0.5) / 100  <=>  a * d + b <= ln(1/p - 1).
    p = (lowest - 0.5) / 100
    bound = (math.log(1 / p - 1) - b) / a if p < 1 else None
    if bound is None:
        return None
    terms = time_terms(basis)
    low = sum(min(t.coef * (t.low - t.mean), t.coef * (t.high - t.mean)) / t.scale for t in terms)
    high = sum(max(t.coef * (t.low - t.mean), t.coef * (t.high - t.mean)) / t.scale for t in terms)
    slack = 1e-9 * (1 + abs(bound))
    # a < 0: the score grows with the decision d = static + time: static >= bound - high.
    if a < 0:
        return ">=", bound - high - slack
    return "<=", bound - low + slack


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
) -> list[Any]:
    """The rows ``(deal_id, score)`` at places ``offset`` to ``offset + limit`` of the open
    deals by score (ties: deal id, in code point order as Python sorts), from the rows as they
    are (bring them up to date first).

    Two index walks: the first ``offset + limit`` rows by static part give a score every deal
    on the page must reach, and that score a bound on the static part; the candidates within it
    are then ordered by their exact score. Under rules the score is the static part itself."""
    where = "s.pipeline_id = %s AND s.basis = %s AND s.is_open = 1"
    params: list[Any] = [pipeline_id, basis.key]
    if stage is not None:
        where += " AND s.stage = %s"
        params.append(stage)
    score, score_params = _score_sql(basis, at, app.db.is_postgres)
    a = calibration(basis)[0] if basis.kind == MODEL else -1.0
    direction = "DESC" if a < 0 else "ASC"  # the static part's order that raises the score
    top = cur.execute(
        f"SELECT {score} AS score FROM {TABLE} s WHERE {where}"
        f" ORDER BY s.static_part {direction} LIMIT %s",
        [*score_params, *params, offset + limit],
    ).fetchall()
    floor = _floor(basis, top)
    bounded, bound_params = "", []
    if floor is not None:
        bounded, bound_params = f" AND s.static_part {floor[0]} %s", [floor[1]]
    return list(
        cur.execute(
            f"SELECT s.deal_id, s.deal_version, {score} AS score FROM {TABLE} s WHERE {where}"
            f"{bounded} ORDER BY score DESC, s.deal_id LIMIT %s OFFSET %s",
            [*score_params, *params, *bound_params, limit, offset],
        ).fetchall()
    )


def item_rows(app: Any, cur: Any, deal_ids: list[str]) -> dict[str, Any]:
    """The read model's rows of these deals (by primary key)."""
    if not deal_ids:
        return {}
    keys = [deal_uuid(d) if app.db.is_postgres else deal_uuid(d).hex for d in deal_ids]
    found = cur.execute(
        f"SELECT {_ITEMS} FROM {CURRENT_TABLE} d WHERE d.deal_uuid IN"
        f" ({', '.join(['%s'] * len(keys))})",
        keys,
    )
    return {row["deal_id"]: row for row in found.fetchall()}


def by_deal_id(
    app: Any, cur: Any, pipeline_id: str, stage: str | None, limit: int, offset: int
) -> list[Any]:
    """Without scoring every score is null: the open deals in deal id order. The ids come from
    the board index alone (at 100 CRM copies, sorting 208,000 whole rows took 300 ms), then the
    page's rows by primary key."""
    where, params = "d.pipeline_id = %s AND d.status = 'open'", [pipeline_id]
    if stage is not None:
        where += " AND d.stage = %s"
        params.append(stage)
    binary = ' COLLATE "C"' if app.db.is_postgres else ""
    ids = [
        row["deal_id"]
        for row in cur.execute(
            f"SELECT d.deal_id FROM {CURRENT_TABLE} d WHERE {where}"
            f" ORDER BY d.deal_id{binary} LIMIT %s OFFSET %s",
            [*params, limit, offset],
        ).fetchall()
    ]
    rows = item_rows(app, cur, ids)
    return [rows[deal_id] for deal_id in ids if deal_id in rows]


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
