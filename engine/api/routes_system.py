"""Health, readiness, Prometheus metrics and token administration."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.api.bodies import json_schema_body, read_json_object
from engine.api.deps import get_services, require
from engine.api.errors import ApiError, validation_error
from engine.tokens import DURATION_PATTERN, TOKEN_NAME, Principal, parse_duration

router = APIRouter()


@router.get("/healthz", tags=["system"], summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["system"], summary="Readiness: the store answers")
async def readyz(request: Request) -> JSONResponse:
    """503 while the store is unreachable (within seconds: see engine.persistence.outage).

    A projection that keeps failing does not make this replica unready (it can still take
    writes), but the answer says ``degraded`` and names the projection, its error and for how
    long it has been stuck."""
    services = get_services(request)
    try:
        position = await run_in_threadpool(services.app.max_position)
        projections = await run_in_threadpool(_projection_status, services)
    except Exception as error:  # noqa: BLE001 - any store failure means not ready
        return JSONResponse(
            {"status": "unavailable", "error": "store_unavailable", "message": str(error)},
            status_code=503,
            headers={"Retry-After": "1"},
        )
    failing = [p for p in projections if p.get("failing")]
    return JSONResponse(
        {
            "status": "degraded" if failing else "ready",
            "backend": services.settings.backend,
            "position": position,
            "projections": [
                {
                    k: p.get(k)
                    for k in ("name", "position", "lag", "failing", "last_error", "failing_for_s")
                }
                for p in projections
            ],
        }
    )


def _projection_status(services: Any) -> list[dict[str, Any]]:
    if services.projections is None or not hasattr(services.projections, "status"):
        return []
    return list(services.projections.status())


@router.get(
    "/metrics",
    tags=["system"],
    summary="Prometheus metrics (scope read)",
    response_class=PlainTextResponse,
)
async def prometheus_metrics(request: Request, _: Principal = require("read")) -> PlainTextResponse:
    """Behind a token like the rest of the read side: the API port faces clients, and the log
    position, projection names and their errors are no business of an anonymous caller.
    Prometheus scrapes with a ``read`` token (see deploy/)."""
    services = get_services(request)
    lines = [
        "# HELP dealflow_log_position Highest position in the event log.",
        "# TYPE dealflow_log_position gauge",
        f"dealflow_log_position {await run_in_threadpool(services.app.max_position)}",
    ]
    if services.projections is not None and hasattr(services.projections, "status"):
        lines += [
            "# HELP dealflow_projection_lag Events a projection has yet to process.",
            "# TYPE dealflow_projection_lag gauge",
        ]
        items = await run_in_threadpool(services.projections.status)
        for item in items:
            lines.append(
                f'dealflow_projection_lag{{projection="{item["name"]}"}} {item.get("lag", 0)}'
            )
        lines += [
            "# HELP dealflow_projection_failing 1 while a projection keeps failing at a position.",
            "# TYPE dealflow_projection_failing gauge",
        ]
        for item in items:
            failing = 1 if item.get("failing") else 0
            lines.append(f'dealflow_projection_failing{{projection="{item["name"]}"}} {failing}')
        lines += [
            "# HELP dealflow_projection_failing_seconds How long it has been failing there.",
            "# TYPE dealflow_projection_failing_seconds gauge",
        ]
        for item in items:
            seconds = item.get("failing_for_s") or 0
            lines.append(
                f'dealflow_projection_failing_seconds{{projection="{item["name"]}"}} {seconds}'
            )
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(
        description="1-100 of A-Z a-z 0-9 - _ . ; unique; the actor on events",
        pattern=TOKEN_NAME.pattern,
    )
    scopes: list[Literal["ingest", "read", "audit", "admin"]] = Field(min_length=1)
    expires_in: str | None = Field(
        None,
        description="lifetime: 30d, 12h, 90m, 45s, 2w or seconds; more than 0, at most 100 years",
        examples=["30d"],
        pattern=DURATION_PATTERN,
    )
    rate_limit_per_minute: int | None = Field(None, ge=1, le=1_000_000)


@router.post(
    "/v1/tokens",
    tags=["admin"],
    status_code=201,
    summary="Create a token (shown once)",
    openapi_extra=json_schema_body(TokenRequest.model_json_schema()),
)
async def create_token(request: Request, _: Principal = require("admin")) -> dict[str, Any]:
    body = await read_json_object(request)
    try:
        wanted = TokenRequest.model_validate(body)
    except ValidationError as error:
        raise validation_error(error) from error
    lifetime = parse_duration(wanted.expires_in) if wanted.expires_in is not None else None
    tokens = get_services(request).tokens
    token = await run_in_threadpool(
        lambda: tokens.create(
            wanted.name,
            wanted.scopes,
            expires_in=lifetime,
            rate_limit=wanted.rate_limit_per_minute,
        )
    )
    listed = await run_in_threadpool(tokens.describe, wanted.name)
    assert listed is not None  # just created; names are never reused
    return {**listed, "token": token}


@router.get("/v1/tokens", tags=["admin"], summary="List tokens (never their values)")
async def list_tokens(request: Request, _: Principal = require("admin")) -> dict[str, Any]:
    return {"tokens": await run_in_threadpool(get_services(request).tokens.list)}


@router.delete("/v1/tokens/{name}", tags=["admin"], summary="Revoke every token with this name")
async def revoke_token(
    name: str, request: Request, _: Principal = require("admin")
) -> dict[str, Any]:
    revoked = await run_in_threadpool(get_services(request).tokens.revoke, name)
    if not revoked:
        raise ApiError(404, "not_found", f"no active token named {name!r}")
    return {"name": name, "revoked": revoked}
