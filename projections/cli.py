"""``dealflow projections run|status|rebuild`` and ``dealflow bench project|query``."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from typing import Any

from engine.ops_server import start_from_env


def _service(run: bool) -> Any:
    from engine.application import DealflowApp
    from engine.persistence.settings import StoreSettings
    from projections.runtime import ProjectionsService

    return ProjectionsService(DealflowApp(StoreSettings.from_env()), run=run)


def _run(_: argparse.Namespace) -> int:
    """Keep the read models current until SIGTERM or Ctrl-C (a batch in flight completes or
    rolls back; either way the tracked position stays exact)."""
    service = _service(run=True)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    service.start()
    ops = start_from_env(
        ready=lambda: service.app.max_position() >= 0,
        metrics=lambda: {
            f'dealflow_projection_lag{{projection="{item["name"]}"}}': float(item["lag"])
            for item in service.status()
        },
    )
    print(f"projections running: {', '.join(service.names)}", flush=True)
    while not stopping.wait(1.0):
        pass
    if ops is not None:
        ops.stop()
    service.stop()
    service.app.close()
    print("projections stopped", flush=True)
    return 0


def _status(args: argparse.Namespace) -> int:
    service = _service(run=False)
    items = service.status()
    if args.json:
        print(json.dumps(items))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("projection", "position", "head", "lag")
    for item in items:
        table.add_row(item["name"], str(item["position"]), str(item["head"]), str(item["lag"]))
    Console().print(table)
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    service = _service(run=False)
    if args.name is not None and args.name not in service.names:
        print(f"unknown projection {args.name!r}; known: {', '.join(service.names)}")
        return 2
    head = service.app.max_position()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
    ) as bar:
        task = bar.add_task(f"rebuilding {args.name or 'all read models'}", total=head)
        service.rebuild(args.name, progress=lambda position: bar.update(task, completed=position))
        bar.update(task, completed=head)
    print(f"rebuilt up to position {head}")
    return 0


def _bench_project(args: argparse.Namespace) -> int:
    from projections.bench import bench_project

    if args.live:
        from projections.bench import bench_live

        return bench_live(args.seconds, args.batch, args.json)
    return bench_project(args.events, args.json, args.workers)


def _bench_query(args: argparse.Namespace) -> int:
    from projections.bench import bench_query

    return bench_query(
        args.deals, args.json, args.repeat, crm_copies=args.crm_copies, oracle=not args.no_oracle
    )


def _bench_asof(args: argparse.Namespace) -> int:
    from projections.bench import bench_asof_designs

    return bench_asof_designs(args.json, args.repeat)


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's subcommands (and its `dealflow bench <name>`)."""
    projections = commands.add_parser("projections", help="read models: run, status, rebuild")
    sub = projections.add_subparsers(dest="projections_command", required=True)
    sub.add_parser(
        "run", help="keep the read models current (a separate process; SIGTERM stops)"
    ).set_defaults(func=_run)
    status = sub.add_parser("status", help="each projection's position and lag")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)
    rebuild = sub.add_parser("rebuild", help="rebuild read models from the start of the log")
    rebuild.add_argument("--name", help="only this projection (default: all)")
    rebuild.set_defaults(func=_rebuild)

    project = bench.add_parser(
        "project", help="full read-model rebuild vs a raw scan of the events table"
    )
    project.add_argument("--events", type=int, default=200_000)
    project.add_argument(
        "--workers",
        type=int,
        default=2,
        help="processes folding deal ranges (0: the runner's sequential catch-up)",
    )
    project.add_argument(
        "--live",
        action="store_true",
        help="instead: lag of the live projection while another process ingests at full speed",
    )
    project.add_argument("--seconds", type=float, default=60.0, help="--live: ingest this long")
    project.add_argument("--batch", type=int, default=1000, help="--live: events per write")
    project.add_argument("--json", help="write the figures to this file")
    project.set_defaults(func=_bench_project)
    query = bench.add_parser("query", help="p50/p95 latency of metrics, breakdown and board")
    query.add_argument("--deals", type=int, default=100_000)
    query.add_argument("--repeat", type=int, default=40)
    query.add_argument(
        "--crm-copies",
        type=int,
        default=0,
        help="replay the bundled CRM export K times instead of generating synthetic deals",
    )
    query.add_argument(
        "--no-oracle", action="store_true", help="skip timing the scans (the same-run baseline)"
    )
    query.add_argument("--json", help="write the figures to this file")
    query.set_defaults(func=_bench_query)
    asof = bench.add_parser(
        "asof-designs", help='the two "as of" designs (buckets vs a covering index), same moments'
    )
    asof.add_argument("--repeat", type=int, default=24)
    asof.add_argument("--json", help="write the figures to this file")
    asof.set_defaults(func=_bench_asof)
