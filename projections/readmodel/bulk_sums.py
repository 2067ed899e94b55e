"""The summary tables of a bulk rebuild, computed from the rows in PostgreSQL (set-based SQL).

The incremental fold adds each event's change of a deal's contribution to the counters
(``fold.py``). A full rebuild writes every row first (current deals, history, stays) and
then derives every summary table from those rows with one ``INSERT ... SELECT ... GROUP BY``
each. This is the same arithmetic, stated over rows instead of events:

- the *current* summaries are sums over the current rows (``rm_deals``), plus the stays'
  counters (entered, advanced, completed, time in stage) summed over every stay;
- the *business-time* changes telescope: a deal's contribution changes only at its events,
  and each history row holds the state from ``valid_from`` to ``valid_to``. So the change on a
  day is the sum of the contributions of the rows that began that day minus those of the rows
  that ended that day (``+row`` at its ``valid_from``'s day, ``-row`` at its ``valid_to``'s),
  plus the stays entered (entered) and left (advanced, completed, time) that day;
- a key whose counters all add up to zero is not written, as the incremental runner deletes
  a key whose counters come back to zero (``views.py``): both hold exactly the same rows.

``tests/integration/test_projections_parallel_rebuild.py`` checks the result against the
incremental read models row for row. Every statement reads only the row tables, so the
statements are independent: the rebuild runs them on several connections at once.

Integer arithmetic matches the fold's: ``/`` on bigint truncates toward zero (``_trunc_ms``),
``%`` keeps the dividend's sign (``opened_at - 1000 * trunc``), ``>>`` is an arithmetic shift
(Python's ``>>`` on negative days), and days are floored (``day_of``) with :func:`_day`.
"""

from __future__ import annotations

from projections.readmodel.fold import BREAKDOWN_KEYS, TIMELINE_KEYS
from projections.readmodel.schema import (
    CLOSED_TABLE,
    CURRENT_TABLE,
    HISTORY_TABLE,
    KEYS_COUNTERS,
    KEYS_TABLE,
    OPEN_ENTERED_TABLE,
    PIPELINES_TABLE,
    STATS_COUNTERS,
    STATS_TABLE,
    STAYS_TABLE,
    T_KEYS_TABLE,
    T_STATS_TABLE,
    T_VISITS_TABLE,
    T_WON_TABLE,
    VERSIONS_TABLE,
    VISITS_TABLE,
    WON_TABLE,
)
from projections.readmodel.timeline import DAY_US, LEVELS


def _day(column: str) -> str:
    """Floor division of a microsecond time by a day (``day_of``; SQL's ``/`` truncates)."""
    return f"(({column} - ((({column} % {DAY_US}) + {DAY_US}) % {DAY_US})) / {DAY_US})"


# Each counter as an aggregate over a group of deal rows (current or history rows).
_OPEN = "status = 'open'"
_WON = "status = 'won'"
_LOST = "status NOT IN ('open', 'won')"  # the fold's "else" branch
_STATS_AGGS = [
    ("deals", "COUNT(*)"),
    ("open_n", f"COUNT(*) FILTER (WHERE {_OPEN})"),
    ("open_units", f"SUM(COALESCE(amount_units, 0)) FILTER (WHERE {_OPEN})"),
    ("open_ms", f"SUM(opened_at / 1000) FILTER (WHERE {_OPEN})"),
    ("open_us", f"SUM(opened_at % 1000) FILTER (WHERE {_OPEN})"),
    ("open_flagged", f"SUM(flagged_stale) FILTER (WHERE {_OPEN})"),
    ("won_n", f"COUNT(*) FILTER (WHERE {_WON})"),
    ("won_units", f"SUM(COALESCE(amount_units, 0)) FILTER (WHERE {_WON})"),
    ("won_ms", f"SUM((closed_at - opened_at) / 1000) FILTER (WHERE {_WON})"),
    ("lost_n", f"COUNT(*) FILTER (WHERE {_LOST})"),
    ("entered", "0"),  # the stays' four counters come from the stays
    ("advanced", "0"),
    ("completed", "0"),
    ("stay_ms", "0"),
]
_KEYS_AGGS = [
    ("deals", "COUNT(*)"),
    ("open_n", f"COUNT(*) FILTER (WHERE {_OPEN})"),
    ("won_n", f"COUNT(*) FILTER (WHERE {_WON})"),
    ("lost_n", f"COUNT(*) FILTER (WHERE {_LOST})"),
    ("won_units", f"SUM(COALESCE(amount_units, 0)) FILTER (WHERE {_WON})"),
    ("won_ms", f"SUM((closed_at - opened_at) / 1000) FILTER (WHERE {_WON})"),
]
_STAYS_AGGS = [
    ("entered", "SUM(first_in_stage)"),
    ("advanced", "SUM(first_advance)"),
    ("completed", "COUNT(left_at)"),
    ("stay_ms", "SUM((left_at - entered_at) / 1000)"),
]
assert [n for n, _ in _STATS_AGGS] == list(STATS_COUNTERS)
assert [n for n, _ in _KEYS_AGGS] == list(KEYS_COUNTERS)

