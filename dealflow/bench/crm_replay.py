"""`dealflow bench crm-replay`: sustained ingest into a growing store over HTTP (issue 11).

The real CRM export (the importer's plan of ``dealflow/demo/sample_data/crm``, or ``--data``)
is replayed ``--copies K`` times through ``POST /v1/events`` of a ``dealflow serve`` started on
a fresh scratch PostgreSQL database *with its in-process projections*, as users run it
(``--workers N`` for uvicorn's API workers; the projections then run in the supervisor).
``--clients C`` keep-alive connections send batches of whole deals (about ``--batch`` events
each), copy after copy; every copy suffixes its deal and event ids (``.cK``), so each copy is
new deals in a store that keeps growing.

Printed and written to ``--json``: events/s of each copy (between one copy's completion and
the previous one's) with the projection lag then and the CPU seconds of the window (server,
API workers, PostgreSQL backends, this client, the whole machine); the empty-store figure (the
first copy); the ratio of the last copies' rate (the last tenth, at least one) to it; the
average over the whole run; the sustained rate (until the projections have caught up with the
last write, polled on ``GET /v1/projections``); relation sizes at the end. Every event must be
recorded: any answer but 200, or any item not ``recorded``, fails the bench.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dealflow.bench import proc_cpu
from dealflow.bench.served import Conn, served_process
from engine.settings import Settings

CRM_DIR = Path(__file__).resolve().parents[1] / "demo" / "sample_data" / "crm"
MARK = "@COPY@"  # in every deal and event id of a batch template; replaced by the copy's suffix


@dataclass
class Template:
    """One request of a copy, encoded once: the copy's suffix is a byte replacement."""

    body: bytes
    events: int

    def for_copy(self, k: int) -> bytes:
        return self.body.replace(MARK.encode(), f"c{k}".encode())


def plan_requests(data: Path, batch: int, deals: int = 0) -> tuple[list[Template], int, int]:
    """The export planned as the importer plans it, as request bodies of whole deals (about
    ``batch`` events each): (templates, events per copy, deals per copy). ``deals`` > 0 keeps
    only the first that many deals (for a quick run)."""
    from engine.domain.defaults import DEFAULT_PIPELINE_ID, built_in
    from engine.importers.crm import Export, plan

    built = plan(Export.load(data), built_in(DEFAULT_PIPELINE_ID), DEFAULT_PIPELINE_ID)
    chosen = built.deals[:deals] if deals else built.deals
    templates: list[Template] = []
    items: list[dict[str, Any]] = []

    def flush() -> None:
        if items:
            templates.append(Template(json.dumps({"events": items}).encode(), len(items)))
            items.clear()

    for commands in chosen:
        if items and len(items) + len(commands) > batch:
            flush()
        for command in commands:
            body = command.payload.model_dump(mode="json", exclude_unset=True)
            body["deal_id"] = f"{command.deal_id}.{MARK}"
            body["event_id"] = f"{command.event_id}.{MARK}"
            items.append(body)
    flush()
    return templates, sum(t.events for t in templates), len(chosen)


@dataclass
class Run:
    """What the clients and the poller share while the bench runs."""

    templates: list[Template]
    copies: int
    started: float = 0.0
    stop_queueing_at: float = float("inf")
    next_request: int = 0
    done_per_copy: dict[int, int] = field(default_factory=dict)
    completed: list[tuple[int, float]] = field(default_factory=list)  # (copy, when)
    statuses: dict[str, int] = field(default_factory=dict)
    http: dict[int, int] = field(default_factory=dict)
    recorded: int = 0
    head: int = 0
    lag: int | None = None
    lag_samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, head, lag)
    failure: str | None = None

    def take(self) -> tuple[int, Template] | None:
        """The next request of the copies in order, or None when done (or past the cap)."""
        n = self.next_request
        if n >= self.copies * len(self.templates) or self.failure:
            return None
        if n % len(self.templates) == 0 and time.perf_counter() >= self.stop_queueing_at:
            return None  # a new copy would start after --max-seconds: stop at a whole copy
        self.next_request += 1
        return divmod(n, len(self.templates))[0], self.templates[n % len(self.templates)]


