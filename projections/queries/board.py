"""The board: a column per stage with count, value, weighted value and a page of its deals."""

from __future__ import annotations

from typing import Any

from projections.queries.card_steps import add_first_steps
from projections.queries.common import (
    ITEM_COLUMNS,
    Moment,
    answer_head,
    deal_item,
    deal_source,
    decode_cursor,
    definition_at,
    encode_cursor,
    money,
    snapshot,
    tracked_position,
    units_to_decimal,
    weighted,
)
from projections.queries.summary import stage_totals
from projections.readmodel.schema import HISTORY_TABLE, LASTING

# The card columns of a history row ``h`` (qualified: the page's keys are joined back by version).
_H_ITEM_COLUMNS = ", ".join(f"h.{c.strip()}" for c in ITEM_COLUMNS.split(","))


def board(
    app: Any,
    pipeline_id: str,
    moment: Moment,
    *,
    limit: int = 20,
    stage: str | None = None,
    cursor: str | None = None,
    fast: bool = True,
) -> dict[str, Any]:
    """Deals in a column are listed longest-in-stage first; ``stage`` + ``cursor`` page one column."""
    after = decode_cursor(cursor) if cursor else None
    version, definition = definition_at(app, pipeline_id, moment, fast=fast)
    with snapshot(app, bounded=fast) as cur:
        position = tracked_position(app, cur)
        source = deal_source(moment, pipeline_id)
        by_stage, _ = stage_totals(cur, pipeline_id, definition, moment, fast=fast)
        columns = []
        cards: list[dict[str, Any]] = []  # every column's deals, for their next steps
        for column in definition.stages:
            if stage is not None and column.id != stage:
                continue
            sql, params = source
            keyset, keyset_params = "", []
            if after is not None and stage is not None:
                keyset = (
                    " AND (d.stage_entered_at > %s OR (d.stage_entered_at = %s AND d.deal_id > %s))"
                )
                keyset_params = [after[0], after[0], after[1]]
            count = by_stage.get(column.id, {"n": 0})["n"]
            if fast and moment.historical and not count:
                rows = []  # nothing open in the column then: no walk over its history
            elif fast and moment.historical:
                # The page's keys from the covering index alone (the rows not valid at the
                # moment are skipped there), then only those rows from the table. A row that
                # entered the stage after the moment is not valid then (the walk ends there),
                # and a first page needs no more rows than the column holds (the walk ends at
                # its last card instead of reading the rest of the stage's history).
                need = limit + 1 if after is not None else min(limit + 1, count)
                rows = cur.execute(
                    f"SELECT {_H_ITEM_COLUMNS} FROM {HISTORY_TABLE} h JOIN (SELECT deal_uuid, version"
                    f" FROM {HISTORY_TABLE} d WHERE d.pipeline_id = %s AND d.status = 'open'"
                    f" AND d.stage = %s AND d.stage_entered_at <= %s AND {LASTING}"
                    f" AND d.valid_from <= %s AND (d.valid_to IS NULL OR d.valid_to > %s){keyset}"
                    " ORDER BY d.stage_entered_at, d.deal_id LIMIT %s) k"
                    " ON h.deal_uuid = k.deal_uuid AND h.version = k.version"
                    " ORDER BY h.stage_entered_at, h.deal_id",
                    [
                        pipeline_id,
                        column.id,
                        moment.at,
                        moment.at,
                        moment.at,
                        *keyset_params,
                        need,
                    ],
                ).fetchall()
            else:
                rows = cur.execute(
                    f"SELECT {ITEM_COLUMNS} FROM {sql} WHERE d.status = 'open' AND d.stage = %s{keyset}"
                    " ORDER BY d.stage_entered_at, d.deal_id LIMIT %s",
                    [*params, column.id, *keyset_params, limit + 1],
                ).fetchall()
            page = rows[:limit]
            items = [deal_item(r, definition, moment.at) for r in page]
            cards += items
            stats = by_stage.get(column.id, {"n": 0, "units": 0, "stale": 0})
            columns.append(
                {
                    "stage": column.id,
                    "name": column.name,
                    "probability": column.probability,
                    "max_days_in_stage": column.max_days_in_stage,
                    "count": stats["n"],
                    "value": money(units_to_decimal(stats["units"])),
                    "weighted_value": money(weighted(stats["units"], column.probability)),
                    "stale_count": stats["stale"],
                    "deals": items,
                    "next_cursor": encode_cursor(page[-1]["stage_entered_at"], page[-1]["deal_id"])
                    if len(rows) > limit
                    else None,
                }
            )
    # After the snapshot: the deals come from the event store (see add_first_steps).
    add_first_steps(app, definition, moment, cards)
    return {
        **answer_head(pipeline_id, version, definition, moment, position),
        "open_deals": sum(v["n"] for v in by_stage.values()),
        "open_value": money(
            sum((units_to_decimal(v["units"]) for v in by_stage.values()), units_to_decimal(0))
        ),
        "stale_deals": sum(v["stale"] for v in by_stage.values()),
        "columns": columns,
    }
