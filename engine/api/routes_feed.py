"""`GET /v1/feed`: every event in log order, as pages (with long-poll) or Server-Sent Events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

from engine.api.deps import get_services, require
from engine.api.errors import ApiError
from engine.feed import DEFAULT_LIMIT, FEED_TYPES, MAX_LIMIT, FeedFilter, FeedReader, UnknownType
from engine.tokens import Principal

router = APIRouter(tags=["feed"])

MAX_WAIT_SECONDS = 60.0
MAX_POSITION = 2**63 - 1  # positions are 64-bit integers in both stores
POLL_SECONDS = 0.1
SSE_PING_SECONDS = 15


def feed_reader(request: Request) -> FeedReader:
    """One reader per process: its deal-name cache is shared by every request."""
    services = get_services(request)
    reader = services.extras.get("feed")
    if reader is None:
        reader = services.extras.setdefault("feed", FeedReader(services.app))
    return reader  # type: ignore[no-any-return]


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def _filters(
    pipeline_id: list[str] | None, types: list[str] | None, deal_id: str | None
) -> FeedFilter:
    try:
        return FeedFilter.build(
            pipeline_ids=_split(pipeline_id), types=_split(types), deal_id=deal_id
        )
    except UnknownType as error:
        raise ApiError(
            422,
            "validation_error",
            f"unknown event type(s): {', '.join(error.unknown)}",
            details=[{"field": "types", "message": f"one of {', '.join(FEED_TYPES)}"}],
        ) from error


_FEED_ITEM = {
    "type": "object",
    "required": ["position", "kind", "type", "version", "recorded_at", "data"],
    "properties": {
        "position": {"type": "integer", "description": "log position (the cursor)"},
        "kind": {"type": "string", "enum": ["deal", "definition"]},
        "deal_id": {"type": ["string", "null"]},
        "pipeline_id": {"type": ["string", "null"]},
        "type": {"type": "string", "enum": list(FEED_TYPES)},
        "version": {"type": "integer", "description": "the deal's (or definition's) version"},
        "occurred_at": {"type": "string", "format": "date-time"},
        "recorded_at": {"type": "string", "format": "date-time"},
        "actor": {"type": ["string", "null"]},
        "event_id": {"type": ["string", "null"]},
        "pipeline_version": {"type": ["integer", "null"]},
        "hash": {"type": ["string", "null"]},
        "definition": {
            "type": "object",
            "description": "definition events only: which definition, at which version",
            "properties": {
                "kind": {"type": "string", "enum": ["pipeline", "sequence", "directory"]},
                "id": {"type": "string"},
                "version": {"type": "integer"},
            },
        },
        "data": {"type": "object"},
    },
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A page of events (JSON), or a stream of them (text/event-stream)",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "events": {"type": "array", "items": _FEED_ITEM},
                        "next_after": {
                            "type": "integer",
                            "description": "pass as `after` for the next page",
                        },
                        "head": {"type": "integer", "description": "the log's last position"},
                        "has_more": {"type": "boolean"},
                    },
                }
            },
            "text/event-stream": {
                "schema": {
                    "type": "string",
                    "description": "one SSE message per event: `id` is its position, `data` "
                    "the event as in the JSON page; resume with `Last-Event-ID`",
                }
            },
        },
    }
}


@router.get(
    "/v1/feed",
    summary="Every event in log order, from any position (pages, long-poll or SSE)",
    responses=_RESPONSES,
)
async def get_feed(
    request: Request,
    after: int = Query(0, ge=0, le=MAX_POSITION, description="return events after this position"),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    pipeline_id: list[str] | None = Query(
        None, description="only these pipelines (repeat or comma-separate)"
    ),
    types: list[str] | None = Query(None, description="only these event types (comma-separated)"),
    deal_id: str | None = Query(None, max_length=200, description="only this deal"),
    wait: float = Query(
        0, ge=0, le=MAX_WAIT_SECONDS, description="seconds to wait when nothing is newer"
    ),
    _: Principal = require("read"),
) -> Response:
    filters = _filters(pipeline_id, types, deal_id)
    reader = feed_reader(request)
    if "text/event-stream" in request.headers.get("accept", ""):
        start = _last_event_id(request, after)
        return EventSourceResponse(
            _stream(request, reader, start, limit, filters), ping=SSE_PING_SECONDS
        )
    deadline = time.monotonic() + wait
    while True:
        page = await run_in_threadpool(reader.page, after, limit, filters)
        if page.events or time.monotonic() >= deadline:
            break
        # Nothing new (for this filter): scanned positions are skipped on the next look.
        after = page.next_after
        await asyncio.sleep(POLL_SECONDS)
    body = {
        "events": page.events,
        "next_after": page.next_after,
        "head": page.head,
        "has_more": page.has_more,
    }
    return Response(orjson.dumps(body), media_type="application/json")


def _last_event_id(request: Request, after: int) -> int:
    raw = request.headers.get("last-event-id")
    if raw is None or not raw.strip():
        return after
    try:
        value: int | None = int(raw.strip())
    except ValueError:
        value = None
    if value is None or not 0 <= value <= MAX_POSITION:
        raise ApiError(
            422,
            "validation_error",
            "Last-Event-ID must be a position this feed gave out",
            details=[
                {
                    "field": "Last-Event-ID",
                    "message": "not an integer" if value is None else "out of range",
                }
            ],
        )
    return value


async def _stream(
    request: Request, reader: FeedReader, after: int, limit: int, filters: FeedFilter
) -> AsyncIterator[ServerSentEvent]:
    while True:
        page = await run_in_threadpool(reader.page, after, limit, filters)
        for item in page.events:
            yield ServerSentEvent(data=orjson.dumps(item).decode(), id=str(item["position"]))
        after = page.next_after
        if not page.has_more:
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL_SECONDS)
