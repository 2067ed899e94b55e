"""The summary counters at any moment: whole days from the business-time buckets, the moment's
own day from the rows of that day (see ``projections.readmodel.timeline``).

Each function returns what the matching summary table would hold if only the events up to
``at`` (inclusive) had happened: the figures an "as of" answer needs, read without touching more
than one day of history rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from projections.readmodel.schema import (
    CURRENT_TABLE,
    HISTORY_TABLE,
    KEYS_COUNTERS,
    OPEN_ENTERED_TABLE,
    STATS_COUNTERS,
    STAYS_TABLE,
    T_KEYS_TABLE,
    T_STATS_TABLE,
    T_VISITS_TABLE,
    T_WON_TABLE,
)
from projections.readmodel.timeline import DAY_US, day_of, prefix_sql

STATE_COUNTERS = STATS_COUNTERS[:10]  # what a deal's state contributes (the rest are stays)
STAY_COUNTERS = STATS_COUNTERS[10:]

_OPEN, _WON, _LOST = "d.status = 'open'", "d.status = 'won'", "d.status = 'lost'"
# SQL over a history row ``d`` for each state counter: what the row contributes (fold.py's
# ``_contribution`` and ``_add``, in SQL; integer division truncates as ``_trunc_ms`` does).
_STATE_SQL = {
    "deals": "1",
    "open_n": f"CASE WHEN {_OPEN} THEN 1 ELSE 0 END",
    "open_units": f"CASE WHEN {_OPEN} THEN COALESCE(d.amount_units, 0) ELSE 0 END",
    "open_ms": f"CASE WHEN {_OPEN} THEN d.opened_at / 1000 ELSE 0 END",
    "open_us": f"CASE WHEN {_OPEN} THEN d.opened_at - d.opened_at / 1000 * 1000 ELSE 0 END",
    "open_flagged": f"CASE WHEN {_OPEN} THEN d.flagged_stale ELSE 0 END",
    "won_n": f"CASE WHEN {_WON} THEN 1 ELSE 0 END",
    "won_units": f"CASE WHEN {_WON} THEN COALESCE(d.amount_units, 0) ELSE 0 END",
    "won_ms": f"CASE WHEN {_WON} THEN (d.closed_at - d.opened_at) / 1000 ELSE 0 END",
    "lost_n": f"CASE WHEN {_LOST} THEN 1 ELSE 0 END",
}
_KEYS_SQL = {
    "deals": "1",
    "open_n": _STATE_SQL["open_n"],
    "won_n": _STATE_SQL["won_n"],
    "lost_n": _STATE_SQL["lost_n"],
    "won_units": _STATE_SQL["won_units"],
    "won_ms": _STATE_SQL["won_ms"],
}


@dataclass(frozen=True)
class DaySide:
    """How an "as of ``at``" sum treats the moment's own day: the buckets of the whole days
    before ``prefix_day``, plus ``sign`` times the changes at times in ``[lo, hi]``.

    Before: the days before ``at``'s day, plus the changes of that day up to ``at``. After: the
    days up to and including ``at``'s day, minus the changes after ``at`` in that day. Both are
    exact; the one with fewer rows to read is taken. Data whose events share an instant (a CRM
    export's bare dates: every event at midnight) has all of a day's rows at its start, so a
    moment later that day reads none of them from the after side (at 100 copies of the export
    the before side read ~60k rows, growing with the copies)."""

    prefix_day: int
    lo: int
    hi: int
    sign: int


_SIDE_MEMO: WeakKeyDictionary[Any, dict[tuple[str, int], DaySide]] = WeakKeyDictionary()


def _count_changes(cur: Any, pipeline_id: str, lo: int, hi: int, cap: int | None) -> int:
    """History rows that began or ended in ``[lo, hi]`` (index-only counts), up to ``cap``."""
    limit = "" if cap is None else f" LIMIT {int(cap)}"
    row = cur.execute(
        f"SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM {HISTORY_TABLE} WHERE pipeline_id = %s"
        f" AND valid_from >= %s AND valid_from <= %s{limit}) a)"
        f" + (SELECT COUNT(*) FROM (SELECT 1 FROM {HISTORY_TABLE} WHERE pipeline_id = %s"
        f" AND valid_to >= %s AND valid_to <= %s{limit}) b) AS n",
        [pipeline_id, lo, hi, pipeline_id, lo, hi],
    ).fetchone()
    return int(row["n"])


def day_side(cur: Any, pipeline_id: str, at: int) -> DaySide:
    """The side of ``at``'s day an "as of" sum reads (see :class:`DaySide`): the after side
    when it holds fewer changes, counted from the indexes (the before side only up to the
    after side's count)."""
    memo = _SIDE_MEMO.setdefault(cur, {})
    found = memo.get((pipeline_id, at))
    if found is not None:
        return found
    day = day_of(at)
    start, end = day * DAY_US, (day + 1) * DAY_US
    after = _count_changes(cur, pipeline_id, at + 1, end - 1, None)
    before = _count_changes(cur, pipeline_id, start, at, after + 1)
    later = after < before
    found = DaySide(day + 1, at + 1, end - 1, -1) if later else DaySide(day, start, at, 1)
    memo[(pipeline_id, at)] = found
    return found


def _day_changes(cur: Any, pipeline_id: str, at: int) -> tuple[str, list[Any], DaySide]:
    """History rows whose validity began (sign 1) or ended (sign -1) in the moment's side of
    its day (times the side's sign): the changes the buckets of whole days do not hold, as a
    subquery ``d``."""
    side = day_side(cur, pipeline_id, at)
    sql = (
        f"(SELECT {side.sign} AS sg, h.* FROM {HISTORY_TABLE} h WHERE h.pipeline_id = %s"
        " AND h.valid_from >= %s AND h.valid_from <= %s"
        f" UNION ALL SELECT {-side.sign} AS sg, h.* FROM {HISTORY_TABLE} h WHERE h.pipeline_id = %s"
        " AND h.valid_to >= %s AND h.valid_to <= %s) d"
    )
    return sql, [pipeline_id, side.lo, side.hi, pipeline_id, side.lo, side.hi], side


def _sums(columns: dict[str, str]) -> str:
    return ", ".join(f"COALESCE(SUM(d.sg * ({e})), 0) AS {c}" for c, e in columns.items())


@dataclass(frozen=True)
class DayChanges:
    """What the history rows of a moment's own day change, summed three ways: the state
    counters per stage, deals per (stages visited, ever won), won deals per days-to-won."""

    stages: dict[str, dict[str, int]]
    visits: dict[tuple[str, int], int]
    won: dict[int, int]


# Per read cursor (one snapshot): the day's changes, read once for the stage counters, the
# visit sets and the won buckets an "as of" answer needs (three passes over the same rows
# before). Weak keys: an entry goes with its cursor.
_DAY_MEMO: WeakKeyDictionary[Any, dict[tuple[str, int], DayChanges]] = WeakKeyDictionary()
# The columns of a history row the three sums read.
_DAY_COLUMNS = "stage, status, amount_units, opened_at, closed_at, flagged_stale, visited, ever_won"


def day_changes(cur: Any, pipeline_id: str, at: int) -> DayChanges:
    """The changes inside ``at``'s day up to ``at`` (see :func:`_day_changes`), in one
    statement: the day's rows are read once (a CTE) and grouped three ways."""
    memo = _DAY_MEMO.setdefault(cur, {})
    found = memo.get((pipeline_id, at))
    if found is not None:
        return found
    side = day_side(cur, pipeline_id, at)
    zeros = ", ".join(f"0 AS {c}" for c in STATE_COUNTERS)
    won_days = f"(d.closed_at - d.opened_at) / {DAY_US}"
    rows = cur.execute(
        f"WITH d AS (SELECT {side.sign} AS sg, {_DAY_COLUMNS} FROM {HISTORY_TABLE}"
        " WHERE pipeline_id = %s AND valid_from >= %s AND valid_from <= %s"
        f" UNION ALL SELECT {-side.sign} AS sg, {_DAY_COLUMNS} FROM {HISTORY_TABLE}"
        " WHERE pipeline_id = %s AND valid_to >= %s AND valid_to <= %s)"
        f" SELECT 's' AS part, d.stage AS k1, 0 AS k2, 0 AS n, {_sums(_STATE_SQL)} FROM d"
        " GROUP BY d.stage"
        f" UNION ALL SELECT 'v', d.visited, d.ever_won, SUM(d.sg), {zeros} FROM d"
        " GROUP BY d.visited, d.ever_won"
        f" UNION ALL SELECT 'w', '', {won_days}, SUM(d.sg), {zeros} FROM d WHERE {_WON}"
        f" GROUP BY {won_days}",
        [pipeline_id, side.lo, side.hi, pipeline_id, side.lo, side.hi],
    ).fetchall()
    stages: dict[str, dict[str, int]] = {}
    visits: dict[tuple[str, int], int] = {}
    won: dict[int, int] = {}
    for row in rows:
        if row["part"] == "s":
            stages[row["k1"]] = {c: int(row[c] or 0) for c in STATE_COUNTERS}
        elif row["part"] == "v":
            visits[(row["k1"], int(row["k2"]))] = int(row["n"])
        else:
            won[int(row["k2"])] = int(row["n"])
    found = memo[(pipeline_id, at)] = DayChanges(stages, visits, won)
    return found


def stats_at(
    cur: Any, pipeline_id: str, at: int, *, states: bool = True
) -> dict[str, dict[str, int]]:
    """rm_stage_stats as of ``at``: per stage every counter (only the stay counters when
    ``states`` is false)."""
    counters = STATS_COUNTERS if states else STAY_COUNTERS
    side = day_side(cur, pipeline_id, at)
    where, params = prefix_sql(side.prefix_day)
    out: dict[str, dict[str, int]] = {}

    def add(stage: str, row: Any, names: tuple[str, ...]) -> None:
        target = out.setdefault(stage, dict.fromkeys(counters, 0))
        for name in names:
            target[name] += int(row[name] or 0)

    for row in cur.execute(
        f"SELECT stage, {', '.join(f'SUM({c}) AS {c}' for c in counters)} FROM {T_STATS_TABLE}"
        f" WHERE pipeline_id = %s AND {where} GROUP BY stage",
        [pipeline_id, *params],
    ).fetchall():
        add(row["stage"], row, counters)
    sg = side.sign
    for row in cur.execute(
        "SELECT stage, SUM(entered) AS entered, SUM(completed) AS completed,"
        " SUM(stay_ms) AS stay_ms, SUM(advanced) AS advanced FROM ("
        f"SELECT s.stage, {sg} * s.first_in_stage AS entered, 0 AS completed, 0 AS stay_ms,"
        f" 0 AS advanced FROM {STAYS_TABLE} s"
        " WHERE s.pipeline_id = %s AND s.entered_at >= %s AND s.entered_at <= %s"
        f" UNION ALL SELECT s.stage, 0, {sg}, {sg} * ((s.left_at - s.entered_at) / 1000),"
        f" {sg} * s.first_advance FROM {STAYS_TABLE} s"
        " WHERE s.pipeline_id = %s AND s.left_at >= %s AND s.left_at <= %s"
        ") x GROUP BY stage",
        [pipeline_id, side.lo, side.hi, pipeline_id, side.lo, side.hi],
    ).fetchall():
        add(row["stage"], row, STAY_COUNTERS)
    if states:
        for stage, changed in day_changes(cur, pipeline_id, at).stages.items():
            add(stage, changed, STATE_COUNTERS)
    return out


def keys_at(cur: Any, pipeline_id: str, dim: str, at: int) -> list[dict[str, Any]]:
    """rm_breakdown rows of one attribute as of ``at`` (rows with no deal left out)."""
    sql, changes, side = _day_changes(cur, pipeline_id, at)
    where, params = prefix_sql(side.prefix_day)
    totals: dict[tuple[int, str], list[int]] = {}
    for row in cur.execute(
        f"SELECT key_null, key, {', '.join(f'SUM({c}) AS {c}' for c in KEYS_COUNTERS)}"
        f" FROM {T_KEYS_TABLE} WHERE pipeline_id = %s AND dim = %s AND {where}"
        " GROUP BY key_null, key",
        [pipeline_id, dim, *params],
    ).fetchall():
        totals[(int(row["key_null"]), row["key"])] = [int(row[c]) for c in KEYS_COUNTERS]
    for row in cur.execute(
        f"SELECT d.{dim} AS key, {_sums(_KEYS_SQL)} FROM {sql} GROUP BY d.{dim}", changes
    ).fetchall():
        key = (int(row["key"] is None), row["key"] or "")
        found = totals.setdefault(key, [0] * len(KEYS_COUNTERS))
        for i, c in enumerate(KEYS_COUNTERS):
            found[i] += int(row[c])
    return [
        {"key_null": k[0], "key": k[1], **dict(zip(KEYS_COUNTERS, v, strict=True))}
        for k, v in totals.items()
        if v[0]
    ]


def visits_at(cur: Any, pipeline_id: str, at: int) -> dict[tuple[str, int], int]:
    """rm_visit_sets as of ``at``: deals per (stages visited, ever won)."""
    where, params = prefix_sql(day_side(cur, pipeline_id, at).prefix_day)
    totals: dict[tuple[str, int], int] = {}
    for row in cur.execute(
        f"SELECT visited, ever_won, SUM(n) AS n FROM {T_VISITS_TABLE}"
        f" WHERE pipeline_id = %s AND {where} GROUP BY visited, ever_won",
        [pipeline_id, *params],
    ).fetchall():
        totals[(row["visited"], int(row["ever_won"]))] = int(row["n"])
    for key, n in day_changes(cur, pipeline_id, at).visits.items():
        totals[key] = totals.get(key, 0) + n
    return totals


def won_buckets_at(cur: Any, pipeline_id: str, at: int) -> list[tuple[int, int]]:
    """rm_won_buckets as of ``at``: (whole days from open to won, won deals), in order."""
    where, params = prefix_sql(day_side(cur, pipeline_id, at).prefix_day)
    totals: dict[int, int] = {}
    for row in cur.execute(
        f"SELECT dur_bucket, SUM(n) AS n FROM {T_WON_TABLE}"
        f" WHERE pipeline_id = %s AND {where} GROUP BY dur_bucket",
        [pipeline_id, *params],
    ).fetchall():
        totals[int(row["dur_bucket"])] = int(row["n"])
    for b, n in day_changes(cur, pipeline_id, at).won.items():
        totals[b] = totals.get(b, 0) + n
    return sorted((b, n) for b, n in totals.items() if n)


def open_entered_before(cur: Any, pipeline_id: str, befores: dict[str, int]) -> dict[str, int]:
    """Per stage: the open, unflagged deals now in it that entered it before ``befores[stage]``:
    the buckets of the whole days before, and the current rows of that moment's own day (an
    index range). Every stage in one statement (the board and the metrics ask for all)."""
    parts: list[str] = []
    params: list[Any] = []
    for stage, before in befores.items():
        day = day_of(before)
        where, prefix = prefix_sql(day)
        parts.append(
            f"SELECT stage, n FROM {OPEN_ENTERED_TABLE} WHERE pipeline_id = %s AND stage = %s"
            f" AND {where}"
        )
        parts.append(
            f"SELECT stage, 1 AS n FROM {CURRENT_TABLE} WHERE pipeline_id = %s AND status = 'open'"
            " AND stage = %s AND stage_entered_at >= %s AND stage_entered_at < %s"
            " AND flagged_stale = 0"
        )
        params += [pipeline_id, stage, *prefix, pipeline_id, stage, day * DAY_US, before]
    if not parts:
        return {}
    rows = cur.execute(
        f"SELECT stage, SUM(n) AS n FROM ({' UNION ALL '.join(parts)}) x GROUP BY stage", params
    ).fetchall()
    return {row["stage"]: int(row["n"]) for row in rows}