async def _client(run: Run, port: int, token: str, on_copy: Any) -> None:
    conn = await Conn.open(port, token)
    try:
        while (job := run.take()) is not None:
            k, template = job
            status, payload, _ = await conn.request("POST", "/v1/events", template.for_copy(k))
            run.http[status] = run.http.get(status, 0) + 1
            if status != 200:
                run.failure = f"copy {k}: HTTP {status} {payload[:300]!r}"
                return
            answer = json.loads(payload)
            for item in answer["results"]:
                run.statuses[item["status"]] = run.statuses.get(item["status"], 0) + 1
                if item["status"] != "recorded" and run.failure is None:
                    run.failure = f"copy {k}: an item was {item['status']}: {item}"
            run.recorded += sum(1 for i in answer["results"] if i["status"] == "recorded")
            run.head = max(run.head, answer.get("position") or 0)
            run.done_per_copy[k] = run.done_per_copy.get(k, 0) + 1
            if run.done_per_copy[k] == len(run.templates):
                run.completed.append((k, time.perf_counter()))
                on_copy(k)
    finally:
        conn.close()


async def _get(port: int, token: str, path: str) -> dict[str, Any]:
    """One GET on a connection of its own (an idle keep-alive one is closed by the server)."""
    conn = await Conn.open(port, token)
    try:
        status, payload, _ = await conn.request("GET", path)
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"GET {path}: {status} {payload[:200]!r}")
    answer: dict[str, Any] = json.loads(payload)
    return answer


