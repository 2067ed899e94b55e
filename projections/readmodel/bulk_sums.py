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


_OPEN = "(status = 'open')::int"
_WON = "(status = 'won')::int"
_LOST = "(status NOT IN ('open', 'won'))::int"  # the fold's "else" branch
_UNITS = "COALESCE(amount_units, 0)"
_WON_MS = "((closed_at - opened_at) / 1000)"


def _stats_exprs(sign: str) -> list[str]:
    """The 14 stats counters of one deal row (a current or history row) times ``sign``;
    the stays' four are zero here (they come from the stays)."""
    return [
        f"{sign}",
        f"{sign} * {_OPEN}",
        f"{sign} * {_OPEN} * {_UNITS}",
        f"{sign} * {_OPEN} * (opened_at / 1000)",
        f"{sign} * {_OPEN} * (opened_at % 1000)",
        f"{sign} * {_OPEN} * flagged_stale",
        f"{sign} * {_WON}",
        f"{sign} * {_WON} * {_UNITS}",
        f"{sign} * {_WON} * COALESCE({_WON_MS}, 0)",
        f"{sign} * {_LOST}",
        "0",
        "0",
        "0",
        "0",
    ]


def _keys_exprs(sign: str) -> list[str]:
    return [
        f"{sign}",
        f"{sign} * {_OPEN}",
        f"{sign} * {_WON}",
        f"{sign} * {_LOST}",
        f"{sign} * {_WON} * {_UNITS}",
        f"{sign} * {_WON} * COALESCE({_WON_MS}, 0)",
    ]


def _stay_exprs(at_enter: bool, left: bool) -> list[str]:
    """The stats counters a stay adds: when it is entered and/or when it is left."""
    zeros = ["0"] * 10
    entered = "first_in_stage" if at_enter else "0"
    if left:
        return [
            *zeros,
            entered,
            "first_advance",
            "1",
            "((left_at - entered_at) / 1000)",
        ]
    return [*zeros, entered, "0", "0", "0"]


def _select(names: list[str], exprs: list[str]) -> str:
    return ", ".join(f"{e} AS {n}" for e, n in zip(exprs, names, strict=True))


def _sums(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"SUM({n})" for n in names)


def _nonzero(names: tuple[str, ...] | list[str]) -> str:
    return " OR ".join(f"SUM({n}) <> 0" for n in names)


def _signed_history(join: str = "") -> str:
    """History rows as signed contributions (``e.s``, ``e.day``): +row on the day it began,
    -row on the day it ended; ``join`` adds another lateral join before the WHERE."""
    return (
        f"{HISTORY_TABLE} h CROSS JOIN LATERAL"
        f" (VALUES (1, {_day('h.valid_from')}), (-1, {_day('h.valid_to')})) AS e(s, day)"
        f"{join} WHERE e.day IS NOT NULL"
    )


_LEVELS = ", ".join(f"({lvl}, {shift})" for lvl, shift in enumerate(LEVELS))


def _levels(table: str, head: str, tail: str, counters: tuple[str, ...], per_day: str) -> str:
    """INSERT the per-day changes of ``per_day`` (columns: head, day, tail, counters) summed
    into the three bucket levels, keys whose counters add up to zero left out."""
    keys = f"{head}, lvl, bucket, {tail}" if tail else f"{head}, lvl, bucket"
    tail_sel = f", d.{tail.replace(', ', ', d.')}" if tail else ""
    heads = ", ".join(f"d.{c.strip()}" for c in head.split(","))
    group = len(head.split(",")) + 2 + (len(tail.split(",")) if tail else 0)
    return (
        f"INSERT INTO {table} ({keys}, {', '.join(counters)})"
        f" SELECT {heads}, l.lvl, d.day >> l.shift{tail_sel}, {_sums(counters)}"
        f" FROM ({per_day}) d CROSS JOIN (VALUES {_LEVELS}) AS l(lvl, shift)"
        f" GROUP BY {', '.join(str(i) for i in range(1, group + 1))}"
        f" HAVING {_nonzero(counters)}"
    )


def _stats_sql() -> str:
    names = list(STATS_COUNTERS)
    rows = " UNION ALL ".join(
        [
            f"SELECT pipeline_id, stage, {_select(names, _stats_exprs('1'))} FROM {CURRENT_TABLE}",
            f"SELECT pipeline_id, stage, {_select(names, _stay_exprs(True, False))}"
            f" FROM {STAYS_TABLE} WHERE left_at IS NULL",
            f"SELECT pipeline_id, stage, {_select(names, _stay_exprs(True, True))}"
            f" FROM {STAYS_TABLE} WHERE left_at IS NOT NULL",
        ]
    )
    return (
        f"INSERT INTO {STATS_TABLE} (pipeline_id, stage, {', '.join(names)})"
        f" SELECT pipeline_id, stage, {_sums(names)} FROM ({rows}) r"
        f" GROUP BY 1, 2 HAVING {_nonzero(names)}"
    )


