"""``GET /v1/deals?sort=score``: a pipeline's open deals, highest score first (issue 12).

Now: the open deals are ranked in SQL from each deal's static score part
(:mod:`projections.queries.score_cache`, filled on demand and ahead of time by the projection
process) and the clock's part computed in the statement; only the page's deals are loaded and
scored in Python, for their reasons, and their scores must equal the statement's, else the
answer falls back to the scan. As of a past time, and as the oracle (``fast=False``): every
open deal of the pipeline is loaded from the store and scored with the pipeline's latest model
(or its point rules). The cursor is an offset into that order (ties: deal id).
"""

from __future__ import annotations

import logging
from typing import Any

from engine.domain.pipeline import PipelineDefinition
from engine.scoring.bulk import load_deals
from engine.scoring.ranking import MODEL, RULES, Basis, basis_for
from engine.scoring.service import latest_model, score_deal
from projections.queries import score_cache
from projections.queries.common import (
    ITEM_COLUMNS,
    Moment,
    deal_item,
    deal_source,
    decode_cursor,
    definition_at,
    encode_cursor,
    snapshot,
    tracked_position,
)
from projections.readmodel.records import from_us

log = logging.getLogger("dealflow.scoring")
# What a query does itself to bring the kept score parts up to date: read this many events
# after their mark, or fill a pipeline without any (a first start, a new model) of this many
# open deals. Beyond either the projection process's refresher is behind: every deal is scored.
QUERY_CATCH_UP = 20_000
QUERY_FIRST_FILL = 20_000


def deals_by_score(
    app: Any,
    moment: Moment,
    *,
    pipeline_id: str,
    stage: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    resolved: tuple[int, PipelineDefinition] | None = None,
    fast: bool = True,
) -> dict[str, Any]:
    """``resolved`` is the :func:`definition_at` of the moment when the caller already has it."""
    offset = int(decode_cursor(cursor)[0]) if cursor else 0
    if offset < 0:
        raise ValueError("negative offset")
    version, definition = resolved or definition_at(app, pipeline_id, moment)
    model = latest_model(app, pipeline_id)
    if fast and not moment.historical:
        found = _ranked(app, moment, pipeline_id, stage, limit, offset, definition, version, model)
        if found is not None:
            return found
    return _scan(app, moment, pipeline_id, stage, limit, offset, definition, model)


def _answer(
    deals: list[dict[str, Any]],
    more: bool,
    offset: int,
    limit: int,
    moment: Moment,
    position: int,
    pipeline_id: str,
    model: tuple[int, dict[str, Any]] | None,
) -> dict[str, Any]:
    return {
        "deals": deals,
        "next_cursor": encode_cursor(offset + limit) if more else None,
        "as_of": moment.iso,
        "position": position,
        "model": None if model is None else {"pipeline_id": pipeline_id, "version": model[0]},
    }


