"""The pipeline review (issue 12): what moved and closed since the last review, what is stuck
(stale, or near its stage's limit) by owner, the new deals, the forecast against the target and
the top-scored open deals. Every figure is read as of ``until`` (now, or a past moment).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from engine.domain.events import iso
from engine.domain.pipeline import PipelineDefinition, Review
from projections.queries.common import (
    ITEM_COLUMNS,
    Moment,
    deal_item,
    deal_source,
    definition_at,
    limit_us,
    snapshot,
    tracked_position,
)
from projections.queries.forecast import forecast
from projections.queries.scored import deals_by_score
from projections.readmodel.records import from_us, to_us
from projections.readmodel.schema import STAYS_TABLE
from projections.readmodel.timeline import DAY_US

MAX_LISTED = 50  # per list; counts are always complete
# A deal item's columns and its uuid (the stays name deals by uuid).
COLUMNS = f"deal_uuid, {ITEM_COLUMNS}"


def settings(definition: PipelineDefinition) -> Review:
    return definition.review or Review()


def _month(moment: datetime, ahead: int = 0) -> str:
    index = moment.year * 12 + moment.month - 1 + ahead
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def review(
    app: Any,
    pipeline_id: str,
    since: datetime,
    until: datetime,
    *,
    historical: bool = True,
    target: Decimal | None = None,
) -> dict[str, Any]:
    """The digest for [since, until). ``target`` (per month) overrides the pipeline's."""
    if since >= until:
        raise ValueError("since must be before the review's moment")
    moment = Moment(to_us(until), historical=historical)
    start, at = to_us(since), moment.at
    resolved = definition_at(app, pipeline_id, moment)  # read once, shared with the parts below
    version, definition = resolved
    with snapshot(app) as cur:
        position = tracked_position(app, cur)
        sql, params = deal_source(moment, pipeline_id)
        rows = cur.execute(
            f"SELECT {COLUMNS} FROM {sql} WHERE d.opened_at < %s"
            " AND (d.status = 'open' OR d.closed_at >= %s OR d.opened_at >= %s)",
            [*params, at, start, start],
        ).fetchall()
        moves = cur.execute(
            f"SELECT s.deal_uuid AS deal_uuid, s.stage AS from_stage, n.stage AS to_stage,"
            f" s.left_at AS left_at FROM {STAYS_TABLE} s"
            f" JOIN {STAYS_TABLE} n ON n.deal_uuid = s.deal_uuid AND n.seq = s.seq + 1"
            " WHERE s.pipeline_id = %s AND s.exit = 'forward' AND s.left_at >= %s AND s.left_at < %s",
            [pipeline_id, start, at],
        ).fetchall()
    config = settings(definition)
    by_id = {row["deal_id"]: row for row in rows}
    by_uuid = {str(row["deal_uuid"]): row["deal_id"] for row in rows}
    items = {deal_id: deal_item(row, definition, at) for deal_id, row in by_id.items()}

    moved = sorted(
        (
            {
                **_brief(items[by_uuid[str(m["deal_uuid"])]]),
                "from_stage": m["from_stage"],
                "to_stage": m["to_stage"],
                "moved_at": iso_of(m["left_at"]),
            }
            for m in moves
            if str(m["deal_uuid"]) in by_uuid
        ),
        key=lambda entry: (entry["moved_at"], entry["deal_id"]),
    )
    closed = sorted(
        (
            i
            for i in items.values()
            if i["status"] != "open" and start <= by_id[i["deal_id"]]["closed_at"] < at
        ),
        key=lambda i: (i["closed_at"], i["deal_id"]),
    )
    new = sorted(
        (i for i in items.values() if by_id[i["deal_id"]]["opened_at"] >= start),
        key=lambda i: (i["opened_at"], i["deal_id"]),
    )
    stuck = _stuck(definition, by_id, items, at, config.near_limit_days)
    goal = target if target is not None else config.monthly_target
    outlook = forecast(
        app,
        pipeline_id,
        moment,
        first=_month(until),
        last=_month(until, 2),
        target=goal,
        resolved=resolved,
    )
    top = deals_by_score(app, moment, pipeline_id=pipeline_id, limit=config.top, resolved=resolved)
    return {
        "pipeline_id": pipeline_id,
        "pipeline_version": version,
        "pipeline_name": definition.name,
        "currency": definition.currency,
        "since": iso(since),
        "until": iso(until),
        "position": position,
        "moved_forward": {"count": len(moved), "deals": moved[:MAX_LISTED]},
        "closed": {
            "won": sum(1 for i in closed if i["status"] == "won"),
            "lost": sum(1 for i in closed if i["status"] == "lost"),
            "won_value": _sum(i["amount"] for i in closed if i["status"] == "won"),
            "deals": [
                {**_brief(i), "status": i["status"], "closed_at": i["closed_at"]}
                for i in closed[:MAX_LISTED]
            ],
        },
        "new_deals": {
            "count": len(new),
            "value": _sum(i["amount"] for i in new),
            "deals": [_brief(i) for i in new[:MAX_LISTED]],
        },
        "stuck": stuck,
        "forecast": {
            "from": outlook["from"],
            "to": outlook["to"],
            "months": [
                {
                    "month": m["month"],
                    "closed_won": m["closed_won"]["value"],
                    "commit": m["commit"]["value"],
                    "best_case": m["best_case"]["value"],
                    "pipeline": m["pipeline"]["value"],
                    "target": m["target"],
                    "gap": m["gap"],
                }
                for m in outlook["months"]
            ],
        },
        "top_scored": {
            "model": top["model"],
            "deals": [
                {
                    **_brief(d),
                    "score": d["score"],
                    "score_kind": d["score_kind"],
                    "score_reasons": d["score_reasons"][:3],
                }
                for d in top["deals"]
            ],
        },
    }


