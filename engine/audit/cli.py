"""`dealflow audit ...`: verify, checkpoint, export, replay."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.application import DealflowApp


def open_app() -> DealflowApp:
    # Audit commands need the store only: no projections, no Temporal.
    from engine.application import DealflowApp
    from engine.persistence.settings import StoreSettings

    return DealflowApp(StoreSettings.from_env())


def _time(value: str) -> datetime:
    from pydantic import TypeAdapter, ValidationError

    from engine.commands import BusinessTime

    try:
        return TypeAdapter(BusinessTime).validate_python(value)  # type: ignore[no-any-return]
    except ValidationError as error:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 time or date") from error


def _verify(args: argparse.Namespace) -> int:
    from engine.audit.verify import verify

    report = verify(open_app(), args.deal)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0 if report.ok else 1
    counts = report.counts
    print(
        f"checked {counts['events']} events of {counts['deals']} deals,"
        f" {counts['idempotency_records']} idempotency records"
        + (
            f", {counts['log_rows']} log rows against {counts['checkpoints']} checkpoint(s)"
            if report.log_checked
            else ""
        )
        + f" in {report.seconds:.2f}s"
    )
    if report.ok:
        print("OK: every hash chain is intact and the log matches its checkpoints")
        return 0
    print(f"BROKEN: {report.breaks.total} finding(s)", file=sys.stderr)
    for item in report.breaks.breaks:
        where = (
            f"deal {item.deal_id or item.originator_id} v{item.version}"
            if item.originator_id
            else f"position {item.position}"
        )
        print(f"  {item.kind:<14} {where}: {item.message}", file=sys.stderr)
    if report.breaks.truncated:
        print(f"  ... and {report.breaks.total - len(report.breaks.breaks)} more", file=sys.stderr)
    return 1


def _checkpoint(_: argparse.Namespace) -> int:
    from engine.audit.checkpoints import write_checkpoint

    checkpoint = write_checkpoint(open_app())
    if checkpoint is None:
        print("the log is empty: nothing to seal")
    else:
        print(
            f"sealed the log up to position {checkpoint.position} ({checkpoint.event_count} rows):"
            f" {checkpoint.rolling_hash}"
        )
    return 0


def _export(args: argparse.Namespace) -> int:
    from engine.audit.export import ExportFilter, export_chunks

    filters = ExportFilter(args.deal, args.pipeline, args.occurred_from, args.occurred_to)
    app = open_app()
    out = open(args.output, "wb") if args.output and args.output != "-" else sys.stdout.buffer  # noqa: SIM115
    try:
        for chunk in export_chunks(app, filters, args.format):
            out.write(chunk)
    finally:
        if out is not sys.stdout.buffer:
            out.close()
        else:
            out.flush()
    return 0


def _replay(args: argparse.Namespace) -> int:
    from engine.audit.render import render_timeline
    from engine.audit.timeline import deal_timeline

    timeline = deal_timeline(open_app(), args.deal)
    if args.json:
        print(json.dumps(timeline, indent=2, default=str))
    else:
        render_timeline(timeline)
    return 0 if timeline.get("chain", {}).get("ok", True) else 1


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `dealflow audit ...`."""
    audit = commands.add_parser(
        "audit", help="tamper evidence, export and the replayed timeline"
    ).add_subparsers(dest="audit_command", required=True)
    verify = audit.add_parser(
        "verify", help="recompute every hash chain; exit 1 on any broken link"
    )
    verify.add_argument("--deal", help="one deal only (skips the whole-log walk)")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(func=_verify)

    checkpoint = audit.add_parser(
        "checkpoint", help="seal the log recorded since the last checkpoint"
    )
    checkpoint.set_defaults(func=_checkpoint)

    export = audit.add_parser("export", help="stream every deal event as JSON lines or CSV")
    export.add_argument("--deal")
    export.add_argument("--pipeline")
    export.add_argument("--from", dest="occurred_from", type=_time, help="business time, inclusive")
    export.add_argument("--to", dest="occurred_to", type=_time, help="business time, exclusive")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("--output", "-o", type=str, help="file to write (default: stdout)")
    export.set_defaults(func=_export)

    replay = audit.add_parser(
        "replay", help="a deal's timeline: events, state after each, criteria"
    )
    replay.add_argument("--deal", required=True)
    replay.add_argument("--json", action="store_true", help="print the timeline JSON instead")
    replay.set_defaults(func=_replay)