# The history rows with the days their validity began and ended (and a won deal's whole days
# from open to close, the won buckets' key).
_HISTORY_DAYS = (
    f"(SELECT *, {_day('valid_from')} AS day_from, {_day('valid_to')} AS day_to,"
    f" {_day('(closed_at - opened_at)')} AS dur_bucket FROM {HISTORY_TABLE}) h"
)
_STAY_DAYS = (
    f"(SELECT *, {_day('entered_at')} AS day_in, {_day('left_at')} AS day_out FROM {STAYS_TABLE}) s"
)
_LEVELS = ", ".join(f"({lvl}, {shift})" for lvl, shift in enumerate(LEVELS))


def _names(aggs: list[tuple[str, str]]) -> list[str]:
    return [n for n, _ in aggs]


def _sums(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"SUM({n})" for n in names)


def _nonzero(names: tuple[str, ...] | list[str]) -> str:
    return " OR ".join(f"SUM({n}) <> 0" for n in names)


def _signed_days(
    keys: list[str],
    aggs: list[tuple[str, str]],
    source: str = _HISTORY_DAYS,
    days: tuple[str, str] = ("day_from", "day_to"),
    dims: tuple[str, ...] = (),
    where: str = "",
) -> str:
    """Per-day changes: ``aggs`` over the rows grouped by ``keys`` and the first of ``days``
    (added), and by ``keys`` and the second (taken away), in one pass (grouping sets). With
    ``dims``, one attribute at a time joins the keys: the result has ``dim`` and ``v`` (the
    attribute's value) after ``keys``. Columns: keys, [dim, v,] day, counters."""
    plus, minus = days
    sets = [
        f"({', '.join([*keys, *([d] if d else []), day])})" for d in (dims or ("",)) for day in days
    ]
    picked = ""
    if dims:
        # The attribute of the row's grouping set (its own value may be NULL: a deal without it).
        which = " ".join(f"WHEN GROUPING({d}) = 0 THEN '{d}'" for d in dims)
        value = " ".join(f"WHEN GROUPING({d}) = 0 THEN {d}" for d in dims)
        picked = f"CASE {which} END AS dim, CASE {value} END AS v, "
    inner = (
        f"SELECT {', '.join(keys)}, {picked}GROUPING({plus}) AS g, {plus}, {minus}, "
        + ", ".join(f"{e} AS {n}" for n, e in aggs)
        + f" FROM {source}{where} GROUP BY GROUPING SETS ({', '.join(sets)})"
    )
    day = f"CASE WHEN g = 0 THEN {plus} ELSE {minus} END"
    return (
        f"SELECT {', '.join(keys)}, {'dim, v, ' if dims else ''}{day} AS day, "
        + ", ".join(
            f"CASE WHEN g = 0 THEN 1 ELSE -1 END * COALESCE({n}, 0) AS {n}" for n, _ in aggs
        )
        + f" FROM ({inner}) x WHERE {day} IS NOT NULL"
    )


