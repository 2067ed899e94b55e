"""The read models as comparable data: what "the incremental read models equal a rebuild"
means, for the tests and the crash check alike."""

from __future__ import annotations

import json
from typing import Any

from projections.readmodel.schema import VIEW_TABLES


def comparable_rows(app: Any) -> dict[str, list[str]]:
    """Every view table's rows, all of them, as sorted JSON. (Neither the incremental runner
    nor a rebuild keeps a summary key whose counters are all zero, so no row is left out.)"""
    out: dict[str, list[str]] = {}
    for table in VIEW_TABLES:
        rows = [dict(r) for r in app.db.fetchall(f"SELECT * FROM {table}")]
        out[table] = sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)
    return out
