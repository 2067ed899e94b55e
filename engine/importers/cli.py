"""`dealflow import crm DIR`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any


def _open_app() -> object:
    # An import needs the store only: no projections, no Temporal.
    from engine.application import DealflowApp
    from engine.persistence.settings import StoreSettings

    return DealflowApp(StoreSettings.from_env())


def _import_crm(args: argparse.Namespace) -> int:
    from rich.console import Console

    from engine.importers.crm import import_crm, print_report

    directory = Path(args.dir)
    if not directory.is_dir():
        print(f"error: {directory} is not a directory", file=sys.stderr)
        return 2
    console = Console(stderr=bool(args.json))
    app: Any = _open_app()
    try:
        report = import_crm(
            app,
            directory,
            pipeline_id=args.pipeline,
            export_date=date.fromisoformat(args.export_date) if args.export_date else None,
            progress=not args.no_progress,
            console=console,
        )
    finally:
        app.close()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_report(report, console)
    return 1 if report["events"]["rejected"] else 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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
