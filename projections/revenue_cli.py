"""``dealflow review`` and ``dealflow forecast``: the pipeline review digest and the forecast by
expected close month, in the terminal (or as JSON), from the read models brought up to date."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any


def _service() -> Any:
    from projections.cli import open_app
    from projections.runtime import ProjectionsService

    service = ProjectionsService(open_app(), run=False)
    service.catch_up()  # a command line has no projections loop: read what the log holds now
    return service


def _time(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    from engine.api.helpers import parse_time

    try:
        return parse_time(text, name)
    except Exception as error:  # noqa: BLE001 - the helper raises an HTTP-shaped error
        raise SystemExit(f"--{name.replace('_', '-')}: not a time ({text!r})") from error


def _target(text: str | None) -> Decimal | None:
    """``--target`` by the HTTP API's rule (a bad one is a message, not a traceback)."""
    from engine.api.errors import ApiError
    from projections.api import parse_target

    try:
        return parse_target(text or None)
    except ApiError as error:
        raise SystemExit(f"--target: {error}") from error


def _review(args: argparse.Namespace) -> int:
    from engine.domain.events import utcnow
    from projections.queries.review import review
    from projections.review_render import to_html, to_text

    until = _time(args.as_of, "as_of") or utcnow()
    since = _time(args.since, "since") or until - timedelta(days=7)
    if since >= until:
        raise SystemExit("--since must be before --as-of (or now)")
    goal = _target(args.target)
    service = _service()
    try:
        digest = review(
            service.app,
            args.pipeline,
            since,
            until,
            historical=args.as_of is not None,
            target=goal,
        )
    finally:
        service.app.close()
    if args.json:
        print(json.dumps(digest))
    else:
        sys.stdout.write(to_html(digest) if args.html else to_text(digest))
    return 0


def _forecast(args: argparse.Namespace) -> int:
    from engine.domain.events import utcnow
    from projections.forecast_api import eleven_later, month_of
    from projections.queries.common import Moment
    from projections.queries.forecast import forecast
    from projections.readmodel.records import to_us

    at = _time(args.as_of, "as_of")
    moment = Moment(to_us(at or utcnow()), historical=at is not None)
    first = args.first or month_of(moment.at)
    goal = _target(args.target)
    service = _service()
    try:
        result = forecast(
            service.app,
            args.pipeline,
            moment,
            first=first,
            last=args.last or eleven_later(first),
            target=goal,
        )
    finally:
        service.app.close()
    if args.json:
        print(json.dumps(result))
        return 0
    cur = result["currency"]
    print(f"Forecast of {result['pipeline_id']} ({cur}), as of {result['as_of']}")
    print(
        f"{'month':8} {'won':>14} {'commit':>14} {'weighted':>14} {'best case':>14}"
        f" {'pipeline':>14} {'target':>14} {'gap':>14}"
    )
    for row in [*result["months"], {"month": "total", **result["totals"]}]:
        print(
            f"{row['month']:8} {row['closed_won']['value']:>14} {row['commit']['value']:>14}"
            f" {row['commit']['weighted_value']:>14} {row['best_case']['value']:>14}"
            f" {row['pipeline']['value']:>14} {row['target'] or '-':>14} {row['gap'] or '-':>14}"
        )
    undated = sum(v["deals"] for v in result["undated"].values())
    print(
        f"{undated} open deals without an expected close date;"
        f" {result['unqualified_deals']} unqualified deals left out"
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    review = commands.add_parser("review", help="the pipeline review digest")
    review.add_argument("--pipeline", required=True)
    review.add_argument("--since", help="start of the period (default: 7 days before)")
    review.add_argument("--as-of", dest="as_of", help="end of the period (default: now)")
    review.add_argument("--target", help="monthly target (default: the pipeline's)")
    shape = review.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true")
    shape.add_argument("--html", action="store_true")
    review.set_defaults(func=_review)

    forecast = commands.add_parser("forecast", help="forecast by expected close month")
    forecast.add_argument("--pipeline", required=True)
    forecast.add_argument("--from", dest="first", help="first month, YYYY-MM")
    forecast.add_argument("--to", dest="last", help="last month, YYYY-MM")
    forecast.add_argument("--target", help="target per month")
    forecast.add_argument("--as-of", dest="as_of")
    forecast.add_argument("--json", action="store_true")
    forecast.set_defaults(func=_forecast)
