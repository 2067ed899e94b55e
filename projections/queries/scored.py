"""``GET /v1/deals?sort=score``: a pipeline's open deals, highest score first (issue 12).

Scores need each deal's facts and activities, which the read models do not keep, so every open
deal of the pipeline is loaded from the store and scored with the pipeline's latest model (or
its point rules); the cursor is an offset into that order (ties: deal id).
"""

from __future__ import annotations

from typing import Any

from engine.domain.pipeline import PipelineDefinition
from engine.scoring.bulk import load_deals
from engine.scoring.service import latest_model, score_deal
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


def deals_by_score(
    app: Any,
    moment: Moment,
    *,
    pipeline_id: str,
    stage: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    resolved: tuple[int, PipelineDefinition] | None = None,
) -> dict[str, Any]:
    """``resolved`` is the :func:`definition_at` of the moment when the caller already has it."""
    offset = int(decode_cursor(cursor)[0]) if cursor else 0
    if offset < 0:
        raise ValueError("negative offset")
    _, definition = resolved or definition_at(app, pipeline_id, moment)
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
    model = latest_model(app, pipeline_id)
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
    return {
        "deals": [item for _, _, item in page],
        "next_cursor": encode_cursor(offset + limit) if offset + limit < len(scored) else None,
        "as_of": moment.iso,
        "position": position,
        "model": None if model is None else {"pipeline_id": pipeline_id, "version": model[0]},
    }
