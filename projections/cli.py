"""``dealflow projections status|rebuild``.

``dealflow projections run``, the long-running process, is wired in :mod:`dealflow.processes`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def open_app() -> Any:
    # These commands need the store only: no tokens, no Temporal.
    from engine.application import DealflowApp
    from engine.persistence.settings import StoreSettings

    return DealflowApp(StoreSettings.from_env())


def _service(run: bool) -> Any:
    from projections.runtime import ProjectionsService

    return ProjectionsService(open_app(), run=run)


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


def register(commands: argparse._SubParsersAction) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    """Add `projections status|rebuild`; return the `projections` subparsers
    so the composition root can add `projections run`."""
    projections = commands.add_parser("projections", help="read models: run, status, rebuild")
    sub = projections.add_subparsers(dest="projections_command", required=True)
    status = sub.add_parser("status", help="each projection's position and lag")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)
    rebuild = sub.add_parser("rebuild", help="rebuild read models from the start of the log")
    rebuild.add_argument("--name", help="only this projection (default: all)")
    rebuild.set_defaults(func=_rebuild)
    return sub