def _keys_sql() -> str:
    names = list(KEYS_COUNTERS)
    dims = ", ".join(f"('{d}', {d})" for d in BREAKDOWN_KEYS)
    return (
        f"INSERT INTO {KEYS_TABLE} (pipeline_id, dim, key_null, key, {', '.join(names)})"
        f" SELECT pipeline_id, k.dim, (k.v IS NULL)::int, COALESCE(k.v, ''), {_sums(names)}"
        f" FROM (SELECT pipeline_id, industry, lead_source, decision_maker_role, owner, account,"
        f" {_select(names, _keys_exprs('1'))} FROM {CURRENT_TABLE}) r"
        f" CROSS JOIN LATERAL (VALUES {dims}) AS k(dim, v)"
        f" GROUP BY 1, 2, 3, 4 HAVING {_nonzero(names)}"
    )


def _current_small_sql() -> list[str]:
    return [
        f"INSERT INTO {VISITS_TABLE} (pipeline_id, visited, ever_won, n)"
        f" SELECT pipeline_id, visited, ever_won, COUNT(*) FROM {CURRENT_TABLE} GROUP BY 1, 2, 3",
        f"INSERT INTO {WON_TABLE} (pipeline_id, bucket, n)"
        f" SELECT pipeline_id, {_day('(closed_at - opened_at)')}, COUNT(*) FROM {CURRENT_TABLE}"
        " WHERE status = 'won' GROUP BY 1, 2",
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
    names = list(STATS_COUNTERS)
    per_day = " UNION ALL ".join(
        [
            f"SELECT h.pipeline_id, e.day, h.stage, {_select(names, _stats_exprs('e.s'))}"
            f" FROM {_signed_history()}",
            f"SELECT pipeline_id, {_day('entered_at')} AS day, stage,"
            f" {_select(names, _stay_exprs(True, False))} FROM {STAYS_TABLE}",
            f"SELECT pipeline_id, {_day('left_at')} AS day, stage,"
            f" {_select(names, _stay_exprs(False, True))} FROM {STAYS_TABLE}"
            " WHERE left_at IS NOT NULL",
        ]
    )
    return _levels(T_STATS_TABLE, "pipeline_id", "stage", STATS_COUNTERS, per_day)


def _t_keys_sql() -> str:
    names = list(KEYS_COUNTERS)
    dims = ", ".join(f"('{d}', h.{d})" for d in TIMELINE_KEYS)
    per_day = (
        f"SELECT h.pipeline_id, k.dim, e.day, (k.v IS NULL)::int AS key_null,"
        f" COALESCE(k.v, '') AS key, {_select(names, _keys_exprs('e.s'))}"
        f" FROM {_signed_history(f' CROSS JOIN LATERAL (VALUES {dims}) AS k(dim, v)')}"
    )
    return (
        f"INSERT INTO {T_KEYS_TABLE} (pipeline_id, dim, lvl, bucket, key_null, key,"
        f" {', '.join(names)})"
        f" SELECT d.pipeline_id, d.dim, l.lvl, d.day >> l.shift, d.key_null, d.key, {_sums(names)}"
        f" FROM ({per_day}) d CROSS JOIN (VALUES {_LEVELS}) AS l(lvl, shift)"
        f" GROUP BY 1, 2, 3, 4, 5, 6 HAVING {_nonzero(names)}"
    )


def _t_small_sql() -> list[str]:
    return [
        _levels(
            T_VISITS_TABLE,
            "pipeline_id",
            "visited, ever_won",
            ("n",),
            f"SELECT h.pipeline_id, e.day, h.visited, h.ever_won, e.s AS n FROM {_signed_history()}",
        ),
        _levels(
            T_WON_TABLE,
            "pipeline_id",
            "dur_bucket",
            ("n",),
            f"SELECT h.pipeline_id, e.day, {_day('(h.closed_at - h.opened_at)')} AS dur_bucket,"
            f" e.s AS n FROM {_signed_history()} AND h.status = 'won'",
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
    return [
        [_t_keys_sql()],
        [_t_stats_sql()],
        _t_small_sql(),
        [_stats_sql(), _keys_sql(), *_current_small_sql()],
    ]
