"""`GET /v1/pipelines` and `GET /v1/sequences`: id, name and current version, by id, paged."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from engine.api.deps import get_services, require
from engine.api.errors import ApiError
from engine.definition_list import MAX_LIMIT, DefinitionList
from engine.domain.definitions import PIPELINE, SEQUENCE
from engine.tokens import Principal

router = APIRouter(tags=["pipelines"])


def definition_list(request: Request) -> DefinitionList:
    services = get_services(request)
    listing = services.extras.get("definition_list")
    if listing is None:
        listing = services.extras.setdefault("definition_list", DefinitionList(services.app))
    return listing  # type: ignore[no-any-return]


async def _page(request: Request, kind: str, cursor: str | None, limit: int) -> dict[str, Any]:
    if cursor is not None and not cursor.isprintable():
        raise ApiError(
            422,
            "validation_error",
            "cursor is not one this API gave out",
            details=[{"field": "cursor", "message": "invalid cursor"}],
        )
    listing = definition_list(request)
    page = await run_in_threadpool(lambda: listing.page(kind, after=cursor, limit=limit))
    key = f"{kind}_id"
    return {
        f"{kind}s": [
            {key: item["id"], "name": item["name"], "version": item["version"]}
            for item in page["items"]
        ],
        "next_cursor": page["next_cursor"],
    }


@router.get("/v1/pipelines", summary="Pipelines by id: name and current version (paged)")
async def list_pipelines(
    request: Request,
    cursor: str | None = Query(
        None, max_length=200, description="`next_cursor` of the previous page"
    ),
    limit: int = Query(100, ge=1, le=MAX_LIMIT),
    _: Principal = require("read"),
) -> dict[str, Any]:
    return await _page(request, PIPELINE, cursor, limit)


@router.get(
    "/v1/sequences",
    summary="Nurture sequences by id: name and current version (paged)",
    tags=["automation"],
)
async def list_sequences(
    request: Request,
    cursor: str | None = Query(
        None, max_length=200, description="`next_cursor` of the previous page"
    ),
    limit: int = Query(100, ge=1, le=MAX_LIMIT),
    _: Principal = require("read"),
) -> dict[str, Any]:
    return await _page(request, SEQUENCE, cursor, limit)