def _ranked(
    app: Any,
    moment: Moment,
    pipeline_id: str,
    stage: str | None,
    limit: int,
    offset: int,
    definition: PipelineDefinition,
    version: int,
    model: tuple[int, dict[str, Any]] | None,
) -> dict[str, Any] | None:
    """The fast answer, or None when it can't be given exactly (the scan answers then)."""
    basis = basis_for(definition, version, model)
    kept = basis.kind in (MODEL, RULES)
    if kept and not _up_to_date(app, pipeline_id, basis):
        # A new model (or rules version) whose rows are still being filled: the last basis
        # that has them ranks, and the answer names the model it used. Else: the scan.
        for previous, previous_definition in score_cache.previous_bases(app, pipeline_id, basis):
            if score_cache.catch_up(app, pipeline_id, previous, limit=QUERY_CATCH_UP):
                basis, definition, model = previous, previous_definition, previous.model
                break
        else:
            return None
    with snapshot(app, bounded=True) as cur:
        position = tracked_position(app, cur)
        # One row past the page tells whether there is a next one.
        if kept:
            page = score_cache.ranked(
                app, cur, pipeline_id, basis, moment.at, stage=stage, limit=limit + 1, offset=offset
            )
            rows = score_cache.item_rows(app, cur, [row["deal_id"] for row in page[:limit]])
        else:
            page = score_cache.by_deal_id(app, cur, pipeline_id, stage, limit + 1, offset)
            rows = {row["deal_id"]: row for row in page}
    more = len(page) > limit
    page = page[:limit]
    deals = load_deals(app, [row["deal_id"] for row in page])
    items = []
    for ranked_row in page:
        deal_id = ranked_row["deal_id"]
        expected = ranked_row["score"] if kept else None
        row, deal = rows.get(deal_id), deals.get(deal_id)
        if row is None:
            continue  # not in the read models yet (the log is ahead of them): not listed
        if deal is None:
            return None
        item = _item(row, deal, definition, moment, model)
        if item["score"] != (None if expected is None else round(expected)):
            # Float rounding between SQL and Python put a deal on the other side of a whole
            # score (or the store moved on): the scan decides.
            log.warning("score of %s: %s in SQL, %s in Python", deal_id, expected, item["score"])
            return None
        items.append(item)
    return _answer(items, more, offset, limit, moment, position, pipeline_id, model)


def _item(
    row: Any,
    deal: Any,
    definition: PipelineDefinition,
    moment: Moment,
    model: tuple[int, dict[str, Any]] | None,
) -> dict[str, Any]:
    """One listed deal: its read-model row with its score (the inputs are the deal's own)."""
    view = score_deal(deal, definition, from_us(moment.at), model)
    view.pop("score_inputs", None)
    return {**deal_item(row, definition, moment.at), **view}


def _up_to_date(app: Any, pipeline_id: str, basis: Basis) -> bool:
    """Bring the pipeline's kept score parts to the log's head, if that is a small job."""
    score_cache.ensure_tables(app)
    if score_cache.catch_up(app, pipeline_id, basis, limit=QUERY_CATCH_UP):
        return True
    if score_cache.mark(app, pipeline_id, basis) is not None:
        return False  # far behind: the refresher is on it
    if not score_cache.first_fill(app, pipeline_id, basis, limit=QUERY_FIRST_FILL):
        return False
    return score_cache.catch_up(app, pipeline_id, basis, limit=QUERY_CATCH_UP)


def _scan(
    app: Any,
    moment: Moment,
    pipeline_id: str,
    stage: str | None,
    limit: int,
    offset: int,
    definition: PipelineDefinition,
    model: tuple[int, dict[str, Any]] | None,
) -> dict[str, Any]:
    """Load and score every open deal (as of a time: as it stood then)."""
    with snapshot(app) as cur:
        position = tracked_position(app, cur)
        sql, params = deal_source(moment, pipeline_id)
        where, where_params = "d.status = 'open'", []
        if stage is not None:
            where += " AND d.stage = %s"
            where_params.append(stage)
        rows = cur.execute(
            f"SELECT {ITEM_COLUMNS} FROM {sql} WHERE {where}", [*params, *where_params]
        ).fetchall()
    at = from_us(moment.at)
    scored: list[tuple[int, str, dict[str, Any]]] = []
    deals = load_deals(app, [row["deal_id"] for row in rows], at if moment.historical else None)
    for row in rows:
        deal = deals.get(row["deal_id"])
        if deal is None:
            continue
        item = _item(row, deal, definition, moment, model)
        scored.append((-1 if item["score"] is None else item["score"], row["deal_id"], item))
    scored.sort(key=lambda entry: (-entry[0], entry[1]))
    page = scored[offset : offset + limit]
    return _answer(
        [item for _, _, item in page],
        offset + limit < len(scored),
        offset,
        limit,
        moment,
        position,
        pipeline_id,
        model,
    )
