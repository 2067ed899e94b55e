"""The read models as comparable data: what "the incremental read models equal a rebuild"
means, for the tests and the crash check alike."""

from __future__ import annotations

import json
from typing import Any

from projections.readmodel.schema import (
    KEYS_COUNTERS,
    STATS_COUNTERS,
    SUMMARY_TABLES,
    TIMELINE_TABLES,
    VIEW_TABLES,
)

# Every counter column of the summary and timeline tables.
SUMMARY_COUNTERS = frozenset({*STATS_COUNTERS, *KEYS_COUNTERS, "n"})
_COUNTED = frozenset({*SUMMARY_TABLES, *TIMELINE_TABLES})


def comparable_rows(app: Any) -> dict[str, list[str]]:
    """Every view table's rows as sorted JSON. A summary row whose counters are all zero is
    left out: the incremental upsert can leave a key at zero where a rebuild never writes it,
    and both mean the same."""
    out: dict[str, list[str]] = {}
    for table in VIEW_TABLES:
        rows = [dict(r) for r in app.db.fetchall(f"SELECT * FROM {table}")]
        if table in _COUNTED:
            rows = [r for r in rows if any(r[c] for c in SUMMARY_COUNTERS if c in r)]
        out[table] = sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)
    return out
