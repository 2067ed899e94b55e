"""The contract's metrics and breakdown, computed in plain SQL over the read models.

The same statements answer "now" (current rows) and "as of" (history rows): only the deal
source differs (:func:`deal_source`), and stage stays are always cut at the moment asked, so an
``as_of`` answer equals what the live read model said at that moment.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.domain.pipeline import PipelineDefinition
from projections.queries.common import (
    MS_PER_DAY,
    Moment,
    answer_head,
    days,
    deal_source,
    definition_at,
    money,
    ratio,
    snapshot,
    tracked_position,
    units_to_decimal,
    weighted,
)
from projections.queries.summary import (
    _median_from_buckets,
    _median_won_ms,
    _qualified,
    _qualified_from_summary,
    _stays,
    stage_totals,
    summary_applies,
)
from projections.queries.timeline import (
    keys_at,
    stats_at,
)
from projections.queries.window import closed_in_window
from projections.readmodel.fold import BREAKDOWN_KEYS, TIMELINE_KEYS
from projections.readmodel.records import iso_us
from projections.readmodel.schema import KEYS_TABLE

__all__ = ["BREAKDOWN_KEYS", "breakdown", "metrics", "stage_totals"]


def _window(closed_from: int | None, closed_to: int | None) -> tuple[str, list[Any]]:
    """Closed deals count when closed in [closed_from, closed_to)."""
    parts, params = [], []
    if closed_from is not None:
        parts.append("d.closed_at >= %s")
        params.append(closed_from)
    if closed_to is not None:
        parts.append("d.closed_at < %s")
        params.append(closed_to)
    return (" AND ".join(parts) or "1 = 1"), params


# -- the summary tables (the "now" path) --------------------------------------------------------


def shape(definition: PipelineDefinition, value_by_stage: dict[str, Decimal]) -> dict[str, Any]:
    """Where the open value sits: the earlier half of the stages against the later half (a
    middle stage of an odd count belongs to neither)."""
    ids = definition.stage_ids
    half = len(ids) // 2
    early = sum((value_by_stage.get(s, Decimal(0)) for s in ids[:half]), Decimal(0))
    late = sum((value_by_stage.get(s, Decimal(0)) for s in ids[len(ids) - half :]), Decimal(0))
    total = sum(value_by_stage.values(), Decimal(0))
    early_share = ratio(float(early), float(total))
    late_share = ratio(float(late), float(total))
    if early_share is None or late_share is None:
        label = None
    elif early_share - late_share > 0.2:
        label = "top-heavy"
    elif late_share - early_share > 0.2:
        label = "bottom-heavy"
    else:
        label = "balanced"
    return {
        "label": label,
        "early_stages": ids[:half],
        "late_stages": ids[len(ids) - half :],
        "early_value": money(early),
        "late_value": money(late),
        "early_share": early_share,
        "late_share": late_share,
    }


def metrics(
    app: Any,
    pipeline_id: str,
    moment: Moment,
    *,
    closed_from: int | None = None,
    closed_to: int | None = None,
    target: Decimal | None = None,
    fast: bool = True,
) -> dict[str, Any]:
    """The contract's pipeline metrics. ``fast=False`` computes them by scanning the rows (the
    original implementation, kept as the oracle the summary paths are tested against)."""
    windowed = closed_from is not None or closed_to is not None
    version, definition = definition_at(app, pipeline_id, moment, fast=fast)
    # A closed window as of a time still filters the history rows valid then (not bounded).
    bounded = fast and not (windowed and moment.historical)
    with snapshot(app, bounded=bounded) as cur:
        position = tracked_position(app, cur)
        source = deal_source(moment, pipeline_id)
        by_stage, summary = stage_totals(cur, pipeline_id, definition, moment, fast=fast)
        window = _window(closed_from, closed_to)
        sql, params = source
        if summary is not None and not windowed:
            won = sum(s["won_n"] for s in summary.values())
            lost = sum(s["lost_n"] for s in summary.values())
            closed = {
                "won": {
                    "n": won,
                    "units": sum(s["won_units"] for s in summary.values()),
                    "dur_ms": sum(s["won_ms"] for s in summary.values()),
                }
            }
            at = moment.at if moment.historical else None
            median = _median_from_buckets(cur, pipeline_id, won, at)
        elif summary is not None and not moment.historical:
            # The window's whole days from the closed-day sums, its edge days from the rows.
            closed, median = closed_in_window(cur, pipeline_id, closed_from, closed_to)
            won = closed["won"]["n"] if "won" in closed else 0
            lost = closed["lost"]["n"] if "lost" in closed else 0
        else:
            wsql, wparams = sql, params
            closed = {
                r["status"]: r
                for r in cur.execute(
                    f"SELECT d.status AS status, COUNT(*) AS n, COALESCE(SUM(d.amount_units), 0) AS units,"
                    f" COALESCE(SUM((d.closed_at - d.opened_at) / 1000), 0) AS dur_ms"
                    f" FROM {wsql} WHERE d.status IN ('won', 'lost') AND {window[0]} GROUP BY d.status",
                    [*wparams, *window[1]],
                ).fetchall()
            }
            won = int(closed["won"]["n"]) if "won" in closed else 0
            lost = int(closed["lost"]["n"]) if "lost" in closed else 0
            median = _median_won_ms(cur, (wsql, wparams), window, won)
        unqualified = _unqualified_open(cur, source)
        if summary is not None:
            opened = sum(s["deals"] for s in summary.values())
            # Stays and qualified leads count only what happened by the moment: as of a time the
            # summary already is the business-time sum; "now" needs that sum only when some
            # event lies after now.
            cut = moment.historical or not summary_applies(cur, pipeline_id, moment)
            counted = summary
            if cut and not moment.historical:
                counted = stats_at(cur, pipeline_id, moment.at, states=False)
            stays = {
                stage: {k: s[k] for k in ("completed", "stay_ms", "entered", "advanced")}
                for stage, s in counted.items()
            }
            qualified = _qualified_from_summary(
                cur, pipeline_id, definition, moment.at if cut else None
            )
        else:
            opened = int(cur.execute(f"SELECT COUNT(*) AS n FROM {sql}", params).fetchone()["n"])
            stays = _stays(cur, pipeline_id, moment.at)
            qualified = _qualified(cur, pipeline_id, definition, moment.at)

    value_by_stage = {s: units_to_decimal(v["units"]) for s, v in by_stage.items()}
    stages = []
    weighted_total = Decimal(0)
    for stage in definition.stages:
        open_ = by_stage.get(stage.id, {"n": 0, "units": 0, "stale": 0})
        stay = stays.get(stage.id, {"completed": 0, "stay_ms": 0, "entered": 0, "advanced": 0})
        stage_weighted = weighted(open_["units"], stage.probability)
        weighted_total += stage_weighted
        stages.append(
            {
                "stage": stage.id,
                "name": stage.name,
                "probability": stage.probability,
                "open_deals": open_["n"],
                "open_value": money(units_to_decimal(open_["units"])),
                "weighted_value": money(stage_weighted),
                "avg_days_in_stage": days(stay["stay_ms"], stay["completed"]),
                "entered": stay["entered"],
                "advanced": stay["advanced"],
                "conversion_rate": ratio(stay["advanced"], stay["entered"]),
                "stale_deals": open_["stale"],
            }
        )
    open_deals = sum(v["n"] for v in by_stage.values())
    open_value = sum(value_by_stage.values(), Decimal(0))
    won_value = units_to_decimal(closed["won"]["units"]) if won else Decimal(0)
    result: dict[str, Any] = {
        **answer_head(pipeline_id, version, definition, moment, position),
        "closed_from": iso_us(closed_from),
        "closed_to": iso_us(closed_to),
        "open_deals": open_deals,
        "open_value": money(open_value),
        "weighted_value": money(weighted_total),
        "qualified_leads": qualified,
        # Open deals failing the pipeline's qualification rule (also within open_deals).
        "unqualified_deals": unqualified[0],
        "unqualified_value": money(units_to_decimal(unqualified[1])),
        "opened_deals": opened,
        "won": won,
        "lost": lost,
        "won_value": money(won_value),
        "win_rate": ratio(won, won + lost),
        "conversion_rate": ratio(won, opened),
        "avg_days_to_close_won": days(closed["won"]["dur_ms"], won) if won else None,
        "median_days_to_close_won": median,
        "avg_open_deal_age_days": ratio_days(
            sum(v["age_us"] for v in by_stage.values()), open_deals
        ),
        "stale_deals": sum(v["stale"] for v in by_stage.values()),
        "stages": stages,
        "shape": shape(definition, value_by_stage),
    }
    if target is not None:
        remaining = target - won_value
        result["target"] = money(target)
        result["remaining_target"] = money(remaining)
        result["coverage_ratio"] = (
            round(float(open_value / remaining), 6) if remaining > 0 else None
        )
    return result


def _unqualified_open(cur: Any, source: tuple[str, list[Any]]) -> tuple[int, int]:
    """Open deals failing qualification: how many, and their value in micro-units."""
    sql, params = source
    row = cur.execute(
        f"SELECT COUNT(*) AS n, COALESCE(SUM(d.amount_units), 0) AS units FROM {sql}"
        " WHERE d.status = 'open' AND d.unqualified = 1",
        params,
    ).fetchone()
    return int(row["n"]), int(row["units"])


def breakdown(
    app: Any,
    pipeline_id: str,
    by: str,
    moment: Moment,
    *,
    closed_from: int | None = None,
    closed_to: int | None = None,
    fast: bool = True,
) -> dict[str, Any]:
    if by not in BREAKDOWN_KEYS:
        raise ValueError(by)
    window, window_params = _window(closed_from, closed_to)
    won_w = f"d.status = 'won' AND {window}"
    lost_w = f"d.status = 'lost' AND {window}"
    version, _ = definition_at(app, pipeline_id, moment, fast=fast)  # 404 for an unknown pipeline
    unwindowed = closed_from is None and closed_to is None
    # The summary rows (now) or the business-time buckets (as of) answer; otherwise a scan.
    bounded = fast and unwindowed and (not moment.historical or by in TIMELINE_KEYS)
    with snapshot(app, bounded=bounded) as cur:
        position = tracked_position(app, cur)
        if fast and unwindowed and moment.historical and by in TIMELINE_KEYS:
            rows = [
                {
                    "key": None if r["key_null"] else r["key"],
                    "deals": r["deals"],
                    "open_deals": r["open_n"],
                    "won": r["won_n"],
                    "lost": r["lost_n"],
                    "won_units": r["won_units"],
                    "won_ms": r["won_ms"],
                }
                for r in keys_at(cur, pipeline_id, by, moment.at)
            ]
        elif fast and unwindowed and not moment.historical:
            rows = [
                {**r, "key": None if r["key_null"] else r["key"]}
                for r in cur.execute(
                    "SELECT key_null, key, deals, open_n AS open_deals, won_n AS won,"
                    " lost_n AS lost, won_units, won_ms"
                    f" FROM {KEYS_TABLE} WHERE pipeline_id = %s AND dim = %s AND deals > 0",
                    (pipeline_id, by),
                ).fetchall()
            ]
        else:
            sql, params = deal_source(moment, pipeline_id)
            rows = cur.execute(
                f"SELECT d.{by} AS key, COUNT(*) AS deals,"
                " SUM(CASE WHEN d.status = 'open' THEN 1 ELSE 0 END) AS open_deals,"
                f" SUM(CASE WHEN {won_w} THEN 1 ELSE 0 END) AS won,"
                f" SUM(CASE WHEN {lost_w} THEN 1 ELSE 0 END) AS lost,"
                f" COALESCE(SUM(CASE WHEN {won_w} THEN d.amount_units ELSE 0 END), 0) AS won_units,"
                f" COALESCE(SUM(CASE WHEN {won_w} THEN (d.closed_at - d.opened_at) / 1000 ELSE 0 END), 0) AS won_ms"
                f" FROM {sql} GROUP BY d.{by}",
                [*window_params, *window_params, *window_params, *window_params, *params],
            ).fetchall()
    items = []
    for r in rows:
        won, lost = int(r["won"] or 0), int(r["lost"] or 0)
        items.append(
            {
                "key": r["key"],
                "deals": int(r["deals"]),
                "open_deals": int(r["open_deals"] or 0),
                "won": won,
                "lost": lost,
                "win_rate": ratio(won, won + lost),
                "won_value": money(units_to_decimal(r["won_units"])),
                "avg_days_to_close_won": days(r["won_ms"], won),
            }
        )
    items.sort(key=lambda i: (-i["deals"], i["key"] is None, i["key"] or ""))
    return {
        "pipeline_id": pipeline_id,
        "pipeline_version": version,
        "by": by,
        "as_of": moment.iso,
        "position": position,
        "closed_from": iso_us(closed_from),
        "closed_to": iso_us(closed_to),
        "rows": items,
    }


def ratio_days(total_us: int, count: int) -> float | None:
    """Mean days of ``count`` durations summing to ``total_us`` microseconds."""
    return None if not count else round(total_us / count / (MS_PER_DAY * 1000), 6)
