"""The summary tables: what the metrics read on their fast paths, now and as of a moment."""

from __future__ import annotations

from typing import Any

from engine.domain.pipeline import PipelineDefinition
from projections.queries.common import (
    MS_PER_DAY,
    Moment,
    deal_source,
    limit_us,
    stale_sql,
)
from projections.queries.timeline import (
    open_entered_before,
    stats_at,
    visits_at,
    won_buckets_at,
)
from projections.readmodel.schema import (
    CURRENT_TABLE,
    HISTORY_TABLE,
    LASTING,
    PIPELINES_TABLE,
    STATS_COUNTERS,
    STATS_TABLE,
    STAYS_TABLE,
    VISITS_TABLE,
    WON_TABLE,
)
from projections.readmodel.timeline import DAY_US


def summary_applies(cur: Any, pipeline_id: str, moment: Moment) -> bool:
    """Whether the summary tables alone answer for ``moment``: a "now" question, and no event of
    the pipeline has a business time after it (stays and qualified leads are cut at the moment;
    the summaries hold every event, so those two are exact only when nothing lies beyond it;
    otherwise they come from the business-time buckets, see :func:`stays_and_qualified`)."""
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


def _limits(definition: PipelineDefinition, stats: dict[str, dict[str, int]]) -> dict[str, int]:
    """The stale threshold (microseconds) of every stage holding open deals that has one."""
    limits = {
        stage: limit_us(definition.stage(stage).max_days_in_stage)
        for stage, stat in stats.items()
        if stat["open_n"] and definition.has_stage(stage)
    }
    return {stage: limit for stage, limit in limits.items() if limit is not None}


def _stale_from_summary(
    cur: Any,
    pipeline_id: str,
    definition: PipelineDefinition,
    stats: dict[str, dict[str, int]],
    at: int,
) -> dict[str, int]:
    """Stale open deals per stage: every flagged one, plus, where the stage has a limit, every
    unflagged one in it since before ``at - limit`` (counted from the entered-day buckets, so
    the cost does not depend on how many deals entered long ago or after now)."""
    limited = _limits(definition, stats)
    entered = open_entered_before(
        cur, pipeline_id, {stage: at - limit for stage, limit in limited.items()}
    )
    return {
        stage: stat["open_flagged"] + entered.get(stage, 0)
        for stage, stat in stats.items()
        if stat["open_n"]
    }


def _stale_as_of(
    cur: Any,
    pipeline_id: str,
    definition: PipelineDefinition,
    stats: dict[str, dict[str, int]],
    at: int,
) -> dict[str, int]:
    """:func:`_stale_from_summary` as of ``at``: the open deals that entered their stage within
    its limit before ``at`` are history rows that began in that span (an index range)."""
    limited = _limits(definition, stats)
    recent: dict[str, int] = {}
    if limited:
        parts = " OR ".join(["(stage = %s AND stage_entered_at >= %s)"] * len(limited))
        params: list[Any] = [pipeline_id, at - max(limited.values()), at, at]
        for stage, lim in limited.items():
            params += [stage, at - lim]
        for row in cur.execute(
            f"SELECT stage, COUNT(*) AS n FROM {HISTORY_TABLE} WHERE pipeline_id = %s"
            " AND valid_from >= %s AND valid_from <= %s AND (valid_to IS NULL OR valid_to > %s)"
            f" AND status = 'open' AND flagged_stale = 0 AND {LASTING} AND ({parts}) GROUP BY stage",
            params,
        ).fetchall():
            recent[row["stage"]] = int(row["n"])
    return {
        stage: (stat["open_n"] - recent.get(stage, 0) if stage in limited else stat["open_flagged"])
        for stage, stat in stats.items()
        if stat["open_n"]
    }


def stage_totals(
    cur: Any,
    pipeline_id: str,
    definition: PipelineDefinition,
    moment: Moment,
    *,
    fast: bool = True,
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]] | None]:
    """Open deals per stage as :func:`open_by_stage` gives them, and the summary rows they came
    from (now: the summary tables; as of a time: the business-time buckets). ``fast=False``
    scans the rows instead (the oracle the fast paths are tested against) and returns None."""
    if fast:
        if moment.historical:
            stats = stats_at(cur, pipeline_id, moment.at)
            stale = _stale_as_of(cur, pipeline_id, definition, stats, moment.at)
        else:
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


