"""`dealflow import crm DIR` and `dealflow demo`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path


def _import_crm(args: argparse.Namespace) -> int:
    from rich.console import Console

    from engine.runtime import build_services
    from projections.crm_import import import_crm, print_report

    directory = Path(args.dir)
    if not directory.is_dir():
        print(f"error: {directory} is not a directory", file=sys.stderr)
        return 2
    console = Console(stderr=bool(args.json))
    services = build_services(run_projections=False)
    try:
        report = import_crm(
            services.app,
            directory,
            pipeline_id=args.pipeline,
            export_date=date.fromisoformat(args.export_date) if args.export_date else None,
            progress=not args.no_progress,
            console=console,
        )
    finally:
        services.close()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_report(report, console)
    return 1 if report["events"]["rejected"] else 0


def _demo(args: argparse.Namespace) -> int:
    from projections.demo import run_demo

    return run_demo(
        host=args.host,
        port=args.port,
        serve=not args.no_serve,
        home=Path(args.home) if args.home else None,
        data=Path(args.data) if args.data else None,
    )


def register(commands: argparse._SubParsersAction, benches: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `import crm` and `demo`."""
    importer = commands.add_parser("import", help="import deals from other systems").add_subparsers(
        dest="import_command", required=True
    )
    crm = importer.add_parser(
        "crm",
        help="import a CRM export (sales_pipeline.csv, accounts.csv, products.csv, sales_teams.csv)",
        description="Import a 'CRM Sales Opportunities'-shaped export as deal events through the "
        "batch write path. Idempotent: importing the same export again records nothing.",
    )
    crm.add_argument("dir", help="directory holding the four CSV files")
    crm.add_argument(
        "--pipeline", default="default", help="pipeline to import into (default: default)"
    )
    crm.add_argument(
        "--export-date",
        help="when the export was taken (YYYY-MM-DD): undated Prospecting deals open then "
        "(default: the latest date in sales_pipeline.csv)",
    )
    crm.add_argument("--no-progress", action="store_true", help="no progress bar")
    crm.add_argument("--json", action="store_true", help="print the report as JSON")
    crm.set_defaults(func=_import_crm)

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
