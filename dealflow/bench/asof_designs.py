"""`dealflow bench asof-designs`: the two designs for "as of" questions, measured on the same
store and moments (see docs/ENGINEERING.md for the choice)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from dealflow.bench.projections import _latencies, _moments, _services, _write


def bench_asof_designs(json_path: str | None, repeat: int) -> int:
    """The two "as of" designs on the data in the store, for the same past moments: (A) the
    business-time buckets plus the moment's day (what the read side uses) against (B) a covering
    index over the history rows that lets PostgreSQL count every row valid at the moment with an
    index-only range scan; the per-stage figures of both are checked equal. The index of (B) is
    built for the run and dropped afterwards."""
    from projections.queries.timeline import _STATE_SQL, STATE_COUNTERS, stats_at
    from projections.readmodel.records import to_us

    app, service = _services()
    service.catch_up()
    row = app.db.fetchone(
        "SELECT pipeline_id FROM rm_deals GROUP BY pipeline_id ORDER BY COUNT(*) DESC LIMIT 1"
    )
    pipeline_id = row["pipeline_id"]
    moments = [
        to_us(datetime.fromisoformat(m.replace("Z", "+00:00")))
        for m in _moments(app, pipeline_id, 8)
    ]
    cover = "rm_deal_history_cover_bench"
    started = time.perf_counter()
    with app.db.transaction() as cur:
        cur.execute(
            f"CREATE INDEX IF NOT EXISTS {cover} ON rm_deal_history (pipeline_id, valid_from)"
            " INCLUDE (valid_to, stage, status, amount_units, opened_at, closed_at, flagged_stale)"
        )
    build_s = time.perf_counter() - started
    import psycopg

    with psycopg.connect(str(app.settings.database_url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE rm_deal_history")  # index-only scans need the visibility map
    sums = ", ".join(f"SUM({e}) AS {c}" for c, e in _STATE_SQL.items())
    b_sql = (
        f"SELECT d.stage AS stage, {sums} FROM rm_deal_history d WHERE d.pipeline_id = %s"
        " AND d.valid_from <= %s AND (d.valid_to IS NULL OR d.valid_to > %s) GROUP BY d.stage"
    )
    turn = iter(range(10**9))

    def design_a() -> dict[str, list[int]]:
        at = moments[next(turn) % len(moments)]
        with app.db.reading() as cur:
            found = stats_at(cur, pipeline_id, at)
        return {s: [v[c] for c in STATE_COUNTERS] for s, v in found.items() if v["deals"]}

    def design_b(at: int | None = None) -> dict[str, list[int]]:
        at = moments[next(turn) % len(moments)] if at is None else at
        with app.db.reading() as cur:
            rows = cur.execute(b_sql, (pipeline_id, at, at)).fetchall()
        return {r["stage"]: [int(r[c]) for c in STATE_COUNTERS] for r in rows if r["deals"]}

    for at in moments:  # the two designs agree before they are timed
        with app.db.reading() as cur:
            a = stats_at(cur, pipeline_id, at)
        assert {s: [v[c] for c in STATE_COUNTERS] for s, v in a.items() if v["deals"]} == (
            design_b(at)
        ), at
    result: dict[str, Any] = {"pipeline_id": pipeline_id, "cover_index_build_s": round(build_s, 2)}
    turn = iter(range(10**9))
    result["a_buckets"] = _latencies(design_a, repeat)
    turn = iter(range(10**9))
    result["b_covering_index"] = _latencies(design_b, repeat)
    sizes = app.db.fetchone(
        "SELECT pg_total_relation_size('rm_stage_stats_t') + pg_total_relation_size('rm_breakdown_t')"
        " + pg_total_relation_size('rm_visit_sets_t') + pg_total_relation_size('rm_won_buckets_t')"
        f" AS a, pg_relation_size('{cover}') AS b"
    )
    result["a_tables_mib"] = round(int(sizes["a"]) / 2**20, 1)
    result["b_index_mib"] = round(int(sizes["b"]) / 2**20, 1)
    with app.db.transaction() as cur:
        cur.execute(f"DROP INDEX IF EXISTS {cover}")
    for name in ("a_buckets", "b_covering_index"):
        print(
            f"{name:18s} p50 {result[name]['p50_ms']:8.1f} ms   p95 {result[name]['p95_ms']:8.1f} ms"
        )
    ratio = result["b_covering_index"]["p95_ms"] / max(result["a_buckets"]["p95_ms"], 0.01)
    result["b_over_a_p95"] = round(ratio, 1)
    print(
        f"covering index / buckets (p95): {ratio:.1f}x; storage {result['a_tables_mib']} MiB"
        f" (buckets, all four tables) vs {result['b_index_mib']} MiB (one index)"
    )
    _write(json_path, result)
    return 0
