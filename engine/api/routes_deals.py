"""Deal events in (single and batch, idempotent), deal state and history out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter

from engine.api.bodies import json_schema_body, read_json_object, register_schemas
from engine.api.deps import get_services, require
from engine.api.errors import ApiError
from engine.api.helpers import parse_time, to_command
from engine.application import Command, DealflowApp, Outcome, replay
from engine.collector import paused_for
from engine.commands import DEAL_ID_PATTERN, IncomingEvent
from engine.domain.errors import DomainError, ValidationFailed
from engine.domain.events import utcnow
from engine.scoring.service import score_view
from engine.tokens import Principal

router = APIRouter(tags=["deals"])

MAX_BATCH = 5000
_event_schema = TypeAdapter(IncomingEvent).json_schema(ref_template="#/components/schemas/{model}")
register_schemas(_event_schema)


def _event_body_schema() -> dict[str, Any]:
    return {
        "oneOf": [
            {"$ref": f"#/components/schemas/{name}"}
            for name in _event_schema.get("$defs", {})
            if name.endswith("In")
        ]
    }


def _state_after(app: DealflowApp, outcome: Outcome) -> dict[str, Any]:
    """The deal as it stood right after the event: the same body on a first send and a replay.

    Judged under the pipeline version the event was recorded with, at the moment it was
    recorded (``recorded_state``): nothing that happens later can change this body."""
    deal = outcome.deal
    if deal is None:
        # A replay: the deal at that version, from one read of its history.
        deal = replay(app.deal_events(outcome.deal_id)[: outcome.version])
        assert deal is not None
    state = app.recorded_state(deal)
    position = (
        outcome.position
        if outcome.position is not None
        else app.position_of(outcome.deal_id, outcome.version or 0)
    )
    state["position"] = position
    return state


@router.post(
    "/v1/deals/{deal_id}/events",
    status_code=201,
    summary="Record one deal event",
    openapi_extra=json_schema_body(
        _event_body_schema(),
        {"type": "fact_recorded", "event_id": "crm-123-need", "fact": "need", "value": True},
    ),
)
async def post_event(
    deal_id: str, request: Request, principal: Principal = require("ingest")
) -> JSONResponse:
    body = await read_json_object(request)
    services = get_services(request)
    command = to_command(deal_id, body, principal.name)

    def work() -> tuple[int, dict[str, Any], dict[str, str]]:
        outcome = services.app.ingest([command])[0]
        if outcome.status == "rejected":
            assert outcome.error is not None
            raise outcome.error
        state = _state_after(services.app, outcome)
        if outcome.status == "duplicate":
            return 200, state, {"Idempotent-Replay": "true"}
        return 201, state, {}

    status, state, headers = await run_in_threadpool(work)
    return JSONResponse(state, status_code=status, headers=headers)


@router.post(
    "/v1/events",
    summary="Record a batch of deal events (up to 5,000); accepted items are stored in one transaction, a rejected item records nothing",
    openapi_extra=json_schema_body(
        {
            "type": "object",
            "required": ["events"],
            "properties": {
                "events": {
                    "type": "array",
                    "maxItems": MAX_BATCH,
                    "items": {
                        "allOf": [
                            _event_body_schema(),
                            {
                                "type": "object",
                                "required": ["deal_id"],
                                "properties": {
                                    "deal_id": {"type": "string", "pattern": DEAL_ID_PATTERN}
                                },
                            },
                        ]
                    },
                }
            },
        }
    ),
)
async def post_events(request: Request, principal: Principal = require("ingest")) -> JSONResponse:
    body = await read_json_object(request, per_item="events")
    events = body.get("events")
    if not isinstance(events, list):
        raise ApiError(
            422,
            "validation_error",
            "the body needs an `events` array",
            details=[{"field": "events", "message": "required array"}],
        )
    if len(events) > MAX_BATCH:
        raise ApiError(
            422,
            "validation_error",
            f"at most {MAX_BATCH} events per batch",
            details=[{"field": "events", "message": f"{len(events)} items"}],
        )
    services = get_services(request)

    def work() -> dict[str, Any]:
        # A large batch's objects live exactly as long as it does (see engine.collector).
        with paused_for(len(events)):
            return decide(events)

    def decide(events: list[Any]) -> dict[str, Any]:
        results: list[dict[str, Any] | None] = [None] * len(events)
        commands: list[Command] = []
        indexes: list[int] = []
        for index, item in enumerate(events):
            try:
                if not isinstance(item, dict):
                    raise ValidationFailed(
                        "each event must be a JSON object", field=f"events.{index}"
                    )
                commands.append(to_command(item.get("deal_id"), item, principal.name))  # type: ignore[arg-type]
                indexes.append(index)
            except DomainError as error:
                results[index] = {
                    "index": index,
                    "status": "rejected",
                    "version": None,
                    "error": error.to_dict(),
                }
        outcomes = services.app.ingest(commands)
        position = None
        for index, outcome in zip(indexes, outcomes, strict=True):
            results[index] = outcome.to_dict(index)
            if outcome.position is not None:
                position = max(position or 0, outcome.position)
        return {"results": results, "position": position}

    return JSONResponse(await run_in_threadpool(work))


@router.get("/v1/deals/{deal_id}", summary="A deal's state, now or as of a time or version")
async def get_deal(
    deal_id: str,
    request: Request,
    as_of: str | None = Query(None, description="business time (needs scope audit)"),
    version: int | None = Query(
        None, ge=1, le=2**63 - 1, description="deal version (needs scope audit)"
    ),
    principal: Principal = require("read"),
) -> dict[str, Any]:
    if (as_of is not None or version is not None) and not principal.has("audit"):
        raise ApiError(
            403, "forbidden", "as_of and version need the audit scope", required=["audit"]
        )
    if as_of is not None and version is not None:
        raise ApiError(
            422,
            "validation_error",
            "give as_of or version, not both",
            details=[{"field": "as_of", "message": "conflicts with version"}],
        )
    moment = parse_time(as_of, "as_of") if as_of is not None else None
    app = get_services(request).app

    def work() -> dict[str, Any]:
        deal = (
            app.deal_as_of(deal_id, moment)
            if moment is not None
            else app.deal(deal_id, version=version)
        )
        at = moment or utcnow()
        return {**app.deal_state(deal, at=at), **score_view(app, deal, at)}

    return await run_in_threadpool(work)


@router.get(
    "/v1/deals/{deal_id}/history", summary="Every recorded event of a deal, in version order"
)
async def get_history(
    deal_id: str, request: Request, _: Principal = require("audit")
) -> dict[str, Any]:
    app = get_services(request).app
    return await run_in_threadpool(app.history, deal_id)
