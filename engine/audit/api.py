"""Audit routes (scope audit): chain verification, the event export, a deal's timeline,
and the log checkpoints."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from engine.api.deps import get_services, require
from engine.api.helpers import parse_time
from engine.audit.checkpoints import write_checkpoint
from engine.audit.export import ExportFilter, export_chunks
from engine.audit.timeline import deal_timeline
from engine.audit.verify import verify
from engine.tokens import Principal

router = APIRouter(tags=["audit"])

MEDIA_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}


@router.get(
    "/v1/audit/verify",
    summary="Recompute every hash chain and check the log against its checkpoints",
)
async def get_verify(
    request: Request,
    deal_id: str | None = Query(None, description="check one deal only (skips the whole-log walk)"),
    _: Principal = require("audit"),
) -> dict[str, Any]:
    app = get_services(request).app
    report = await run_in_threadpool(verify, app, deal_id)
    return report.to_dict()


@router.post("/v1/audit/checkpoints", summary="Seal the log recorded since the last checkpoint")
async def post_checkpoint(request: Request, _: Principal = require("audit")) -> dict[str, Any]:
    app = get_services(request).app
    checkpoint = await run_in_threadpool(write_checkpoint, app)
    return {"checkpoint": checkpoint.to_dict() if checkpoint else None}


@router.get("/v1/audit/export", summary="Every deal event as JSON lines or CSV, streamed")
async def get_export(
    request: Request,
    deal_id: str | None = Query(None),
    pipeline_id: str | None = Query(None),
    occurred_from: str | None = Query(None, alias="from", description="business time, inclusive"),
    occurred_to: str | None = Query(None, alias="to", description="business time, exclusive"),
    format: Literal["jsonl", "csv"] = Query("jsonl"),  # noqa: A002 - the contract's parameter name
    _: Principal = require("audit"),
) -> StreamingResponse:
    filters = ExportFilter(
        deal_id=deal_id,
        pipeline_id=pipeline_id,
        occurred_from=parse_time(occurred_from, "from") if occurred_from is not None else None,
        occurred_to=parse_time(occurred_to, "to") if occurred_to is not None else None,
    )
    app = get_services(request).app
    # A sync generator: Starlette pulls it in a worker thread, one page at a time.
    return StreamingResponse(
        export_chunks(app, filters, format),
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="dealflow-events.{format}"'},
    )


@router.get(
    "/v1/deals/{deal_id}/timeline",
    summary="A deal's replayed timeline: events, state after each, criteria",
)
async def get_timeline(
    deal_id: str, request: Request, _: Principal = require("audit")
) -> dict[str, Any]:
    app = get_services(request).app
    return await run_in_threadpool(deal_timeline, app, deal_id)
