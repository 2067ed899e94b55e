"""`dealflow bench project|query|asof-designs`: the read side's benchmarks."""

from __future__ import annotations

import argparse


def _bench_project(args: argparse.Namespace) -> int:
    from dealflow.bench.projections import bench_project

    if args.live:
        from dealflow.bench.live_lag import bench_live

        return bench_live(args.seconds, args.batch, args.json)
    return bench_project(args.events, args.json, args.workers)


def _bench_query(args: argparse.Namespace) -> int:
    from dealflow.bench.projections import bench_query

    return bench_query(
        args.deals,
        args.json,
        args.repeat,
        crm_copies=args.crm_copies,
        oracle=not args.no_oracle,
        train=args.train,
    )


def _bench_asof(args: argparse.Namespace) -> int:
    from dealflow.bench.asof_designs import bench_asof_designs

    return bench_asof_designs(args.json, args.repeat)


def register(benches: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `dealflow bench project|query|asof-designs`."""
    project = benches.add_parser(
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
    query = benches.add_parser("query", help="p50/p95 latency of metrics, breakdown and board")
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
    query.add_argument(
        "--train",
        action="store_true",
        help="train the pipeline's scoring model first, so the deals are ranked by a model",
    )
    query.add_argument("--json", help="write the figures to this file")
    query.set_defaults(func=_bench_query)
    asof = benches.add_parser(
        "asof-designs", help='the two "as of" designs (buckets vs a covering index), same moments'
    )
    asof.add_argument("--repeat", type=int, default=24)
    asof.add_argument("--json", help="write the figures to this file")
    asof.set_defaults(func=_bench_asof)