def _levels(table: str, head: str, tail: str, counters: tuple[str, ...], per_day: str) -> str:
    """INSERT the per-day changes of ``per_day`` (columns: head, day, tail, counters) summed
    into the three bucket levels, keys whose counters add up to zero left out. The days are
    summed first, so the levels multiply the (few) days' keys, not the rows."""
    keys = [c.strip() for c in head.split(",")] + ["day"]
    keys += [c.strip() for c in tail.split(",")] if tail else []
    by_day = ", ".join(keys)
    out = ", ".join(f"d.{k}" if k != "day" else "l.lvl, d.day >> l.shift" for k in keys)
    columns = ", ".join(k if k != "day" else "lvl, bucket" for k in keys)
    day_sums = ", ".join(f"SUM({c}) AS {c}" for c in counters)
    return (
        f"INSERT INTO {table} ({columns}, {', '.join(counters)})"
        f" SELECT {out}, {_sums(counters)}"
        f" FROM (SELECT {by_day}, {day_sums} FROM ({per_day}) p GROUP BY {by_day}) d"
        f" CROSS JOIN (VALUES {_LEVELS}) AS l(lvl, shift)"
        f" GROUP BY {', '.join(str(i) for i in range(1, len(keys) + 2))}"
        f" HAVING {_nonzero(counters)}"
    )


def _stays_part(days: bool) -> str:
    """The stays' four stats counters (the other ten zero): per (pipeline, stage), or per
    day with ``days`` (entered on the day it was entered; the rest on the day it was left)."""
    zeros = ", ".join(f"0 AS {n}" for n, _ in _STATS_AGGS[:10])
    if not days:
        return (
            f"SELECT pipeline_id, stage, {zeros}, "
            + ", ".join(f"COALESCE({e}, 0) AS {n}" for n, e in _STAYS_AGGS)
            + f" FROM {STAYS_TABLE} GROUP BY pipeline_id, stage"
        )
    inner = (
        "SELECT pipeline_id, stage, GROUPING(day_in) AS g, day_in, day_out, "
        + ", ".join(f"{e} AS {n}" for n, e in _STAYS_AGGS)
        + f" FROM {_STAY_DAYS} GROUP BY GROUPING SETS"
        " ((pipeline_id, stage, day_in), (pipeline_id, stage, day_out))"
    )
    day = "CASE WHEN g = 0 THEN day_in ELSE day_out END"
    return (
        f"SELECT pipeline_id, stage, {day} AS day, {zeros},"
        " CASE WHEN g = 0 THEN entered ELSE 0 END AS entered,"
        " CASE WHEN g = 0 THEN 0 ELSE COALESCE(advanced, 0) END AS advanced,"
        " CASE WHEN g = 0 THEN 0 ELSE completed END AS completed,"
        " CASE WHEN g = 0 THEN 0 ELSE COALESCE(stay_ms, 0) END AS stay_ms"
        f" FROM ({inner}) x WHERE {day} IS NOT NULL"
    )


def _stats_sql() -> str:
    names = list(STATS_COUNTERS)
    deals = (
        "SELECT pipeline_id, stage, "
        + ", ".join(f"COALESCE({e}, 0) AS {n}" for n, e in _STATS_AGGS)
        + f" FROM {CURRENT_TABLE} GROUP BY pipeline_id, stage"
    )
    return (
        f"INSERT INTO {STATS_TABLE} (pipeline_id, stage, {', '.join(names)})"
        f" SELECT pipeline_id, stage, {_sums(names)}"
        f" FROM ({deals} UNION ALL {_stays_part(False)}) r"
        f" GROUP BY 1, 2 HAVING {_nonzero(names)}"
    )


def _keys_sql() -> str:
    names = list(KEYS_COUNTERS)
    sets = ", ".join(f"(pipeline_id, {d})" for d in BREAKDOWN_KEYS)
    which = " ".join(f"WHEN GROUPING({d}) = 0 THEN '{d}'" for d in BREAKDOWN_KEYS)
    value = " ".join(f"WHEN GROUPING({d}) = 0 THEN {d}" for d in BREAKDOWN_KEYS)
    inner = (
        f"SELECT pipeline_id, CASE {which} END AS dim, CASE {value} END AS v, "
        + ", ".join(f"COALESCE({e}, 0) AS {n}" for n, e in _KEYS_AGGS)
        + f" FROM {CURRENT_TABLE} GROUP BY GROUPING SETS ({sets})"
    )
    nonzero = " OR ".join(f"{n} <> 0" for n in names)
    return (
        f"INSERT INTO {KEYS_TABLE} (pipeline_id, dim, key_null, key, {', '.join(names)})"
        f" SELECT pipeline_id, dim, (v IS NULL)::int, COALESCE(v, ''), {', '.join(names)}"
        f" FROM ({inner}) x WHERE {nonzero}"
    )


