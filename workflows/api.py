"""Automation routes: sequences, the team directory, enrolling by hand, the outbox."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from engine.api.bodies import json_schema_body, read_json_object
from engine.api.definitions import DefinitionKind, definition_router
from engine.api.deps import get_services, require
from engine.api.errors import ApiError, validation_error
from engine.api.helpers import valid_deal_id
from engine.application import Command, DealflowApp, Outcome, automation_command
from engine.commands import BusinessTime, EventId
from engine.domain.definitions import DIRECTORY, SEQUENCE
from engine.domain.errors import NotFound
from engine.tokens import Principal
from workflows.models import Directory, SequenceDefinition

router = APIRouter(tags=["automation"])


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/components/schemas/{model}")


# -- sequences and the team directory: versioned definitions ----------------------------------

router.include_router(
    definition_router(
        DefinitionKind(
            kind=SEQUENCE,
            path="/v1/sequences/{sequence_id}",
            model=SequenceDefinition,
            noun="nurture sequence",
            id_field="sequence_id",
            exclude_none=False,
            tag="automation",
        )
    )
)
router.include_router(
    definition_router(
        DefinitionKind(
            kind=DIRECTORY,
            path="/v1/directory",
            model=Directory,
            noun="team directory",
            empty={"version": 0, "people": []},
            tag="automation",
        )
    )
)


# -- enrolling by hand -------------------------------------------------------------------------


class NurtureRequest(BaseModel):
    model_config = {"extra": "forbid"}

    event_id: EventId
    action: Literal["enroll", "unenroll"]
    sequence_id: str = Field(min_length=1, max_length=200)
    occurred_at: BusinessTime | None = None


def _nurture_command(
    app: DealflowApp, deal_id: str, body: dict[str, Any], request: NurtureRequest, actor: str
) -> Command:
    if request.action == "enroll":
        try:
            version, _ = app.get_definition(SEQUENCE, request.sequence_id)
        except NotFound as missing:
            raise ApiError(
                422,
                "validation_error",
                f"sequence {request.sequence_id!r} does not exist",
                details=[{"field": "sequence_id", "message": "unknown sequence"}],
            ) from missing
        type_, data = (
            "nurture_enrolled",
            {"sequence_id": request.sequence_id, "sequence_version": version},
        )
    else:
        type_, data = (
            "nurture_stopped",
            {"sequence_id": request.sequence_id, "reason": "unenrolled"},
        )
    return automation_command(
        deal_id,
        type_,
        data,
        event_id=request.event_id,
        actor=actor,
        occurred_at=request.occurred_at,
        # The sender's body is the fingerprint: a replay matches even if the sequence moved on.
        fingerprint={"route": "nurture", **{k: v for k, v in body.items() if k != "deal_id"}},
    )


def _state(app: DealflowApp, outcome: Outcome) -> dict[str, Any]:
    """The deal as the event left it: decided just now, or (a replay) read back from the log."""
    deal = outcome.deal or app.deal(outcome.deal_id, version=outcome.version)
    state = app.recorded_state(deal)
    state["position"] = (
        outcome.position
        if outcome.position is not None
        else app.position_of(outcome.deal_id, outcome.version or 0)
    )
    return state


@router.post(
    "/v1/deals/{deal_id}/nurture",
    status_code=201,
    summary="Enroll a deal in a nurture sequence, or unenroll it, by hand",
    openapi_extra=json_schema_body(
        _schema(NurtureRequest),
        {"event_id": "crm-991-nurture", "action": "enroll", "sequence_id": "qualification"},
    ),
)
async def post_nurture(
    deal_id: str, request: Request, principal: Principal = require("ingest")
) -> JSONResponse:
    if not valid_deal_id(deal_id):
        raise ApiError(
            422,
            "validation_error",
            "deal_id must be 1-200 letters, digits or -_.:",
            details=[{"field": "deal_id", "message": "invalid deal id"}],
        )
    body = await read_json_object(request)
    try:
        parsed = NurtureRequest.model_validate(body)
    except ValidationError as error:
        raise validation_error(error) from error
    app = get_services(request).app

    def work() -> tuple[int, dict[str, Any], dict[str, str]]:
        outcome = app.ingest(
            [_nurture_command(app, deal_id, body, parsed, principal.name)], allow_automation=True
        )[0]
        if outcome.status == "rejected":
            assert outcome.error is not None
            raise outcome.error
        state = _state(app, outcome)
        if outcome.status == "duplicate":
            return 200, state, {"Idempotent-Replay": "true"}
        return 201, state, {}

    status, state, headers = await run_in_threadpool(work)
    return JSONResponse(state, status_code=status, headers=headers)


# -- the outbox --------------------------------------------------------------------------------


@router.get(
    "/v1/outbox", summary="Messages automation sent (or left in the outbox when no channel is set)"
)
async def get_outbox(
    request: Request,
    deal_id: str | None = Query(None),
    kind: Literal["nurture", "escalation", "review"] | None = Query(None),
    status: Literal["pending", "sent", "failed"] | None = Query(
        None, description="delivery status"
    ),
    limit: int = Query(500, ge=1, le=5000),
    _: Principal = require("read"),
) -> dict[str, Any]:
    automation = get_services(request).automation
    messages = await run_in_threadpool(
        lambda: automation.outbox.list(deal_id=deal_id, kind=kind, status=status, limit=limit)
    )
    return {"messages": messages}
