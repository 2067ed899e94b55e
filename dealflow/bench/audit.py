"""Audit benchmarks: `dealflow bench export` (peak memory of a full export) and
`dealflow bench chain` (what the hash chain costs the ingest path).

Both print figures against a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

from engine.application import DealflowApp
from engine.domain.deal_events import DEAL_TOPIC_PREFIXES
from engine.persistence.settings import StoreSettings
from engine.settings import Settings


@contextlib.contextmanager
def scratch_store(database_url: str | None) -> Iterator[StoreSettings]:
    """A fresh, empty store on the same server (a new PostgreSQL database, or a temp dir)."""
    with tempfile.TemporaryDirectory() as home:
        if not database_url:
            yield StoreSettings(database_url=None, home=Path(home))
            return
        base, _, _ = database_url.rpartition("/")
        name = f"dealflow_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield StoreSettings(database_url=f"{base}/{name}", home=Path(home))
        finally:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _deal_events(app: DealflowApp) -> int:
    row = app.db.fetchone(
        f"SELECT count(*) AS n FROM {app.db.events_table} WHERE topic LIKE %s OR topic LIKE %s",
        tuple(f"{prefix}%" for prefix in DEAL_TOPIC_PREFIXES),
    )
    return int(row["n"])


def _child_peak_rss(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``dealflow <args>`` in a child; its peak RSS in MiB and its wall time."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dealflow", *args], env=env, stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"dealflow {' '.join(args)} exited {proc.returncode}")
    return usage.ru_maxrss / 1024, time.perf_counter() - started


def bench_export(args: argparse.Namespace) -> int:
    from dealflow.bench.audit_sample import populate

    settings = StoreSettings.from_env()
    app = DealflowApp(settings)
    have = _deal_events(app)
    if have < args.events:
        print(f"populating: {have} deal events stored, adding {args.events - have} ...", flush=True)
        started = time.perf_counter()
        populate(app, args.events - have, prefix=f"bench-{uuid.uuid4().hex[:6]}")
        print(f"  ingested in {time.perf_counter() - started:.1f}s", flush=True)
    total = _deal_events(app)
    app.close()
    env = dict(os.environ)
    output = os.devnull
    one_deal_rss, _ = _child_peak_rss(
        ["audit", "export", "--deal", "no-such-deal", "-o", output], env
    )
    peak, seconds = _child_peak_rss(["audit", "export", "--format", args.format, "-o", output], env)
    print(
        f"export of {total} deal events ({args.format}) on {settings.backend}: {seconds:.1f}s,"
        f" {total / seconds:,.0f} events/s"
    )
    print(
        f"peak RSS: {peak:.1f} MiB (baseline, process exporting nothing: {one_deal_rss:.1f} MiB;"
        f" growth {peak - one_deal_rss:+.1f} MiB)"
    )
    return 0


def _ingest_seconds(
    settings: StoreSettings, events: int, batch: int, *, constant_hash: bool
) -> tuple[float, float]:
    """Wall time and this process's CPU time (PostgreSQL's own work is not in it) of the ingest."""
    from dealflow.bench.audit_sample import command_stream
    from engine.domain.deal import DealEvent
    from engine.domain.events import GENESIS_HASH

    original = DealEvent.content_hash
    if constant_hash:
        DealEvent.content_hash = lambda self, previous_hash, data=None, times=None: GENESIS_HASH  # type: ignore[method-assign]
    app = DealflowApp(settings)
    try:
        commands = list(command_stream(events, prefix="chain"))
        app.pipeline_ref("default")  # install the built-in pipelines outside the timing
        app.pipeline_ref("post-purchase")
        started, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(commands), batch):
            app.ingest(commands[start : start + batch])
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        DealEvent.content_hash = original  # type: ignore[method-assign]
        app.close()


def bench_chain(args: argparse.Namespace) -> int:
    url = Settings.load().database_url
    wall: dict[str, list[float]] = {"chained": [], "constant": []}
    cpu: dict[str, list[float]] = {"chained": [], "constant": []}
    # Warm up (imports, pydantic validators, the connection pool) outside every timing.
    with scratch_store(url) as settings:
        _ingest_seconds(settings, min(args.events, 5000), args.batch, constant_hash=False)
    for round_ in range(args.rounds):
        # Alternate which goes first, so warm caches favour neither.
        order = ("chained", "constant") if round_ % 2 == 0 else ("constant", "chained")
        for variant in order:
            with scratch_store(url) as settings:
                seconds, cpu_seconds = _ingest_seconds(
                    settings, args.events, args.batch, constant_hash=variant == "constant"
                )
            wall[variant].append(seconds)
            cpu[variant].append(cpu_seconds)
            print(
                f"round {round_ + 1} {variant:<8} {args.events} events: {seconds:.2f}s wall,"
                f" {cpu_seconds:.2f}s cpu ({args.events / seconds:,.0f}/s)",
                flush=True,
            )
    store = "postgres" if url else "sqlite"
    print(
        f"ingest of {args.events} events in batches of {args.batch} ({store}), {args.rounds} rounds:"
    )
    for label, figures in (("wall", wall), ("process cpu", cpu)):
        for pick, fn in (("median", statistics.median), ("best", min)):
            chained, constant = fn(figures["chained"]), fn(figures["constant"])
            print(
                f"  {label:<11} {pick:<6}: chained {chained:.2f}s, constant hash {constant:.2f}s,"
                f" overhead {100 * (chained - constant) / constant:+.1f}%"
            )
    return 0


def register(benches: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    export = benches.add_parser(
        "export", help="peak RSS of a full audit export (populates the store up to --events)"
    )
    export.add_argument("--events", type=int, default=1_000_000)
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.set_defaults(func=bench_export)

    chain = benches.add_parser(
        "chain", help="ingest time with the hash chain vs with hashing replaced by a constant"
    )
    chain.add_argument("--events", type=int, default=50_000)
    chain.add_argument("--batch", type=int, default=5000)
    chain.add_argument("--rounds", type=int, default=3)
    chain.set_defaults(func=bench_chain)
