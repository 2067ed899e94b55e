"""The HTTP API (contract: shared/contract/http-v1.md), assembled from one router per area."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.api import routes_deals, routes_pipelines, routes_system
from engine.api.bodies import COMPONENT_SCHEMAS
from engine.api.edge import StorableParams
from engine.api.errors import install_error_handlers
from engine.runtime import Services

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


class BodySizeLimit:
    """Refuse a request body over the limit with 413, before it is read into memory."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _too_large(send, self.max_bytes)
            return
        received = 0

        async def limited() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _too_large(send, self.max_bytes)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = (
        b'{"error":"body_too_large","message":"request body exceeds '
        + str(limit).encode()
        + b' bytes"}'
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _describe_hand_read_bodies(api: FastAPI) -> None:
    """Add the schemas of bodies routes read by hand (exact decimals) to /openapi.json."""
    build = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            document = build()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in COMPONENT_SCHEMAS.items():
                schemas.setdefault(name, schema)
            api.openapi_schema = document
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


def create_app(services: Services, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if services.projections is not None and getattr(services.projections, "runs_here", False):
            services.projections.start()
        try:
            yield
        finally:
            if services.projections is not None:
                services.projections.stop()

    api = FastAPI(
        title="dealflow",
        version="1",
        summary="Event-sourced sales pipeline engine",
        description="HTTP contract v1: deal events in, deal state, history, metrics and automation out.",
        lifespan=lifespan,
    )
    api.state.services = services
    install_error_handlers(api)

    from engine.audit.api import router as audit_router
    from projections.api import router as projections_router
    from projections.dashboard.routes import router as dashboard_router
    from workflows.api import router as workflows_router

    for router in (
        routes_system.router,
        routes_pipelines.router,
        routes_deals.router,
        projections_router,
        workflows_router,
        audit_router,
        dashboard_router,
    ):
        api.include_router(router)
    _describe_hand_read_bodies(api)
    api.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)  # type: ignore[arg-type]
    api.add_middleware(StorableParams)  # type: ignore[arg-type]
    return api
