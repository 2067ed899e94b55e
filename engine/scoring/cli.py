"""``dealflow scoring train|show``: train and record a pipeline's scoring model on demand, and
show the model a pipeline uses (the Temporal schedule in workflows/ retrains daily)."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any


def _open_app() -> Any:
    from engine.application import DealflowApp
    from engine.persistence.settings import StoreSettings

    return DealflowApp(StoreSettings.from_env())


def _train(args: argparse.Namespace) -> int:
    from engine.scoring.service import train

    app = _open_app()
    try:
        cut = datetime.fromisoformat(args.closed_before) if args.closed_before else None
        if cut is not None and cut.tzinfo is None:
            raise SystemExit("--closed-before needs an offset, e.g. 2017-09-01T00:00:00+00:00")
        pipelines = args.pipeline or ["default"]
        results = [train(app, pipeline, closed_before=cut) for pipeline in pipelines]
    finally:
        app.close()
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            kind = f"version {r['version']}" if r["status"] == "trained" else r["reason"]
            print(
                f"{r['pipeline_id']}: {r['status']} ({r['deals']} closed, {r['won']} won): {kind}"
            )
    return 0


def _show(args: argparse.Namespace) -> int:
    from engine.scoring.service import latest_model

    app = _open_app()
    try:
        found = latest_model(app, args.pipeline)
    finally:
        app.close()
    if found is None:
        print(json.dumps({"pipeline_id": args.pipeline, "model": None}))
        return 1
    version, body = found
    print(json.dumps({"pipeline_id": args.pipeline, "version": version, **body}, indent=2))
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    scoring = commands.add_parser("scoring", help="lead scoring: train and show models")
    sub = scoring.add_subparsers(dest="scoring_command", required=True)
    train = sub.add_parser("train", help="train and record the scoring model of pipelines")
    train.add_argument("--pipeline", action="append", default=None, help="repeatable")
    train.add_argument("--closed-before", help="train on deals closed before this time")
    train.add_argument("--json", action="store_true")
    train.set_defaults(func=_train)
    show = sub.add_parser("show", help="print a pipeline's latest recorded model")
    show.add_argument("--pipeline", required=True)
    show.set_defaults(func=_show)
