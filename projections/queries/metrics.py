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
    days,
    deal_source,
    definition_at,
    limit_us,
    money,
    ratio,
    snapshot,
    stale_sql,
    tracked_position,
    units_to_decimal,
    weighted,
)
from projections.readmodel.fold import BREAKDOWN_KEYS, DAY_US
from projections.readmodel.schema import (
    CURRENT_TABLE,
    KEYS_TABLE,
    PIPELINES_TABLE,
    STATS_COUNTERS,
    STATS_TABLE,
    STAYS_TABLE,
    VISITS_TABLE,
    WON_TABLE,
)

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


def open_by_stage(
    cur: Any, source: tuple[str, list[Any]], stale: tuple[str, list[Any]], at: int
) -> dict[str, dict[str, int]]:
    """Open deals per stage: count, value (micro-units), total age (microseconds, exact: the
    sum of opened_at is taken in two parts so that it cannot overflow) and stale count."""
    sql, params = source
    rows = cur.execute(
        f"SELECT d.stage AS stage, COUNT(*) AS n, COALESCE(SUM(d.amount_units), 0) AS units,"
        f" COALESCE(SUM(d.opened_at / 1000), 0) AS open_ms,"
        f" COALESCE(SUM(d.opened_at - d.opened_at / 1000 * 1000), 0) AS open_us,"
        f" SUM(CASE WHEN {stale[0]} THEN 1 ELSE 0 END) AS stale"
        f" FROM {sql} WHERE d.status = 'open' GROUP BY d.stage",
        [*stale[1], *params],
    ).fetchall()
    return {
        r["stage"]: {
            "n": int(r["n"]),
            "units": int(r["units"]),
            "age_us": _age_us(at, int(r["n"]), int(r["open_ms"]), int(r["open_us"])),
            "stale": int(r["stale"] or 0),
        }
        for r in rows
    }


def _age_us(at: int, n: int, open_ms: int, open_us: int) -> int:
    """Total age at ``at`` of ``n`` deals whose opened_at sum is ``1000 * open_ms + open_us``."""
    return n * at - (1000 * open_ms + open_us)


# -- the summary tables (the "now" path) --------------------------------------------------------


def summary_applies(cur: Any, pipeline_id: str, moment: Moment) -> bool:
    """Whether the summary tables answer for ``moment``: a "now" question, and no event of the
    pipeline has a business time after it (the figures cut stays and closes at the moment;
    the summaries hold every event, so they are exact only when nothing lies beyond it)."""
    if moment.historical:
        return False
    row = cur.execute(
        f"SELECT last_event_at FROM {PIPELINES_TABLE} WHERE pipeline_id = %s", (pipeline_id,)
    ).fetchone()
    return row is None or int(row["last_event_at"]) <= moment.at


def _stats(cur: Any, pipeline_id: str) -> dict[str, dict[str, int]]:
    rows = cur.execute(
        f"SELECT stage, {', '.join(STATS_COUNTERS)} FROM {STATS_TABLE} WHERE pipeline_id = %s",
        (pipeline_id,),
    ).fetchall()
    return {r["stage"]: {c: int(r[c]) for c in STATS_COUNTERS} for r in rows}


def _stale_from_summary(
    cur: Any,
    pipeline_id: str,
    definition: PipelineDefinition,
    stats: dict[str, dict[str, int]],
    at: int,
) -> dict[str, int]:
    """Stale open deals per stage: every flagged one, plus, where the stage has a limit, every
    one in it since before ``at - limit``. Counted as the open deals minus the unflagged ones
    that entered recently (an index range over the few recent ones, not the many old ones)."""
    stale: dict[str, int] = {}
    for stage, stat in stats.items():
        if not stat["open_n"]:
            continue
        limit = (
            limit_us(definition.stage(stage).max_days_in_stage)
            if definition.has_stage(stage)
            else None
        )
        if limit is None:
            stale[stage] = stat["open_flagged"]
            continue
        row = cur.execute(
            f"SELECT COUNT(*) AS n FROM {CURRENT_TABLE} WHERE pipeline_id = %s AND status = 'open'"
            " AND stage = %s AND stage_entered_at >= %s AND flagged_stale = 0",
            (pipeline_id, stage, at - limit),
        ).fetchone()
        stale[stage] = stat["open_n"] - int(row["n"])
    return stale


