"""``GET /v1/deals``: deals newest first (by opened_at, then deal_id), filtered, keyset-paged."""

from __future__ import annotations

from typing import Any

from engine.domain.pipeline import PipelineDefinition
from projections.queries.common import (
    ITEM_COLUMNS,
    Moment,
    deal_item,
    deal_source,
    decode_cursor,
    definition_at,
    encode_cursor,
    snapshot,
    stale_sql,
    tracked_position,
)
from projections.readmodel.schema import PIPELINES_TABLE


def list_deals(
    app: Any,
    moment: Moment,
    *,
    pipeline_id: str | None = None,
    stage: str | None = None,
    status: str | None = None,
    stale: bool | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    after = decode_cursor(cursor) if cursor else None
    # Definitions first, outside the snapshot (see definition_at).
    pipelines = (
        [pipeline_id]
        if pipeline_id is not None
        else [
            r["pipeline_id"] for r in app.db.fetchall(f"SELECT pipeline_id FROM {PIPELINES_TABLE}")
        ]
    )
    definitions: dict[str, PipelineDefinition] = {}
    for pid in pipelines:
        definitions[pid] = definition_at(app, pid, moment)[1]
    with snapshot(app) as cur:
        position = tracked_position(app, cur)
        sql, params = deal_source(moment, pipeline_id)
        where: list[str] = []
        where_params: list[Any] = []
        if stage is not None:
            where.append("d.stage = %s")
            where_params.append(stage)
        if status is not None:
            where.append("d.status = %s")
            where_params.append(status)
        if stale is not None:
            expression, stale_params = stale_sql(definitions, moment.at)
            where.append(expression if stale else f"NOT {expression}")
            where_params += stale_params
        if after is not None:
            where.append("(d.opened_at < %s OR (d.opened_at = %s AND d.deal_id < %s))")
            where_params += [after[0], after[0], after[1]]
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = cur.execute(
            f"SELECT {ITEM_COLUMNS} FROM {sql}{clause} ORDER BY d.opened_at DESC, d.deal_id DESC LIMIT %s",
            [*params, *where_params, limit + 1],
        ).fetchall()
    page = rows[:limit]
    return {
        "deals": [deal_item(r, definitions.get(r["pipeline_id"]), moment.at) for r in page],
        "next_cursor": encode_cursor(page[-1]["opened_at"], page[-1]["deal_id"])
        if len(rows) > limit
        else None,
        "as_of": moment.iso,
        "position": position,
    }
