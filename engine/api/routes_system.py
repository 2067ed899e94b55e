"""Health, readiness, Prometheus metrics and token administration."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse

from engine.api.bodies import read_json_object
from engine.api.deps import get_services, require
from engine.api.errors import ApiError
from engine.tokens import SCOPES, Principal

router = APIRouter()


@router.get("/healthz", tags=["system"], summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["system"], summary="Readiness: the store answers")
async def readyz(request: Request) -> JSONResponse:
    services = get_services(request)
    try:
        position = await run_in_threadpool(services.app.max_position)
    except Exception as error:  # noqa: BLE001 - any store failure means not ready
        return JSONResponse({"status": "unavailable", "error": str(error)}, status_code=503)
    return JSONResponse(
        {"status": "ready", "backend": services.settings.backend, "position": position}
    )


@router.get(
    "/metrics", tags=["system"], summary="Prometheus metrics", response_class=PlainTextResponse
)
async def prometheus_metrics(request: Request) -> PlainTextResponse:
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
        for item in await run_in_threadpool(services.projections.status):
            lines.append(
                f'dealflow_projection_lag{{projection="{item["name"]}"}} {item.get("lag", 0)}'
            )
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


@router.post("/v1/tokens", tags=["admin"], status_code=201, summary="Create a token (shown once)")
async def create_token(request: Request, _: Principal = require("admin")) -> dict[str, Any]:
    body = await read_json_object(request)
    name, scopes = body.get("name"), body.get("scopes")
    if (
        not isinstance(name, str)
        or not isinstance(scopes, list)
        or not all(isinstance(s, str) for s in scopes)
    ):
        raise ApiError(
            422,
            "validation_error",
            f'send {{"name": str, "scopes": [{", ".join(SCOPES)}]}}',
            details=[{"field": "scopes", "message": "list of scopes"}],
        )
    tokens = get_services(request).tokens
    token = await run_in_threadpool(tokens.create, name, scopes)
    return {"name": name, "scopes": sorted(set(scopes)), "token": token}


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
