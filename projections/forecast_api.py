"""``GET /v1/pipelines/{id}/forecast``: the forecast by expected close month (issue 12)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from engine.api.deps import get_services, require
from engine.api.errors import ApiError
from engine.tokens import Principal
from projections.api import _moment, parse_target
from projections.queries.forecast import forecast, month_range, parse_month
from projections.readmodel.records import from_us

router = APIRouter(tags=["metrics"])


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(
        422, "validation_error", message, details=[{"field": field, "message": message}]
    )


def month_of(at_us: int) -> str:
    at = from_us(at_us)
    return f"{at.year:04d}-{at.month:02d}"


def eleven_later(first: str) -> str:
    """The last of twelve months starting with ``first`` (a valid ``YYYY-MM``)."""
    year, month = parse_month(first)
    index = year * 12 + month - 1 + 11
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def check_months(first: str, last: str) -> None:
    for field, text in (("from", first), ("to", last)):
        try:
            parse_month(text)
        except ValueError as error:
            raise _invalid(field, str(error)) from error
    try:
        month_range(parse_month(first), parse_month(last))
    except ValueError as error:
        raise _invalid("to", str(error)) from error


@router.get(
    "/v1/pipelines/{pipeline_id}/forecast",
    summary="Forecast by expected close month: closed won, commit, best case, pipeline, target",
)
async def get_forecast(
    pipeline_id: str,
    request: Request,
    first: str | None = Query(None, alias="from", description="first month, YYYY-MM"),
    last: str | None = Query(None, alias="to", description="last month, YYYY-MM"),
    target: str | None = Query(None, description="a target per month: adds the gap"),
    as_of: str | None = Query(None, description="business time (default: now)"),
    _: Principal = require("read"),
) -> dict[str, Any]:
    moment = _moment(as_of)
    first = first or month_of(moment.at)
    check_months(first, first)
    last = last or eleven_later(first)
    check_months(first, last)
    goal = parse_target(target)
    app = get_services(request).app
    return await run_in_threadpool(
        lambda: forecast(app, pipeline_id, moment, first=first, last=last, target=goal)
    )
