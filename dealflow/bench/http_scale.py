"""`dealflow bench http`: writes through real `dealflow serve --workers N` processes.

Each run gets a fresh scratch PostgreSQL database and its own ``serve --workers N
--no-projections``. C clients, each on one keep-alive connection, send single events (or
batches of K with ``--batch K``) back to back for a few seconds (closed loop): events/s and
p50/p95/p99 latency. The same load against ``--workers 1`` in the same invocation is the
baseline for the ratio. ``--find-max`` instead offers a rising rate of single events (open
loop, a request every 1/rate s whatever the answers do, latency counted from when the
request was due) and reports the highest step that kept p99 within ``--max-p99-ms``.

The client is a minimal HTTP/1.1 writer on asyncio streams, so that the load generator,
which shares the machine's cores with the server and PostgreSQL, costs little CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from dealflow.bench.figures import percentile
from dealflow.bench.ingest import scratch_database
from dealflow.bench.served import Conn, serving
from engine.settings import Settings

DEALS_PER_CLIENT = 20
WARMUP_S = 2.0


def _event(n: int) -> dict[str, Any]:
    if n % 3:
        return {"type": "activity_logged", "event_id": f"e-{n}", "activity": "email"}
    return {"type": "fact_recorded", "event_id": f"e-{n}", "fact": "need", "value": bool(n % 2)}


async def _open_deals(port: int, token: str, deals: list[str]) -> None:
    conn = await Conn.open(port, token)
    try:
        for start in range(0, len(deals), 1000):
            events = [
                {"deal_id": d, "type": "opened", "event_id": f"{d}-open", "pipeline_id": "default"}
                | {"name": d}
                for d in deals[start : start + 1000]
            ]
            status, body, _ = await conn.request("POST", "/v1/events", {"events": events})
            if status >= 300:
                raise RuntimeError(f"opening the bench deals: {status} {body[:200]!r}")
    finally:
        conn.close()


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.events = 0

    def add(self, status: int, ms: float, events: int) -> None:
        self.latencies.append(ms)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            self.events += events

    def figures(self, seconds: float) -> dict[str, Any]:
        return {
            "requests": len(self.latencies),
            "events": self.events,
            "seconds": seconds,
            "events_per_s": self.events / seconds if seconds else 0.0,
            "p50_ms": percentile(self.latencies, 0.50),
            "p95_ms": percentile(self.latencies, 0.95),
            "p99_ms": percentile(self.latencies, 0.99),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


async def closed_loop(
    port: int, token: str, clients: int, seconds: float, batch: int, warmup: float = 1.0
) -> dict[str, Any]:
    """``clients`` connections each writing back to back; figures from after ``warmup``."""
    deals = [[f"c{c}-d{j}" for j in range(DEALS_PER_CLIENT)] for c in range(clients)]
    await _open_deals(port, token, [d for own in deals for d in own])
    tally = Tally()
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds

    async def client(c: int) -> None:
        conn = await Conn.open(port, token)
        n = 0
        try:
            while (now := time.perf_counter()) < stop_at:
                if batch == 1:
                    deal = deals[c][n % DEALS_PER_CLIENT]
                    path, body = f"/v1/deals/{deal}/events", _event(n) | {"event_id": f"{c}-{n}"}
                else:
                    path = "/v1/events"
                    body = {
                        "events": [
                            _event(n + i)
                            | {"deal_id": deals[c][(n + i) % DEALS_PER_CLIENT]}
                            | {"event_id": f"{c}-{n + i}"}
                            for i in range(batch)
                        ]
                    }
                status, _, _ = await conn.request("POST", path, body)
                done = time.perf_counter()
                if now >= measure_from:
                    tally.add(status, (done - now) * 1000, batch)
                n += batch
        finally:
            conn.close()

    await asyncio.gather(*(client(c) for c in range(clients)))
    return tally.figures(time.perf_counter() - measure_from)


async def open_loop(port: int, token: str, rate: float, seconds: float, n0: int) -> dict[str, Any]:
    """Single events offered at ``rate``/s for ``seconds`` on a pool of connections (a new
    one when all are busy); latency from when each request was due."""
    deals = [f"o-d{j}" for j in range(200)]
    if n0 == 0:
        await _open_deals(port, token, deals)
    idle: list[Conn] = []
    tally = Tally()
    tasks: list[asyncio.Task[None]] = []

    async def send(n: int, due: float) -> None:
        conn = idle.pop() if idle else await Conn.open(port, token)
        body = _event(n) | {"event_id": f"o-{n}"}
        status, _, _ = await conn.request("POST", f"/v1/deals/{deals[n % len(deals)]}/events", body)
        tally.add(status, (time.perf_counter() - due) * 1000, 1)
        idle.append(conn)

    total = int(rate * seconds)
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(n0 + i, due)))
    await asyncio.wait(tasks, timeout=30)
    wall = time.perf_counter() - start
    for conn in idle:
        conn.close()
    return tally.figures(wall) | {"offered_per_s": rate}


def _line(label: str, f: dict[str, Any]) -> str:
    return (
        f"{label:<24} {f['events_per_s']:>9,.0f} events/s  p50 {f['p50_ms']:6.1f}  "
        f"p95 {f['p95_ms']:6.1f}  p99 {f['p99_ms']:6.1f} ms  ({f['requests']} requests, "
        f"statuses {f['statuses']})"
    )


def _bench(args: argparse.Namespace) -> int:
    database_url = Settings.load().database_url
    if not database_url:
        print("dealflow bench http needs DATABASE_URL (PostgreSQL)", file=sys.stderr)
        return 2
    token = f"bench-{uuid.uuid4().hex}"
    counts = sorted({1, args.workers})
    result: dict[str, Any] = {"clients": args.clients, "batch": args.batch, "runs": {}}
    mode = "single events" if args.batch == 1 else f"batches of {args.batch}"
    key = "max_rate" if args.find_max else "events_per_s"
    # Rounds alternate the worker counts, so that a burst of other load on the shared
    # machine falls on both sides of the ratio; the figures are each side's median.
    for round_ in range(args.repeat):
        for workers in counts:
            label = f"workers {workers}" + (f" round {round_ + 1}" if args.repeat > 1 else "")
            with scratch_database(database_url, False) as url, serving(url, workers, token) as port:
                if args.find_max:
                    steps, best = _find_max(port, token, args)
                    figures = {"steps": steps, "max_rate": best}
                    print(
                        f"{label}: max sustained {best:,.0f} events/s with p99 <= "
                        f"{args.max_p99_ms:g} ms",
                        flush=True,
                    )
                else:
                    figures = asyncio.run(
                        closed_loop(port, token, args.clients, args.seconds, args.batch)
                    )
                    print(_line(f"{label} ({mode})", figures), flush=True)
            result["runs"].setdefault(workers, []).append(figures)
    medians = {w: statistics.median(r[key] for r in runs) for w, runs in result["runs"].items()}
    result["median_" + key] = medians
    if len(counts) > 1:
        base, scaled = medians[1], medians[args.workers]
        result["ratio_vs_1_worker"] = scaled / base if base else float("nan")
        print(
            f"median {key}: "
            + ", ".join(f"workers {w} {v:,.0f}" for w, v in medians.items())
            + f"; ratio workers {args.workers} / 1: {result['ratio_vs_1_worker']:.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def _find_max(port: int, token: str, args: argparse.Namespace) -> tuple[list[Any], float]:
    """Step the offered rate up by ``--rate-factor`` until p99 or the achieved rate fails."""
    steps: list[dict[str, Any]] = []
    best, rate, sent, failures = 0.0, float(args.rate), 0, 0
    # Warm up unmeasured: each worker's first requests open its pool's connections and load
    # what it loads lazily, which would otherwise fail the first step.
    asyncio.run(open_loop(port, token, rate, WARMUP_S, sent))
    sent += int(rate * WARMUP_S)
    for _ in range(args.steps):
        offered = int(rate * args.step_seconds)
        f = asyncio.run(open_loop(port, token, rate, args.step_seconds, sent))
        sent += offered
        errors = sum(v for k, v in f["statuses"].items() if not k.startswith("2"))
        # Every request answered, none refused, and p99 (from when each was due) in bounds.
        ok = f["p99_ms"] <= args.max_p99_ms and not errors and f["requests"] == offered
        steps.append(f | {"ok": ok})
        print(_line(f"  offered {rate:,.0f}/s {'ok' if ok else 'FAIL'}", f), flush=True)
        if not ok:
            failures += 1
            if failures > args.retries:
                break
            continue  # the same rate again: one burst of other load is not the limit
        best, rate = rate, rate * args.rate_factor
    return steps, best


def register(benches: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `dealflow bench http`."""
    parser = benches.add_parser(
        "http", help="writes through `serve --workers N` vs 1 worker (PostgreSQL)"
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections")
    parser.add_argument("--workers", type=int, default=2, help="API processes (1 is the baseline)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--batch", type=int, default=1, help="events per request (1: single)")
    parser.add_argument(
        "--find-max", action="store_true", help="step an offered single-event rate up instead"
    )
    parser.add_argument("--rate", type=float, default=50.0, help="--find-max: first rate")
    parser.add_argument("--rate-factor", type=float, default=1.25, help="--find-max: step")
    parser.add_argument("--steps", type=int, default=12, help="--find-max: at most")
    parser.add_argument("--step-seconds", type=float, default=5.0, help="--find-max: per step")
    parser.add_argument("--max-p99-ms", type=float, default=50.0, help="--find-max: p99 limit")
    parser.add_argument(
        "--retries", type=int, default=1, help="--find-max: failed steps tried again (in all)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds, worker counts alternating (medians)"
    )
    parser.add_argument("--json", help="write the figures to this file")
    parser.set_defaults(func=_bench)
