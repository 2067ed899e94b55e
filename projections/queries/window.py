"""A closed window "now" (deals closed in ``[closed_from, closed_to)``) from the closed-day
summary: whole days from ``rm_closed_days``, the two edge days from the current rows (an index
range of at most a day each), so the cost follows the window's length in days, not how many
deals closed in it (a CRM export replayed 100 times closes 100x as many deals a day)."""

from __future__ import annotations

from typing import Any

from projections.queries.summary import median_walk
from projections.readmodel.schema import CLOSED_TABLE, CURRENT_TABLE
from projections.readmodel.timeline import DAY_US

# Floor division by a day in SQL (``/`` truncates; a deal's duration is never negative, but the
# fold floors, so this does too; no ``%``: a placeholder character for the drivers).
_DUR = "(d.closed_at - d.opened_at)"
_DUR_DAY = f"(CASE WHEN {_DUR} >= 0 THEN {_DUR} / {DAY_US} ELSE -((-{_DUR} + {DAY_US - 1}) / {DAY_US}) END)"


def _ceil_day(us: int) -> int:
    return -(-us // DAY_US)


def closed_in_window(
    cur: Any, pipeline_id: str, closed_from: int | None, closed_to: int | None
) -> tuple[dict[str, dict[str, int]], float | None]:
    """Per status ('won', 'lost'): n, units and dur_ms of the current rows closed in the window,
    and the median days to close of the won ones (exact: the walk of :func:`median_walk`)."""
    first = None if closed_from is None else _ceil_day(closed_from)  # first whole day
    end = None if closed_to is None else closed_to // DAY_US  # after the last whole day
    if first is not None and end is not None and first >= end:
        whole: tuple[int | None, int | None] | None = None  # the window lies within a day or two
        edges = [(closed_from, closed_to)]
    else:
        whole = (first, end)
        edges = []
        if closed_from is not None and first is not None and closed_from < first * DAY_US:
            edges.append((closed_from, first * DAY_US))
        if closed_to is not None and end is not None and end * DAY_US < closed_to:
            edges.append((end * DAY_US, closed_to))
    totals: dict[str, dict[str, int]] = {}
    won_buckets: dict[int, int] = {}

    def add(status: str, bucket: int, n: int, units: int, dur_ms: int) -> None:
        found = totals.setdefault(status, {"n": 0, "units": 0, "dur_ms": 0})
        found["n"] += n
        found["units"] += units
        found["dur_ms"] += dur_ms
        if status == "won":
            won_buckets[bucket] = won_buckets.get(bucket, 0) + n

    if whole is not None:
        where: list[str] = ["pipeline_id = %s"]
        params: list[Any] = [pipeline_id]
        if whole[0] is not None:
            where.append("day >= %s")
            params.append(whole[0])
        if whole[1] is not None:
            where.append("day < %s")
            params.append(whole[1])
        for r in cur.execute(
            "SELECT status, dur_bucket, SUM(n) AS n, SUM(units) AS units, SUM(dur_ms) AS dur_ms"
            f" FROM {CLOSED_TABLE} WHERE {' AND '.join(where)} GROUP BY status, dur_bucket",
            params,
        ).fetchall():
            add(r["status"], int(r["dur_bucket"]), int(r["n"]), int(r["units"]), int(r["dur_ms"]))
    for lo, hi in edges:
        where = ["d.pipeline_id = %s", "d.status IN ('won', 'lost')"]
        params = [pipeline_id]
        if lo is not None:
            where.append("d.closed_at >= %s")
            params.append(lo)
        if hi is not None:
            where.append("d.closed_at < %s")
            params.append(hi)
        for r in cur.execute(
            f"SELECT d.status AS status, {_DUR_DAY} AS bucket, COUNT(*) AS n,"
            " COALESCE(SUM(d.amount_units), 0) AS units,"
            " COALESCE(SUM((d.closed_at - d.opened_at) / 1000), 0) AS dur_ms"
            f" FROM {CURRENT_TABLE} d WHERE {' AND '.join(where)}"
            f" GROUP BY d.status, {_DUR_DAY}",
            params,
        ).fetchall():
            bucket = int(r["bucket"]) if r["status"] == "won" else 0
            add(r["status"], bucket, int(r["n"]), int(r["units"]), int(r["dur_ms"]))
    totals = {k: v for k, v in totals.items() if v["n"]}
    won = totals.get("won", {"n": 0})["n"]
    clause, clause_params = "", []
    if closed_from is not None:
        clause += " AND closed_at >= %s"
        clause_params.append(closed_from)
    if closed_to is not None:
        clause += " AND closed_at < %s"
        clause_params.append(closed_to)
    rows = sorted((b, n) for b, n in won_buckets.items() if n)
    median = median_walk(cur, pipeline_id, rows, won, CURRENT_TABLE, (clause, clause_params))
    return totals, median
