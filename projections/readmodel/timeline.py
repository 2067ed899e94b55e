"""The summary counters as changes in business time, in buckets of three sizes.

Every summary counter (see schema.py) is a sum of what each deal contributes. A deal's
contribution changes only at its events' business times, so the counters *as of* a moment are
the sum of every change up to that moment. The fold records each change in the day it happened;
the view writes each day's change into three levels of buckets (a day, 32 days, 1024 days), so
the sum over all whole days before a moment reads at most ~32 rows per level and key, whatever
the span of the data. The changes inside the moment's own day come from the history and stay
rows of that day (an index range), so the answer is exact to the microsecond.

A change keeps the business time of the event that made it, whenever that event arrives: late
(out of order) events and events after "now" land in their own day like any other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

DAY_US = 86_400_000_000
# Bucket sizes as shifts of the day number: 1, 32 and 1024 days.
LEVELS = (0, 5, 10)


def day_of(us: int) -> int:
    """The day number of a business time (floor division: also right before 1970)."""
    return us // DAY_US


def expand(day_deltas: dict[tuple[Any, ...], Any], day_index: int) -> dict[tuple[Any, ...], Any]:
    """Per-day changes keyed with the day at ``day_index`` of the key, summed into the three
    levels; the result's keys hold ``(lvl, bucket)`` in place of the day."""
    out: dict[tuple[Any, ...], Any] = {}
    for key, value in day_deltas.items():
        day = key[day_index]
        head, tail = key[:day_index], key[day_index + 1 :]
        for lvl, shift in enumerate(LEVELS):
            add_delta(out, (*head, lvl, day >> shift, *tail), value)
    return out


def add_delta(out: dict[Any, Any], key: Any, value: Any) -> None:
    """Add a summary delta (a list of counters or one count) to ``out[key]``; a list is copied
    the first time, so ``out`` never shares one with the delta it came from."""
    found = out.get(key)
    if found is None:
        out[key] = list(value) if isinstance(value, list) else value
    elif isinstance(value, list):
        add_counts(found, value)
    else:
        out[key] = found + value


def prefix_ranges(day: int) -> list[tuple[int, int, int]]:
    """``(lvl, lo, hi)`` bucket ranges (lo inclusive, hi exclusive) that together cover every
    whole day before ``day`` exactly once."""
    top = LEVELS[-1]
    ranges = [(len(LEVELS) - 1, -(1 << 62), day >> top)]
    for lvl in range(len(LEVELS) - 2, -1, -1):
        shift, up = LEVELS[lvl], LEVELS[lvl + 1]
        lo = (day >> up) << (up - shift)
        ranges.append((lvl, lo, day >> shift))
    return ranges


def prefix_sql(day: int, alias: str = "") -> tuple[str, list[Any]]:
    """A WHERE fragment selecting the buckets of :func:`prefix_ranges` (for ``alias``)."""
    col = f"{alias}." if alias else ""
    parts, params = [], []
    for lvl, lo, hi in prefix_ranges(day):
        if hi <= lo:
            continue
        parts.append(f"({col}lvl = %s AND {col}bucket >= %s AND {col}bucket < %s)")
        params += [lvl, lo, hi]
    return ("(" + " OR ".join(parts) + ")") if parts else "1 = 0", params


def add_counts(total: list[int], values: Iterable[int], sign: int = 1) -> None:
    for i, v in enumerate(values):
        total[i] += sign * v