def _stuck(
    definition: PipelineDefinition,
    rows: dict[str, Any],
    items: dict[str, dict[str, Any]],
    at: int,
    near_days: float,
) -> dict[str, Any]:
    """Open deals that are stale, or within ``near_days`` of their stage's limit, by owner."""
    near_us = round(near_days * DAY_US)
    found: list[dict[str, Any]] = []
    for deal_id, item in items.items():
        if item["status"] != "open" or not definition.has_stage(item["stage"]):
            continue
        limit = limit_us(definition.stage(item["stage"]).max_days_in_stage)
        left = None if limit is None else rows[deal_id]["stage_entered_at"] + limit - at
        if item["stale"] or (left is not None and left <= near_us):
            found.append(
                {
                    **_brief(item),
                    "stage": item["stage"],
                    "days_in_stage": item["days_in_stage"],
                    "days_left": None if left is None else round(left / DAY_US, 6),
                    "stale": item["stale"],
                }
            )
    by_owner: dict[str, list[dict[str, Any]]] = {}
    for entry in sorted(
        found, key=lambda e: (e["days_left"] is not None, e["days_left"] or 0, e["deal_id"])
    ):
        by_owner.setdefault(entry["owner"] or "(no owner)", []).append(entry)
    return {
        "count": len(found),
        "stale": sum(1 for e in found if e["stale"]),
        "near_limit": sum(1 for e in found if not e["stale"]),
        "by_owner": [
            {"owner": owner, "count": len(entries), "deals": entries[:MAX_LISTED]}
            for owner, entries in sorted(by_owner.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        ],
    }


def _brief(item: dict[str, Any]) -> dict[str, Any]:
    return {key: item[key] for key in ("deal_id", "name", "owner", "amount", "stage")}


def _sum(amounts: Any) -> str:
    total = sum((Decimal(a) for a in amounts if a is not None), Decimal(0))
    return f"{total:.2f}"


def iso_of(us: int) -> str:
    return iso(from_us(us))
