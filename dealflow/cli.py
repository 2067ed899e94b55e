"""`dealflow`: the command line. The composition root adds the process commands and asks each
area for its own subcommands."""

from __future__ import annotations

import argparse
import os
import sys

from dealflow import __version__, admin, bench, demo, processes
from dealflow.preflight import SetupError, check_settings, check_store, unreachable_store
from engine.audit import cli as audit_cli
from engine.collector import tune_gc
from engine.importers import cli as importers_cli
from engine.persistence.outage import StoreUnavailable, is_connection_failure
from engine.persistence.settings import StoreSettings
from engine.scoring import cli as scoring_cli
from projections import cli as projections_cli
from projections import revenue_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dealflow", description="Event-sourced sales pipeline engine."
    )
    parser.add_argument("--version", action="version", version=f"dealflow {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    processes.register(commands)
    processes.register_projections_run(projections_cli.register(commands))
    importers_cli.register(commands)
    admin.register(commands)
    audit_cli.register(commands)
    demo.register(commands)
    scoring_cli.register(commands)
    revenue_cli.register(commands)
    benches = commands.add_parser(
        "bench", help="benchmarks that print figures against a same-run baseline"
    ).add_subparsers(dest="bench_command", required=True)
    bench.register(benches)
    return parser


# Commands that bring their own store (bench: scratch databases; demo: its own SQLite).
OWN_STORE = {"bench", "demo"}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    tune_gc()
    try:
        check_settings()
        if args.command not in OWN_STORE:
            check_store(StoreSettings.from_env())
        code = int(args.func(args) or 0)
    except KeyboardInterrupt:
        code = 130
    except SetupError as error:
        print(f"error: {error}", file=sys.stderr)
        code = 2
    except Exception as error:
        from engine.domain.errors import DomainError

        if isinstance(error, DomainError):
            print(f"error: {error.message}", file=sys.stderr)
        elif _store_unreachable(error):
            # The preflight passed but the database went away (restart, failover) before the
            # process was up: the same one line as the preflight's, never a traceback. A
            # supervisor (compose `restart:`, Kubernetes) starts the process again.
            sub = getattr(args, f"{args.command}_command", None)
            when = f"while `dealflow {args.command}{f' {sub}' if sub else ''}` was running"
            print(
                f"error: {unreachable_store(StoreSettings.from_env(), error, when)}",
                file=sys.stderr,
            )
        else:
            raise
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave without interpreter finalisation: the Temporal SDK's native threads can crash it
    # (exit 139) after a clean shutdown, which would make a successful command look failed.
    os._exit(code)


def _store_unreachable(error: BaseException) -> bool:
    """The store could not be reached (psycopg's or eventsourcing's connection errors, or the
    outage gate saying it is known to be down)."""
    return isinstance(error, StoreUnavailable) or is_connection_failure(error)


if __name__ == "__main__":
    main()
