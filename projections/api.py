"""HTTP routes of the read side: projections status and wait, metrics, breakdown, board, deals list.

Money in these answers is a JSON string with two decimals (more only when amounts carry more),
like ``amount`` in the deal state; counts are integers, rates and days JSON numbers (or null).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import TypeAdapter, ValidationError

from engine.api.deps import get_services, require
from engine.api.errors import ApiError
from engine.api.helpers import parse_time
from engine.commands import Money
from engine.domain.events import utcnow
from engine.tokens import Principal
from projections.queries.board import board
from projections.queries.common import Moment
from projections.queries.deals import list_deals
from projections.queries.metrics import BREAKDOWN_KEYS, breakdown, metrics
from projections.queries.scored import deals_by_score
from projections.readmodel.records import to_us

_money: TypeAdapter[Decimal] = TypeAdapter(Money)

router = APIRouter(tags=["metrics"])

MAX_WAIT_S = 60.0


def _projections(request: Request) -> Any:
    service = get_services(request).projections
    if service is None:
        raise ApiError(503, "projections_unavailable", "this process has no read models attached")
    return service


def _moment(as_of: str | None) -> Moment:
    if as_of is None:
        return Moment(to_us(utcnow()), historical=False)
    return Moment(to_us(parse_time(as_of, "as_of")), historical=True)


def _time(value: str | None, field: str) -> int | None:
    return None if value is None else to_us(parse_time(value, field))


def _cursor_error(error: Exception) -> ApiError:
    return ApiError(
        422,
        "validation_error",
        "cursor is not one this API gave out",
        details=[{"field": "cursor", "message": str(error)}],
    )


@router.get("/v1/projections", summary="Each projection's position in the log and its lag")
async def get_projections(request: Request, _: Principal = require("read")) -> dict[str, Any]:
    service = _projections(request)
    items = await run_in_threadpool(service.status)
    return {"projections": items, "head": max((i["head"] for i in items), default=0)}


@router.get(
    "/v1/projections/wait", summary="Wait until every projection has processed a log position"
)
async def wait_projections(
    request: Request,
    position: int = Query(..., ge=0, description="a `position` returned by a write"),
    timeout: float = Query(5.0, ge=0, le=MAX_WAIT_S, description="seconds to wait at most"),
    _: Principal = require("read"),
) -> dict[str, Any]:
    """Answers 200 either way: ``reached`` says whether the position was processed in time."""
    service = _projections(request)
    reached = await run_in_threadpool(service.wait, position, timeout)
    items = await run_in_threadpool(service.status)
    return {"position": position, "reached": reached, "projections": items}


def parse_target(target: str | None) -> Decimal | None:
    """A target amount (metrics, forecast, review): the rule of an amount (plain decimal, 20
    digits, 6 places); 1e30 or 1e400 used to overflow the answers' arithmetic into a 500."""
    if target is None:
        return None
    try:
        return _money.validate_python(target)
    except ValidationError as error:
        raise ApiError(
            422,
            "validation_error",
            "target must be a non-negative decimal amount, e.g. 250000 or 250000.50",
            details=[{"field": "target", "message": str(error.errors()[0]["msg"])}],
        ) from error


@router.get("/v1/pipelines/{pipeline_id}/metrics", summary="Pipeline metrics, now or as of a time")
async def get_metrics(
    pipeline_id: str,
    request: Request,
    as_of: str | None = Query(None, description="business time (default: now)"),
    closed_from: str | None = Query(None, description="closed-deal figures: closed at or after"),
    closed_to: str | None = Query(None, description="closed-deal figures: closed before"),
    target: str | None = Query(None, description="a sales target: adds coverage_ratio"),
    _: Principal = require("read"),
) -> dict[str, Any]:
    moment = _moment(as_of)
    window = (_time(closed_from, "closed_from"), _time(closed_to, "closed_to"))
    goal = parse_target(target)
    app = get_services(request).app
    return await run_in_threadpool(
        lambda: metrics(
            app, pipeline_id, moment, closed_from=window[0], closed_to=window[1], target=goal
        )
    )


