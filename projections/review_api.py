"""``GET /v1/pipelines/{id}/review``: the pipeline review digest (issue 12)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from engine.api.deps import get_services, require
from engine.api.errors import ApiError
from engine.api.helpers import parse_time
from engine.domain.events import utcnow
from engine.tokens import Principal
from projections.api import parse_target
from projections.queries.review import review
from projections.review_render import to_html, to_text

router = APIRouter(tags=["metrics"])


@router.get(
    "/v1/pipelines/{pipeline_id}/review",
    summary="The pipeline review: moved, closed, stuck by owner, new, forecast, top scored",
    response_model=None,
)
async def get_review(
    pipeline_id: str,
    request: Request,
    since: str | None = Query(None, description="start of the period (default: 7 days before)"),
    as_of: str | None = Query(None, description="end of the period, business time (default now)"),
    target: str | None = Query(None, description="monthly target (default: the pipeline's)"),
    format: Literal["json", "text", "html"] = Query("json"),  # noqa: A002 - the query's name
    _: Principal = require("read"),
) -> dict[str, Any] | Response:
    until = parse_time(as_of, "as_of") if as_of is not None else utcnow()
    try:
        start = parse_time(since, "since") if since is not None else until - timedelta(days=7)
        horizon = until + timedelta(days=100)  # the review's forecast looks 3 months ahead
        if horizon.year > 9998:
            raise OverflowError
    except OverflowError as error:
        raise ApiError(
            422,
            "validation_error",
            "the period is out of range",
            details=[{"field": "as_of", "message": "out of range"}],
        ) from error
    if start >= until:
        raise ApiError(
            422,
            "validation_error",
            "since must be before the end of the period",
            details=[{"field": "since", "message": "not before as_of/now"}],
        )
    goal = parse_target(target)
    app = get_services(request).app
    digest = await run_in_threadpool(
        lambda: review(app, pipeline_id, start, until, historical=as_of is not None, target=goal)
    )
    if format == "text":
        return PlainTextResponse(to_text(digest))
    if format == "html":
        return HTMLResponse(to_html(digest))
    return digest
