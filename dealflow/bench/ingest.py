"""`dealflow bench ingest`: the batch write path against raw COPY, plus single-event HTTP latency.

Needs DATABASE_URL (PostgreSQL). Each run works in a fresh scratch database (dropped afterwards
unless --keep):

1. generates N deal events as JSON dicts (a realistic mix: opened, facts, activities, stage
   changes, updates, won/lost), deal histories spread over consecutive batches;
2. times validating them exactly as ``POST /v1/events`` does (``routes_deals.to_command``) and
   sending them through ``DealflowApp.ingest`` in batches (one transaction per batch);
3. in the same run, writes the same number of rows, with the same state byte sizes, with raw
   psycopg binary COPY into a scratch table shaped like the events table (same batches);
4. unless --no-http, starts ``dealflow serve --no-projections`` on the scratch database and sends
   single events at a steady rate, reporting p50/p99 latency.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from dealflow.bench.ingest_http import run_http
from dealflow.bench.ingest_mix import batches as batches
from dealflow.bench.ingest_mix import generate
from engine.settings import Settings

# -- PostgreSQL scratch database ---------------------------------------------------------------


def _with_db(url: str, name: str) -> str:
    parts = urlparse(url)
    return urlunparse(parts._replace(path=f"/{name}"))


@contextmanager
def scratch_database(url: str, keep: bool, prefix: str = "dealflow_bench_") -> Iterator[str]:
    import psycopg

    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    admin = _with_db(url, urlparse(url).path.lstrip("/") or "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_db(url, name)
    finally:
        if not keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the two write paths -----------------------------------------------------------------------


def _validated(events: list[dict[str, Any]], batch: int, invalid: list[int]) -> Iterator[list[Any]]:
    """The events as commands, one batch at a time, validated as ``POST /v1/events`` does."""
    from engine.api.helpers import to_command
    from engine.domain.errors import DomainError

    for start in range(0, len(events), batch):
        commands = []
        for item in events[start : start + batch]:
            try:
                commands.append(to_command(item["deal_id"], item, "bench"))
            except DomainError:
                invalid[0] += 1
        yield commands


def _ingested(app: Any, batches: Iterator[list[Any]], batch: int, stream: bool) -> Iterator[Any]:
    """Each batch's outcomes: through ``ingest_stream``, or one ``ingest`` call a batch with the
    collector paused from its validation to its commit, as ``POST /v1/events`` runs it."""
    from engine.collector import paused_for

    if stream:
        yield from app.ingest_stream(batches)
        return
    while True:
        with paused_for(batch):
            commands = next(batches, None)
            if commands is None:
                return
            outcomes = app.ingest(commands)
        yield outcomes


def run_ingest(
    database_url: str,
    events: list[dict[str, Any]],
    batch: int,
    profile: str | None,
    stream: bool = False,
) -> dict[str, Any]:
    """One writer: an ``ingest`` call per batch, each validated first (as the batch endpoint
    does); or, with ``stream``, ``ingest_stream`` over the batches, which validates and
    decides the next batch while the last one is stored."""
    from engine.application import DealflowApp
    from engine.persistence.settings import StoreSettings

    app = DealflowApp(StoreSettings(database_url=database_url, home=Path(".")))
    app.pipeline_ref("default")  # install the built-in pipeline outside the timing
    app.pipeline_ref("post-purchase")
    counts = {"recorded": 0, "duplicate": 0, "rejected": 0}
    invalid = [0]
    # CPU time of this thread, not wall time: on a shared machine a wall-clock profile charges
    # every preemption to whatever function happened to be running.
    profiler = cProfile.Profile(time.thread_time) if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    for outcomes in _ingested(app, _validated(events, batch, invalid), batch, stream):
        for outcome in outcomes:
            counts[outcome.status] += 1
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    if profiler and profile:
        profiler.dump_stats(profile)
    sizes = [
        int(r["n"])
        for r in app.db.fetchall(
            f"SELECT octet_length(state) AS n FROM {app.db.events_table} ORDER BY notification_id"
        )
    ]
    stored = len(sizes)
    app.close()
    return {
        "seconds": elapsed,
        "outcomes": counts,
        "invalid": invalid[0],
        "stored_events": stored,
        "state_sizes": sizes,
    }


def _writer(
    database_url: str,
    events: list[dict[str, Any]],
    batch: int,
    stream: bool,
    barrier: Any,
    results: Any,
) -> None:
    """One writer process of the parallel run: its own application, its share of the deals."""
    from engine.application import DealflowApp
    from engine.persistence.settings import StoreSettings

    app = DealflowApp(StoreSettings(database_url=database_url, home=Path(".")))
    app.pipeline_ref("default")
    app.pipeline_ref("post-purchase")
    barrier.wait()
    started = time.perf_counter()
    recorded = 0
    for outcomes in _ingested(app, _validated(events, batch, [0]), batch, stream):
        recorded += sum(1 for o in outcomes if o.status == "recorded")
    results.put((started, time.perf_counter(), recorded))
    app.close()


def run_parallel(
    database_url: str,
    events: list[dict[str, Any]],
    batch: int,
    writers: int,
    stream: bool = False,
) -> dict[str, Any]:
    """The same events through ``writers`` processes at once, each deal in one process (as API
    replicas behind a load balancer that routes by deal would). The table lock serialises only
    the COPY; deciding runs in parallel."""
    import multiprocessing
    import zlib

    shares: list[list[dict[str, Any]]] = [[] for _ in range(writers)]
    for item in events:
        shares[zlib.crc32(item["deal_id"].encode()) % writers].append(item)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(writers)
    results = context.Queue()
    processes = [
        context.Process(target=_writer, args=(database_url, share, batch, stream, barrier, results))
        for share in shares
    ]
    for process in processes:
        process.start()
    finished = [results.get(timeout=3600) for _ in processes]
    for process in processes:
        process.join()
    seconds = max(end for _, end, _ in finished) - min(start for start, _, _ in finished)
    return {"seconds": seconds, "recorded": sum(n for _, _, n in finished)}


def run_copy(database_url: str, sizes: list[int], batch: int) -> float:
    """The same number of rows, same state sizes, raw binary COPY, one transaction per batch."""
    import psycopg

    rng = random.Random(11)
    rows = [
        (
            uuid.UUID(int=rng.getrandbits(128)),
            1 + i % 20,
            "engine.domain.deal:FactRecorded",
            rng.randbytes(n),
        )
        for i, n in enumerate(sizes)
    ]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE bench_copy (originator_id uuid NOT NULL, originator_version bigint NOT NULL,"
            " topic text NOT NULL, state bytea, notification_id bigserial,"
            " PRIMARY KEY (originator_id, originator_version))"
        )
        started = time.perf_counter()
        for start in range(0, len(rows), batch):
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy(
                    "COPY bench_copy (originator_id, originator_version, topic, state) FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(["uuid", "int8", "text", "bytea"])
                for row in rows[start : start + batch]:
                    copy.write_row(row)
        return time.perf_counter() - started


# -- single-event HTTP path --------------------------------------------------------------------


def _bench(args: argparse.Namespace) -> int:
    database_url = Settings.load().database_url
    if not database_url:
        print("dealflow bench ingest needs DATABASE_URL (PostgreSQL)", file=sys.stderr)
        return 2
    if args.preload:
        from dealflow.bench.ingest_growth import run_growth

        with scratch_database(database_url, args.keep) as url:
            growth = run_growth(url, args)
        if args.json:
            Path(args.json).write_text(json.dumps(growth, indent=2) + "\n", encoding="utf-8")
        return 0
    events = generate(args.events, args.batch)
    result: dict[str, Any] = {"events": len(events), "batch": args.batch}
    with scratch_database(database_url, args.keep) as url:
        ingest = run_ingest(url, events, args.batch, args.profile)
        copy_seconds = run_copy(url, ingest["state_sizes"], args.batch)
        sizes = ingest.pop("state_sizes")
        events_per_s = len(events) / ingest["seconds"]
        copy_rows_per_s = len(sizes) / copy_seconds
        result.update(
            events_per_s=events_per_s,
            copy_rows_per_s=copy_rows_per_s,
            ratio_vs_copy=events_per_s / copy_rows_per_s,
            ingest_seconds=ingest["seconds"],
            copy_seconds=copy_seconds,
            copy_rows=len(sizes),
            stored_events=ingest["stored_events"],
            outcomes=ingest["outcomes"],
            invalid=ingest["invalid"],
            mean_state_bytes=statistics.fmean(sizes) if sizes else 0,
        )
        print(
            f"events            {len(events):>12,}  (stored {ingest['stored_events']:,} incl. post-purchase follow-ups)"
        )
        print(f"outcomes          {ingest['outcomes']}")
        print(
            f"batch path        {events_per_s:>12,.0f} events/s  ({ingest['seconds']:.2f} s, validation included)"
        )
        print(
            f"raw COPY          {copy_rows_per_s:>12,.0f} rows/s    ({copy_seconds:.2f} s, {len(sizes):,} rows, mean {result['mean_state_bytes']:.0f} B)"
        )
        print(f"ratio_vs_copy     {result['ratio_vs_copy']:>12.3f}")
    with scratch_database(database_url, args.keep) as url:
        streamed = run_ingest(url, events, args.batch, None, stream=True)
    if streamed["outcomes"] != result["outcomes"]:
        raise SystemExit(f"the stream answered {streamed['outcomes']}, not {result['outcomes']}")
    rate = len(events) / streamed["seconds"]
    result.update(
        stream_events_per_s=rate,
        stream_seconds=streamed["seconds"],
        stream_ratio_vs_copy=rate / result["copy_rows_per_s"],
    )
    print(
        f"streamed path     {rate:>12,.0f} events/s  ({streamed['seconds']:.2f} s, ingest_stream:"
        f" the next batch decided while the last is stored; ratio_vs_copy"
        f" {result['stream_ratio_vs_copy']:.3f})"
    )
    if args.writers > 1:
        for stream in (False, True):
            with scratch_database(database_url, args.keep) as url:
                parallel = run_parallel(url, events, args.batch, args.writers, stream)
            rate = len(events) / parallel["seconds"]
            prefix = "parallel_stream" if stream else "parallel"
            result.update(
                {
                    "parallel_writers": args.writers,
                    f"{prefix}_events_per_s": rate,
                    f"{prefix}_ratio_vs_copy": rate / result["copy_rows_per_s"],
                    f"{prefix}_recorded": parallel["recorded"],
                }
            )
            label = f"{args.writers} writers" + (", streamed" if stream else "")
            print(
                f"{label:<18}{rate:>12,.0f} events/s  ({parallel['seconds']:.2f} s;"
                f" ratio_vs_copy {result[f'{prefix}_ratio_vs_copy']:.3f})"
            )
    if not args.no_http:
        with scratch_database(database_url, args.keep) as url:
            http = run_http(url, args.http_rate, args.http_seconds)
            result.update(http)
            print(
                f"HTTP single event {http['http_requests']} requests at {args.http_rate:g}/s: "
                f"p50 {http['http_p50_ms']:.1f} ms, p99 {http['http_p99_ms']:.1f} ms, statuses {http['http_statuses']}"
            )
    if args.profile:
        stats = pstats.Stats(args.profile)
        stats.sort_stats("tottime").print_stats(25)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def register(benches: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `dealflow bench ingest`."""
    parser = benches.add_parser(
        "ingest", help="batch ingest vs raw COPY, and single-event HTTP latency (PostgreSQL)"
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument(
        "--http-rate", type=float, default=50.0, help="single-event requests per second"
    )
    parser.add_argument("--http-seconds", type=float, default=10.0)
    parser.add_argument(
        "--no-http", action="store_true", help="skip the single-event HTTP measurement"
    )
    parser.add_argument(
        "--profile", help="cProfile the ingest loop into this file and print the top entries"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument(
        "--preload",
        type=int,
        default=0,
        help="write this many events first, then measure --events into the grown store with the"
        " projections running (bare / in-process / own process), beside the empty-store figures",
    )
    parser.add_argument(
        "--writers",
        type=int,
        default=2,
        help="also run the events through this many writer processes at once (1: skip)",
    )
    parser.set_defaults(func=_bench)