@router.get(
    "/v1/pipelines/{pipeline_id}/metrics/breakdown", summary="Deal outcomes by a deal attribute"
)
async def get_breakdown(
    pipeline_id: str,
    request: Request,
    by: Literal["industry", "lead_source", "decision_maker_role", "owner", "account"] = Query(...),
    as_of: str | None = Query(None),
    closed_from: str | None = Query(None),
    closed_to: str | None = Query(None),
    _: Principal = require("read"),
) -> dict[str, Any]:
    assert by in BREAKDOWN_KEYS
    moment = _moment(as_of)
    window = (_time(closed_from, "closed_from"), _time(closed_to, "closed_to"))
    app = get_services(request).app
    return await run_in_threadpool(
        lambda: breakdown(app, pipeline_id, by, moment, closed_from=window[0], closed_to=window[1])
    )


@router.get(
    "/v1/pipelines/{pipeline_id}/board",
    summary="A column per stage with its deals, now or as of a time",
)
async def get_board(
    pipeline_id: str,
    request: Request,
    as_of: str | None = Query(None),
    limit: int = Query(20, ge=1, le=500, description="deals per column"),
    stage: str | None = Query(None, description="only this column (page it with cursor)"),
    cursor: str | None = Query(None),
    _: Principal = require("read"),
) -> dict[str, Any]:
    moment = _moment(as_of)
    app = get_services(request).app

    def work() -> dict[str, Any]:
        try:
            return board(app, pipeline_id, moment, limit=limit, stage=stage, cursor=cursor)
        except (ValueError, TypeError, IndexError) as error:
            raise _cursor_error(error) from error

    return await run_in_threadpool(work)


@router.get(
    "/v1/deals", summary="Deals, newest first, filtered and paged (as_of needs scope audit)"
)
async def get_deals(
    request: Request,
    pipeline_id: str | None = Query(None),
    stage: str | None = Query(None),
    status: Literal["open", "won", "lost"] | None = Query(None),
    stale: bool | None = Query(None),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None),
    as_of: str | None = Query(None, description="business time (needs scope audit)"),
    sort: Literal["newest", "score"] = Query(
        "newest", description="score: a pipeline's open deals, highest score first"
    ),
    principal: Principal = require("read"),
) -> dict[str, Any]:
    if as_of is not None and not principal.has("audit"):
        raise ApiError(403, "forbidden", "as_of needs the audit scope", required=["audit"])
    moment = _moment(as_of)
    app = get_services(request).app
    if sort == "score":
        return await _by_score(app, moment, pipeline_id, stage, status, stale, limit, cursor)

    def work() -> dict[str, Any]:
        try:
            return list_deals(
                app,
                moment,
                pipeline_id=pipeline_id,
                stage=stage,
                status=status,
                stale=stale,
                limit=limit,
                cursor=cursor,
            )
        except (ValueError, TypeError, IndexError) as error:
            raise _cursor_error(error) from error

    return await run_in_threadpool(work)


async def _by_score(
    app: Any,
    moment: Moment,
    pipeline_id: str | None,
    stage: str | None,
    status: str | None,
    stale: bool | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    if pipeline_id is None or status not in (None, "open") or stale is not None:
        raise ApiError(
            422,
            "validation_error",
            "sort=score lists one pipeline's open deals: give pipeline_id (status open at most)",
            details=[{"field": "sort", "message": "needs pipeline_id; no stale filter"}],
        )

    def work() -> dict[str, Any]:
        try:
            return deals_by_score(
                app, moment, pipeline_id=pipeline_id, stage=stage, limit=limit, cursor=cursor
            )
        except (ValueError, TypeError, IndexError) as error:
            raise _cursor_error(error) from error

    return await run_in_threadpool(work)