async def _poller(run: Run, port: int, token: str, every: float, stop: asyncio.Event) -> None:
    """The largest lag of any projection, as ``GET /v1/projections`` reports it, every so often."""
    while not stop.is_set():
        body = await _get(port, token, "/v1/projections")
        run.lag = max((int(p["lag"]) for p in body["projections"]), default=0)
        at = round(time.perf_counter() - run.started, 2)
        run.lag_samples.append((at, int(body["head"]), run.lag))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def _drain(port: int, token: str, head: int, timeout: float) -> float | None:
    """Seconds until every projection has processed ``head`` (None after ``timeout``)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        body = await _get(port, token, f"/v1/projections/wait?position={head}&timeout=30")
        if body["reached"]:
            return time.perf_counter() - started
    return None


def _sizes(url: str) -> dict[str, Any]:
    """Bytes of the events table and its indexes, the idempotency keys, the read models, the
    whole database."""
    import psycopg

    sizes: dict[str, Any] = {"events": 0, "events_indexes": 0, "keys": 0, "keys_indexes": 0}
    sizes["read_models"] = 0
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND n.nspname = current_schema()"
        ).fetchall()
        relations = sorted(rows, key=lambda r: -(int(r[1]) + int(r[2])))
        sizes["largest"] = {
            str(n): {"heap": int(h), "indexes": int(i)} for n, h, i in relations[:12]
        }
        for name, heap, idx in rows:
            if name.endswith("events") and not name.startswith("rm_"):
                sizes["events"] += int(heap)
                sizes["events_indexes"] += int(idx)
            elif name == "dealflow_idempotency":
                sizes["keys"] += int(heap)
                sizes["keys_indexes"] += int(idx)
            elif name.startswith("rm_"):
                sizes["read_models"] += int(heap) + int(idx)
        total = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        sizes["database"] = int(total[0]) if total else 0
    return sizes


class Windows:
    """One row per copy completed: its rate, the projection lag then, the CPU of the window."""

    def __init__(self, run: Run, per_copy: int, server_pid: int, database: str) -> None:
        self.run, self.per_copy, self.pid, self.database = run, per_copy, server_pid, database
        self.rows: list[dict[str, Any]] = []
        self.cpu = proc_cpu.sample(server_pid, database)
        self.threads = proc_cpu.thread_cpu(server_pid)
        self.names: dict[int, str] = {}
        self.since = time.perf_counter()

    def close(self, k: int) -> None:
        now = time.perf_counter()
        cpu = proc_cpu.sample(self.pid, self.database)
        seconds = now - self.since
        c = proc_cpu.delta(cpu, self.cpu)
        threads = proc_cpu.thread_cpu(self.pid)
        busy = {t: round(v - self.threads.get(t, 0.0), 2) for t, v in threads.items()}
        row = {
            "copy": k,
            "seconds": round(seconds, 3),
            "events_per_s": round(self.per_copy / seconds, 1),
            "events_so_far": self.per_copy * len(self.run.completed),
            "elapsed_s": round(now - self.run.started, 2),
            "projection_lag": self.run.lag,
            "cpu_s": c,
            # By thread id here; named once the run ends (see ``name_threads``).
            "server_threads_cpu_s": {t: v for t, v in busy.items() if v >= 0.05},
        }
        self.rows.append(row)
        self.since, self.cpu, self.threads = now, cpu, threads
        if len(self.rows) % 10 == 1:
            # The request threads come and go: name them while they run (after this window's
            # clock was read, so that the dump is not counted in it).
            self.names.update(proc_cpu.thread_names(self.pid))
        lag = "-" if self.run.lag is None else f"{self.run.lag:,}"
        print(
            f"{k:>4} {row['events_per_s']:>9,.0f} {row['events_so_far']:>13,}"
            f" {row['elapsed_s']:>8.0f} {lag:>9}"
            f" | {c['server']:6.1f} {c['api_workers']:5.1f} {c['postgres']:6.1f}"
            f" {c['client']:5.1f} {c['machine']:6.1f}",
            flush=True,
        )


def replay(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Serve ``url`` and replay the export ``args.copies`` times; the figures (printed too)."""
    templates, per_copy, deals = plan_requests(Path(args.data), args.batch, args.deals)
    token = f"bench-{uuid.uuid4().hex}"
    database = url.rsplit("/", 1)[-1]
    run = Run(templates, args.copies)
    print(
        f"replaying {deals:,} deals / {per_copy:,} events per copy, {args.copies} copies,"
        f" {len(templates)} requests per copy, {args.clients} clients, serve --workers"
        f" {args.workers} with its projections; load average {os.getloadavg()}",
        flush=True,
    )
    print("copy  events/s  total events  elapsed  lag  | CPU s: server api pg client machine")
    with served_process(url, args.workers, token, projections=True) as (port, server):
        windows = Windows(run, per_copy, server.pid, database)

        async def main() -> tuple[float, float | None]:
            stop = asyncio.Event()
            run.started = windows.since = time.perf_counter()
            if args.max_seconds:
                run.stop_queueing_at = run.started + args.max_seconds
            poller = asyncio.create_task(_poller(run, port, token, args.poll, stop))
            await asyncio.gather(
                *(_client(run, port, token, windows.close) for _ in range(args.clients))
            )
            written = time.perf_counter() - run.started
            stop.set()
            await poller
            drained = None if run.failure else await _drain(port, token, run.head, 1800)
            return written, drained

        written, drained = asyncio.run(main())
        threads = proc_cpu.thread_cpu(server.pid)
        names = {**windows.names, **proc_cpu.thread_names(server.pid)}
    for row in windows.rows:
        row["server_threads_cpu_s"] = proc_cpu.by_name(row["server_threads_cpu_s"], names)
    if run.failure:
        raise SystemExit(f"crm-replay failed: {run.failure}")
    done = len(run.completed)
    events = per_copy * done
    empty = windows.rows[0]["events_per_s"]
    tail = windows.rows[-max(1, done // 10) :]
    last_rate = sum(w["seconds"] for w in tail) and per_copy * len(tail) / sum(
        w["seconds"] for w in tail
    )
    sustained_s = written + (drained or 0.0)
    result: dict[str, Any] = {
        "copies_asked": args.copies,
        "copies_done": done,
        "stopped_by_max_seconds": done < args.copies,
        "deals_per_copy": deals,
        "events_per_copy": per_copy,
        "events": events,
        "deals": deals * done,
        "clients": args.clients,
        "workers": args.workers,
        "batch": args.batch,
        "requests_per_copy": len(templates),
        "http_statuses": {str(k): v for k, v in sorted(run.http.items())},
        "item_statuses": run.statuses,
        "recorded": run.recorded,
        "head_position": run.head,
        "empty_store_events_per_s": empty,
        "last_copies": len(tail),
        "last_copies_events_per_s": round(last_rate, 1),
        "last_ratio_vs_empty": round(last_rate / empty, 3),
        "write_seconds": round(written, 2),
        "average_events_per_s": round(events / written, 1),
        "projection_drain_s": round(drained, 2) if drained is not None else None,
        "sustained_events_per_s": round(events / sustained_s, 1) if drained is not None else None,
        "sustained_ratio_vs_empty": (
            round(events / sustained_s / empty, 3) if drained is not None else None
        ),
        # While writing, summed over the windows: the in-process projection runner
        # ("projection-*") beside the API's request threads ("AnyIO worker thread", which
        # come and go) and the event loop ("MainThread").
        "server_threads_cpu_s": _summed(windows.rows),
        # The threads alive at the end, over their whole life (the drain included).
        "server_threads_cpu_s_at_end": proc_cpu.by_name(threads, names),
        "cpu_s_total": {
            key: round(sum(w["cpu_s"][key] for w in windows.rows), 1)
            for key in windows.rows[0]["cpu_s"]
        },
        "windows": windows.rows,
        "lag_samples": run.lag_samples,
        "sizes_end": _sizes(url),
        "load_average_end": os.getloadavg(),
    }
    _print_summary(result)
    return result


def _summed(rows: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in rows:
        for name, seconds in row["server_threads_cpu_s"].items():
            out[name] = round(out.get(name, 0.0) + seconds, 2)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _print_summary(r: dict[str, Any]) -> None:
    mib = {k: v / 2**20 for k, v in r["sizes_end"].items() if isinstance(v, int)}
    print(
        f"recorded          {r['recorded']:,} of {r['events']:,} events"
        f" ({r['copies_done']} copies, {r['deals']:,} deals); HTTP {r['http_statuses']}\n"
        f"empty store       {r['empty_store_events_per_s']:>9,.0f} events/s (first copy)\n"
        f"last {r['last_copies']:<3} copies    {r['last_copies_events_per_s']:>9,.0f} events/s"
        f"  ratio vs empty {r['last_ratio_vs_empty']:.2f}\n"
        f"average           {r['average_events_per_s']:>9,.0f} events/s over {r['write_seconds']:.0f} s\n"
        f"sustained         {r['sustained_events_per_s'] or 0:>9,.0f} events/s  ratio vs empty"
        f" {r['sustained_ratio_vs_empty'] or 0:.2f} (the projections caught up"
        f" {r['projection_drain_s']} s after the last write)\n"
        f"sizes at the end: events {mib['events']:,.0f} MiB + indexes {mib['events_indexes']:,.0f}"
        f" MiB; idempotency keys {mib['keys']:,.0f} MiB + index {mib['keys_indexes']:,.0f} MiB;"
        f" read models {mib['read_models']:,.0f} MiB; database {mib['database']:,.0f} MiB\n"
        f"CPU s while writing: {r['cpu_s_total']}\n"
        f"server threads' CPU s while writing: {dict(list(r['server_threads_cpu_s'].items())[:6])}\n"
        f"load average at the end {r['load_average_end']}",
        flush=True,
    )


def _bench(args: argparse.Namespace) -> int:
    from dealflow.bench.ingest import scratch_database

    database_url = Settings.load().database_url
    if not database_url:
        print("dealflow bench crm-replay needs DATABASE_URL (PostgreSQL)", file=sys.stderr)
        return 2
    with scratch_database(database_url, args.keep, prefix=args.db_prefix) as url:
        result = replay(url, args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def register(benches: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `dealflow bench crm-replay`."""
    parser = benches.add_parser(
        "crm-replay",
        help="sustained ingest into a growing store: the CRM export K times through"
        " POST /v1/events of `serve` with its projections (PostgreSQL)",
    )
    parser.add_argument("--copies", type=int, default=100, help="replays of the export (K)")
    parser.add_argument("--clients", type=int, default=2, help="concurrent connections")
    parser.add_argument("--workers", type=int, default=1, help="serve --workers N")
    parser.add_argument("--batch", type=int, default=5000, help="events per request (at most)")
    parser.add_argument("--data", default=str(CRM_DIR), help="the CRM export's directory")
    parser.add_argument("--deals", type=int, default=0, help="only the first N deals (0: all)")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=0.0,
        help="start no new copy after this many seconds (0: no limit); the figures cover the"
        " copies done",
    )
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between lag polls")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument(
        "--db-prefix", default="dealflow_bench_", help="name prefix of the scratch database"
    )
    parser.set_defaults(func=_bench)
