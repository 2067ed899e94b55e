"""`dealflow demo`: a fresh embedded store, the bundled CRM sample, headline metrics and the
dashboard (the work is in :mod:`dealflow.demo.run`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from dealflow.demo.run import run_demo
    from dealflow.preflight import check_port

    if not args.no_serve:
        check_port(args.host, args.port, "demo")
    return run_demo(
        host=args.host,
        port=args.port,
        serve=not args.no_serve,
        home=Path(args.home) if args.home else None,
        data=Path(args.data) if args.data else None,
    )


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    demo = commands.add_parser(
        "demo",
        help="fresh embedded store + the bundled CRM sample + headline metrics + the dashboard",
        description="Create a fresh embedded (SQLite) store under $DEALFLOW_HOME/demo "
        "(default ./.dealflow/demo), import the bundled CRM sample, print headline metrics and "
        "serve the API and dashboard until Ctrl-C.",
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--no-serve", action="store_true", help="print the metrics and exit")
    demo.add_argument("--home", help="the demo's own data directory (wiped at start)")
    demo.add_argument(
        "--data",
        help="CRM export to load (default: $DEALFLOW_DEMO_DATA, ../shared/data/"
        "crm-sales-opportunities, else the copy bundled with the package)",
    )
    demo.set_defaults(func=_demo)