def _median_from_buckets(
    cur: Any, pipeline_id: str, won: int, at: int | None = None
) -> float | None:
    """The median of the won deals' open-to-won durations: the bucket counts (whole days) say
    which bucket holds the middle; an index range over that bucket gives the exact values.
    With ``at``, of the deals won as of that moment (the buckets and rows valid then)."""
    if not won:
        return None
    if at is None:
        rows = [
            (int(r["bucket"]), int(r["n"]))
            for r in cur.execute(
                f"SELECT bucket, n FROM {WON_TABLE} WHERE pipeline_id = %s AND n > 0 ORDER BY bucket",
                (pipeline_id,),
            ).fetchall()
        ]
        table, valid, valid_params = CURRENT_TABLE, "", []
    else:
        rows = won_buckets_at(cur, pipeline_id, at)
        table = HISTORY_TABLE
        valid, valid_params = (
            " AND valid_from <= %s AND (valid_to IS NULL OR valid_to > %s)",
            [at, at],
        )

    return median_walk(cur, pipeline_id, rows, won, table, (valid, valid_params))


def median_walk(
    cur: Any,
    pipeline_id: str,
    rows: list[tuple[int, int]],
    won: int,
    table: str,
    where: tuple[str, list[Any]],
) -> float | None:
    """The median of ``won`` durations counted per whole-day bucket in ``rows`` (ascending):
    the counts say which bucket holds the middle; an index range over that bucket, restricted
    by ``where`` (the rows valid at a moment, or closed in a window), gives the exact values."""
    if not won:
        return None
    extra, extra_params = where

    def walk(bucket: int, n: int, first: int, count: int) -> list[int]:
        """The ``count`` durations from the ``first``-th (0-based) of the ``n`` in ``bucket``,
        walked from the nearer end of the bucket (an OFFSET costs one index entry per row it
        skips: at a million deals a day bucket holds ~10k won deals)."""
        lo = bucket * DAY_US
        same = _one_value(cur, table, pipeline_id, lo, lo + DAY_US)
        if same is not None:
            return [same] * count
        from_top = n - (first + count)  # rows after the wanted ones
        backwards = from_top < first
        found = cur.execute(
            f"SELECT closed_at - opened_at AS dur FROM {table}"
            " WHERE pipeline_id = %s AND status = 'won'"
            f" AND closed_at - opened_at >= %s AND closed_at - opened_at < %s{extra}"
            f" ORDER BY closed_at - opened_at{' DESC' if backwards else ''} LIMIT %s OFFSET %s",
            (pipeline_id, lo, lo + DAY_US, *extra_params, count, from_top if backwards else first),
        ).fetchall()
        values = [int(r["dur"]) for r in found]
        return values[::-1] if backwards else values

    # The middle rank (odd count) or the two middle ranks (even): both in one walk when they
    # share a bucket, else the last of one bucket and the first of the next.
    wanted = [(won - 1) // 2] if won % 2 else [(won - 1) // 2, won // 2]
    values: list[int] = []
    seen = 0
    for bucket, n in rows:
        inside = [rank - seen for rank in wanted if seen <= rank < seen + n]
        if inside:
            values += walk(bucket, n, inside[0], len(inside))
            wanted = wanted[len(inside) :]
            if not wanted:
                break
        seen += n
    middle = values[0] if won % 2 else (values[0] + values[1]) / 2
    return round(middle / 1000 / MS_PER_DAY, 6)


def _one_value(cur: Any, table: str, pipeline_id: str, lo: int, hi: int) -> int | None:
    """The days to close of every won row of ``table`` in ``[lo, hi)`` when they are all the
    same (two index probes, whatever the rows' validity or close time): then any subset of
    them, such as the rows valid at a moment or closed in a window, has that value at every
    rank, and the walk is not needed. Data with whole-day times (a CRM export's dates: every
    duration a whole number of days) is all such buckets, however many copies fill them."""
    dur = "closed_at - opened_at"
    row = cur.execute(
        f"SELECT MIN({dur}) AS lo, MAX({dur}) AS hi FROM {table}"
        f" WHERE pipeline_id = %s AND status = 'won' AND {dur} >= %s AND {dur} < %s",
        (pipeline_id, lo, hi),
    ).fetchone()
    if row is None or row["lo"] is None or row["lo"] != row["hi"]:
        return None
    return int(row["lo"])


def _qualified_from_summary(
    cur: Any, pipeline_id: str, definition: PipelineDefinition, at: int | None = None
) -> int:
    """Deals that ever visited a stage beyond ``qualified_after`` or were ever won (with ``at``:
    by that moment, from the business-time buckets)."""
    later = set(definition.stage_ids[definition.index(definition.qualified_stage) + 1 :])
    if at is None:
        visits = {
            (r["visited"], int(r["ever_won"])): int(r["n"])
            for r in cur.execute(
                f"SELECT visited, ever_won, n FROM {VISITS_TABLE} WHERE pipeline_id = %s AND n > 0",
                (pipeline_id,),
            ).fetchall()
        }
    else:
        visits = visits_at(cur, pipeline_id, at)
    return sum(
        n
        for (visited, ever_won), n in visits.items()
        if ever_won or later.intersection(filter(None, visited.split(",")))
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
