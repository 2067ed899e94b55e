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
from engine.scoring.ranking import basis_for
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
# A query fills at most this many missing rows itself (the rest: the scan answers, and the
# projection process's refresher fills them in the background).
FILL_LIMIT = 20_000


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
    if basis.kind != "none":
        score_cache.ensure_table(app)
    for attempt in range(2):
        with snapshot(app, bounded=True) as cur:
            position = tracked_position(app, cur)
            # One row past the page tells whether there is a next one.
            page, gaps = score_cache.ranked(
                app, cur, pipeline_id, basis, moment.at, stage=stage, limit=limit + 1, offset=offset
            )
            if not gaps:
                break
        if attempt or gaps > FILL_LIMIT:
            return None  # a new model or a first start (the refresher is on it), or churn
        # Deals moved on, or never had a row: fill them in and rank again.
        missing = score_cache.missing(app, pipeline_id, basis, limit=FILL_LIMIT)
        score_cache.fill(app, pipeline_id, basis, missing)
    more = len(page) > limit
    page = page[:limit]
    ids = [row["deal_id"] for row in page]
    at = from_us(moment.at)
    deals = load_deals(app, ids)
    items = []
    for row in page:
        deal_id, expected = row["deal_id"], row["score"]
        deal = deals.get(deal_id)
        if deal is None:
            return None
        view = score_deal(deal, definition, at, model)
        if view["score"] != (None if expected is None else round(expected)):
            # Float rounding between SQL and Python put a deal on the other side of a whole
            # score (or the store moved on): the scan decides.
            log.warning("score of %s: %s in SQL, %s in Python", deal_id, expected, view["score"])
            return None
        item = {**deal_item(row, definition, moment.at), **view}
        item.pop("score_inputs", None)
        items.append(item)
    return _answer(items, more, offset, limit, moment, position, pipeline_id, model)


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
        view = score_deal(deal, definition, at, model)
        item = {**deal_item(row, definition, moment.at), **view}
        item.pop("score_inputs", None)
        scored.append((-1 if view["score"] is None else view["score"], row["deal_id"], item))
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
