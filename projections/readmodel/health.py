"""A projection's failures, kept in the database so that every process can show them.

The runner usually lives in its own process (``dealflow projections run``); its in-memory
``last_error`` was invisible to the API replicas, and one event it could not process (a NUL
in a name, on PostgreSQL) stalled the read models forever without a sound. The runner now
writes the failure here (and clears it once a batch goes through); ``status()`` reads it, and
``/readyz``, ``/metrics`` and the dashboard show it, with how long the projection has been
stuck at its position.
"""

from __future__ import annotations

import time
from typing import Any

TABLE = "dealflow_projection_health"
DDL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    " name TEXT PRIMARY KEY,"
    " position BIGINT NOT NULL,"
    " error TEXT NOT NULL,"
    " failures BIGINT NOT NULL,"
    " first_failed DOUBLE PRECISION NOT NULL,"  # epoch seconds (float4 is too coarse)
    " last_failed DOUBLE PRECISION NOT NULL)"
)


def create_table(db: Any) -> None:
    db.execute_script([DDL])


def record_failure(db: Any, name: str, position: int, error: str) -> None:
    now = time.time()
    with db.transaction() as cur:
        cur.execute(
            f"INSERT INTO {TABLE} (name, position, error, failures, first_failed, last_failed)"
            " VALUES (%s, %s, %s, 1, %s, %s) ON CONFLICT (name) DO UPDATE SET"
            f" error = excluded.error, failures = {TABLE}.failures + 1,"
            " last_failed = excluded.last_failed,"
            f" first_failed = CASE WHEN {TABLE}.position = excluded.position"
            f" THEN {TABLE}.first_failed ELSE excluded.first_failed END,"
            " position = excluded.position",
            (name, position, error[:2000], now, now),
        )


def clear(db: Any, name: str) -> None:
    with db.transaction() as cur:
        cur.execute(f"DELETE FROM {TABLE} WHERE name = %s", (name,))


def failures(db: Any) -> dict[str, dict[str, Any]]:
    """Per projection: the error, at which position, how often, and for how many seconds."""
    now = time.time()
    return {
        row["name"]: {
            "error": row["error"],
            "position": int(row["position"]),
            "failures": int(row["failures"]),
            "failing_for_s": round(now - float(row["first_failed"]), 1),
        }
        for row in db.fetchall(f"SELECT * FROM {TABLE}")
    }