def stage_totals(
    cur: Any, pipeline_id: str, definition: PipelineDefinition, moment: Moment
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]] | None]:
    """Open deals per stage as :func:`open_by_stage` gives them, and the summary rows when the
    summary tables answer for ``moment`` (None when the rows had to be scanned)."""
    if summary_applies(cur, pipeline_id, moment):
        stats = _stats(cur, pipeline_id)
        stale = _stale_from_summary(cur, pipeline_id, definition, stats, moment.at)
        by_stage = {
            stage: {
                "n": s["open_n"],
                "units": s["open_units"],
                "age_us": _age_us(moment.at, s["open_n"], s["open_ms"], s["open_us"]),
                "stale": stale[stage],
            }
            for stage, s in stats.items()
            if s["open_n"]
        }
        return by_stage, stats
    source = deal_source(moment, pipeline_id)
    stale_ = stale_sql({pipeline_id: definition}, moment.at)
    return open_by_stage(cur, source, stale_, moment.at), None


def _median_from_buckets(cur: Any, pipeline_id: str, won: int) -> float | None:
    """The median of all won deals' open-to-won durations: the bucket counts (whole days) say
    which bucket holds the middle; an index range over that bucket gives the exact values."""
    if not won:
        return None
    rows = cur.execute(
        f"SELECT bucket, n FROM {WON_TABLE} WHERE pipeline_id = %s AND n > 0 ORDER BY bucket",
        (pipeline_id,),
    ).fetchall()
    wanted = [(won - 1) // 2] if won % 2 else [(won - 1) // 2, won // 2]
    values: list[int] = []
    for rank in wanted:
        seen = 0
        for r in rows:
            if rank < seen + int(r["n"]):
                lo = int(r["bucket"]) * DAY_US
                found = cur.execute(
                    f"SELECT closed_at - opened_at AS dur FROM {CURRENT_TABLE}"
                    " WHERE pipeline_id = %s AND status = 'won'"
                    " AND closed_at - opened_at >= %s AND closed_at - opened_at < %s"
                    " ORDER BY closed_at - opened_at LIMIT 1 OFFSET %s",
                    (pipeline_id, lo, lo + DAY_US, rank - seen),
                ).fetchone()
                values.append(int(found["dur"]))
                break
            seen += int(r["n"])
    middle = values[0] if won % 2 else (values[0] + values[1]) / 2
    return round(middle / 1000 / MS_PER_DAY, 6)


def _qualified_from_summary(cur: Any, pipeline_id: str, definition: PipelineDefinition) -> int:
    """Deals that ever visited a stage beyond ``qualified_after`` or were ever won."""
    later = set(definition.stage_ids[definition.index(definition.qualified_stage) + 1 :])
    rows = cur.execute(
        f"SELECT visited, ever_won, n FROM {VISITS_TABLE} WHERE pipeline_id = %s AND n > 0",
        (pipeline_id,),
    ).fetchall()
    return sum(
        int(r["n"])
        for r in rows
        if int(r["ever_won"]) or later.intersection(filter(None, r["visited"].split(",")))
    )


def _median_won_ms(
    cur: Any, source: tuple[str, list[Any]], window: tuple[str, list[Any]], won: int
) -> float | None:
    if not won:
        return None
    sql, params = source
    rows = cur.execute(
        f"SELECT d.closed_at - d.opened_at AS dur FROM {sql} WHERE d.status = 'won' AND {window[0]}"
        " ORDER BY dur LIMIT 2 OFFSET %s",
        [*params, *window[1], (won - 1) // 2],
    ).fetchall()
    values = [int(r["dur"]) for r in rows]
    middle = values[0] if won % 2 else (values[0] + values[1]) / 2
    return round(middle / 1000 / MS_PER_DAY, 6)


def _stays(cur: Any, pipeline_id: str, at: int) -> dict[str, dict[str, int]]:
    rows = cur.execute(
        "SELECT s.stage AS stage,"
        " SUM(CASE WHEN s.left_at IS NOT NULL AND s.left_at <= %s THEN 1 ELSE 0 END) AS completed,"
        " SUM(CASE WHEN s.left_at IS NOT NULL AND s.left_at <= %s THEN (s.left_at - s.entered_at) / 1000 ELSE 0 END)"
        " AS stay_ms,"
        " SUM(s.first_in_stage) AS entered,"
        " SUM(CASE WHEN s.first_advance = 1 AND s.left_at <= %s THEN 1 ELSE 0 END) AS advanced"
        f" FROM {STAYS_TABLE} s WHERE s.pipeline_id = %s AND s.entered_at <= %s GROUP BY s.stage",
        (at, at, at, pipeline_id, at),
    ).fetchall()
    return {
        r["stage"]: {k: int(r[k] or 0) for k in ("completed", "stay_ms", "entered", "advanced")}
        for r in rows
    }


def _qualified(cur: Any, pipeline_id: str, definition: PipelineDefinition, at: int) -> int:
    """Deals that have been beyond the ``qualified_after`` stage (left it forward, skipped past
    it, or were opened after it) or were won, by ``at``."""
    later = definition.stage_ids[definition.index(definition.qualified_stage) + 1 :]
    parts = ["(s.exit = 'won' AND s.left_at <= %s)"]
    params: list[Any] = [pipeline_id, at]
    if later:
        parts.append(
            f"(s.first_in_stage = 1 AND s.entered_at <= %s AND s.stage IN ({','.join(['%s'] * len(later))}))"
        )
        params += [at, *later]
    row = cur.execute(
        f"SELECT COUNT(DISTINCT s.deal_uuid) AS n FROM {STAYS_TABLE} s WHERE s.pipeline_id = %s AND ({' OR '.join(parts)})",
        params,
    ).fetchone()
    return int(row["n"])


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
) -> dict[str, Any]:
    windowed = closed_from is not None or closed_to is not None
    with snapshot(app) as cur:
        version, definition = definition_at(app, pipeline_id, moment, cur)
        position = tracked_position(app, cur)
        source = deal_source(moment, pipeline_id)
        by_stage, summary = stage_totals(cur, pipeline_id, definition, moment)
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
            median = _median_from_buckets(cur, pipeline_id, won)
        else:
            if summary is not None:
                # Only the deals closed in the window: an index range, not the whole pipeline.
                sql, params = f"{CURRENT_TABLE} d", []
                window = (f"d.pipeline_id = %s AND {window[0]}", [pipeline_id, *window[1]])
            closed = {
                r["status"]: r
                for r in cur.execute(
                    f"SELECT d.status AS status, COUNT(*) AS n, COALESCE(SUM(d.amount_units), 0) AS units,"
                    f" COALESCE(SUM((d.closed_at - d.opened_at) / 1000), 0) AS dur_ms"
                    f" FROM {sql} WHERE d.status IN ('won', 'lost') AND {window[0]} GROUP BY d.status",
                    [*params, *window[1]],
                ).fetchall()
            }
            won = int(closed["won"]["n"]) if "won" in closed else 0
            lost = int(closed["lost"]["n"]) if "lost" in closed else 0
            median = _median_won_ms(cur, (sql, params), window, won)
        unqualified = _unqualified_open(cur, source)
        if summary is not None:
            opened = sum(s["deals"] for s in summary.values())
            stays = {
                stage: {k: s[k] for k in ("completed", "stay_ms", "entered", "advanced")}
                for stage, s in summary.items()
            }
            qualified = _qualified_from_summary(cur, pipeline_id, definition)
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
        "pipeline_id": pipeline_id,
        "pipeline_version": version,
        "currency": definition.currency,
        "as_of": moment.iso,
        "position": position,
        "closed_from": _iso(closed_from),
        "closed_to": _iso(closed_to),
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
) -> dict[str, Any]:
    if by not in BREAKDOWN_KEYS:
        raise ValueError(by)
    window, window_params = _window(closed_from, closed_to)
    won_w = f"d.status = 'won' AND {window}"
    lost_w = f"d.status = 'lost' AND {window}"
    with snapshot(app) as cur:
        version, _ = definition_at(app, pipeline_id, moment, cur)  # 404 for an unknown pipeline
        position = tracked_position(app, cur)
        if closed_from is None and closed_to is None and summary_applies(cur, pipeline_id, moment):
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
        "closed_from": _iso(closed_from),
        "closed_to": _iso(closed_to),
        "rows": items,
    }


def ratio_days(total_us: int, count: int) -> float | None:
    """Mean days of ``count`` durations summing to ``total_us`` microseconds."""
    return None if not count else round(total_us / count / (MS_PER_DAY * 1000), 6)


def _iso(value: int | None) -> str | None:
    from projections.readmodel.records import iso_us

    return iso_us(value)
