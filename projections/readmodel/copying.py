"""Writing a batch's changes: new rows and summary counters as PostgreSQL binary COPY and upserts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from projections.readmodel.rows import (
    CURRENT_COLUMNS,
    HISTORY_COLUMNS,
    STAY_COLUMNS,
    ChangeSet,
)
from projections.readmodel.schema import (
    CLOSED_COUNTERS,
    CLOSED_TABLE,
    CURRENT_TABLE,
    HISTORY_TABLE,
    KEYS_COUNTERS,
    KEYS_TABLE,
    OPEN_ENTERED_TABLE,
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
from projections.readmodel.timeline import expand

# Binary COPY needs each column's exact type (see schema.py).
_DEAL_TYPES = [
    "uuid",
    "text",
    "text",
    "int4",
    "text",
    "text",
    "text",
    "text",
    "int8",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "int8",
    "int8",
    "int8",
    "text",
    "int2",
    "int4",
    "int8",
    "text",
    "text",
    "int2",
]


_CURRENT_TYPES = [*_DEAL_TYPES, "int4", "text", "text", "int8", "int2"]


_HISTORY_TYPES = [*_DEAL_TYPES, "text", "int2", "int8", "int8"]


_STAY_TYPES = ["uuid", "int4", "text", "text", "int8", "int8", "text", "int2", "int2"]


def cols(columns: Sequence[str]) -> str:
    return ", ".join(columns)


def summary_rows(changes: ChangeSet) -> list[tuple[str, list[str], list[str], list[Any]]]:
    """(table, key columns, counter columns, rows) of every summary delta that is not zero."""
    return [
        (
            STATS_TABLE,
            ["pipeline_id", "stage"],
            list(STATS_COUNTERS),
            [(*k, *v) for k, v in changes.stats.items() if any(v)],
        ),
        (
            KEYS_TABLE,
            ["pipeline_id", "dim", "key_null", "key"],
            list(KEYS_COUNTERS),
            [(*k, *v) for k, v in changes.keys.items() if any(v)],
        ),
        (
            VISITS_TABLE,
            ["pipeline_id", "visited", "ever_won"],
            ["n"],
            [(*k, v) for k, v in changes.visits.items() if v],
        ),
        (
            WON_TABLE,
            ["pipeline_id", "bucket"],
            ["n"],
            [(*k, v) for k, v in changes.won_buckets.items() if v],
        ),
        (
            CLOSED_TABLE,
            ["pipeline_id", "day", "status", "dur_bucket"],
            list(CLOSED_COUNTERS),
            [(*k, *v) for k, v in changes.closed.items() if any(v)],
        ),
        (
            T_STATS_TABLE,
            ["pipeline_id", "lvl", "bucket", "stage"],
            list(STATS_COUNTERS),
            [(*k, *v) for k, v in expand(changes.t_stats, 1).items() if any(v)],
        ),
        (
            T_KEYS_TABLE,
            ["pipeline_id", "dim", "lvl", "bucket", "key_null", "key"],
            list(KEYS_COUNTERS),
            [(*k, *v) for k, v in expand(changes.t_keys, 2).items() if any(v)],
        ),
        (
            T_VISITS_TABLE,
            ["pipeline_id", "lvl", "bucket", "visited", "ever_won"],
            ["n"],
            [(*k, v) for k, v in expand(changes.t_visits, 1).items() if v],
        ),
        (
            T_WON_TABLE,
            ["pipeline_id", "lvl", "bucket", "dur_bucket"],
            ["n"],
            [(*k, v) for k, v in expand(changes.t_won, 1).items() if v],
        ),
        (
            OPEN_ENTERED_TABLE,
            ["pipeline_id", "lvl", "bucket", "stage"],
            ["n"],
            [(*k, v) for k, v in expand(changes.open_entered, 1).items() if v],
        ),
    ]


VERSIONS_UPSERT = (
    f"INSERT INTO {VERSIONS_TABLE} (pipeline_id, version, first_at) {{values}}"
    " ON CONFLICT (pipeline_id, version) DO UPDATE"
    f" SET first_at = {{least}}({VERSIONS_TABLE}.first_at, excluded.first_at)"
)


def upsert_sql(table: str, keys: list[str], counters: list[str], values: str) -> str:
    updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in counters)
    return (
        f"INSERT INTO {table} ({cols([*keys, *counters])}) {values}"
        f" ON CONFLICT ({cols(keys)}) DO UPDATE SET {updates}"
    )


def zero_test(table: str, counters: list[str]) -> str:
    """A SQL condition: every counter of ``table``'s row is zero (the key means nothing)."""
    return "(" + " AND ".join(f"{table}.{c} = 0" for c in counters) + ")"


def copy_new_rows(curs: Any, changes: ChangeSet) -> None:
    """COPY a batch's new rows: every current row (the caller deleted the ones it replaces),
    the new history rows and the new stays (a bulk rebuild: every deal whole)."""
    for table, columns, types, rows in (
        (
            CURRENT_TABLE,
            CURRENT_COLUMNS,
            _CURRENT_TYPES,
            [r.current_values() for r in changes.current.values()],
        ),
        (HISTORY_TABLE, HISTORY_COLUMNS, _HISTORY_TYPES, changes.history),
        (STAYS_TABLE, STAY_COLUMNS, _STAY_TYPES, [s.values() for s in changes.stays.values()]),
    ):
        if not rows:
            continue
        with curs.copy(f"COPY {table} ({cols(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for values in rows:
                copy.write_row(values)