def _current_small_sql() -> list[str]:
    return [
        f"INSERT INTO {VISITS_TABLE} (pipeline_id, visited, ever_won, n)"
        f" SELECT pipeline_id, visited, ever_won, COUNT(*) FROM {CURRENT_TABLE} GROUP BY 1, 2, 3",
        f"INSERT INTO {WON_TABLE} (pipeline_id, bucket, n)"
        f" SELECT pipeline_id, {_day('(closed_at - opened_at)')}, COUNT(*) FROM {CURRENT_TABLE}"
        " WHERE status = 'won' GROUP BY 1, 2",
        f"INSERT INTO {CLOSED_TABLE} (pipeline_id, day, status, dur_bucket, n, units, dur_ms)"
        f" SELECT pipeline_id, {_day('closed_at')}, status,"
        f" CASE WHEN {_WON} THEN {_day('(closed_at - opened_at)')} ELSE 0 END, COUNT(*),"
        " SUM(COALESCE(amount_units, 0)), SUM((closed_at - opened_at) / 1000)"
        f" FROM {CURRENT_TABLE} WHERE status <> 'open' GROUP BY 1, 2, 3, 4",
        _levels(
            OPEN_ENTERED_TABLE,
            "pipeline_id",
            "stage",
            ("n",),
            f"SELECT pipeline_id, {_day('stage_entered_at')} AS day, stage, 1 AS n"
            f" FROM {CURRENT_TABLE} WHERE status = 'open' AND flagged_stale = 0",
        ),
    ]


def _t_stats_sql() -> str:
    history = _signed_days(["pipeline_id", "stage"], _STATS_AGGS)
    per_day = f"{history} UNION ALL {_stays_part(True)}"
    return _levels(T_STATS_TABLE, "pipeline_id, stage", "", STATS_COUNTERS, per_day)


def _t_keys_sql(dims: tuple[str, ...]) -> str:
    per_day = _signed_days(["pipeline_id"], _KEYS_AGGS, dims=dims)
    keyed = (
        "SELECT pipeline_id, dim, day, (v IS NULL)::int AS key_null, COALESCE(v, '') AS key, "
        + ", ".join(KEYS_COUNTERS)
        + f" FROM ({per_day}) k"
    )
    return _levels(T_KEYS_TABLE, "pipeline_id, dim", "key_null, key", KEYS_COUNTERS, keyed)


def _t_small_sql() -> list[str]:
    return [
        _levels(
            T_VISITS_TABLE,
            "pipeline_id",
            "visited, ever_won",
            ("n",),
            _signed_days(["pipeline_id", "visited", "ever_won"], [("n", "COUNT(*)")]),
        ),
        _levels(
            T_WON_TABLE,
            "pipeline_id",
            "dur_bucket",
            ("n",),
            _signed_days(
                ["pipeline_id", "dur_bucket"], [("n", "COUNT(*)")], where=" WHERE status = 'won'"
            ),
        ),
        f"INSERT INTO {PIPELINES_TABLE} (pipeline_id, last_event_at)"
        f" SELECT pipeline_id, MAX(valid_from) FROM {HISTORY_TABLE} GROUP BY 1",
        f"INSERT INTO {VERSIONS_TABLE} (pipeline_id, version, first_at)"
        f" SELECT pipeline_id, pipeline_version, MIN(valid_from) FROM {HISTORY_TABLE}"
        " WHERE pipeline_version IS NOT NULL GROUP BY 1, 2",
    ]


def summary_jobs() -> list[list[str]]:
    """The statements that fill every summary table from the row tables, as independent jobs
    (each a list of statements for one connection), largest first."""
    # The business-time breakdown is the biggest: its attributes in two halves, so that two
    # connections share it.
    half = len(TIMELINE_KEYS) // 2
    return [
        [_t_stats_sql()],
        [_t_keys_sql(TIMELINE_KEYS[:half])],
        [_t_keys_sql(TIMELINE_KEYS[half:])],
        _t_small_sql(),
        [_stats_sql(), _keys_sql(), *_current_small_sql()],
    ]
