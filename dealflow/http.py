"""The HTTP API (contract: shared HTTP contract v1, see docs/api.md), assembled from one router
per area: the write side and definitions (``engine.api``), audit (``engine.audit``), the read
side and dashboard (``projections``) and automation (``workflows``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from engine.api import routes_deals, routes_feed, routes_lists, routes_pipelines, routes_system
from engine.api.edge import StorableParams
from engine.api.errors import install_error_handlers
from engine.api.middleware import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    BodySizeLimit,
    RequestLog,
)
from engine.api.openapi import describe_openapi
from engine.audit.api import router as audit_router
from engine.services import Services
from projections.api import router as projections_router
from projections.dashboard.routes import router as dashboard_router
from projections.forecast_api import router as forecast_router
from projections.review_api import router as review_router
from workflows.api import router as workflows_router
from workflows.routes_subscriptions import router as subscriptions_router

ROUTERS = (
    routes_system.router,
    routes_lists.router,  # GET /v1/pipelines before /v1/pipelines/{pipeline_id}
    routes_feed.router,
    routes_pipelines.router,
    routes_deals.router,
    projections_router,
    workflows_router,
    subscriptions_router,
    audit_router,
    dashboard_router,
    forecast_router,
    review_router,
)


def create_app(
    services: Services,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    on_shutdown: Sequence[Callable[[], object]] = (),
) -> FastAPI:
    """The HTTP app over ``services``. ``on_shutdown`` runs as the app stops (e.g. flushing
    traces): uvicorn re-raises SIGTERM once it has stopped, so code after ``uvicorn.run``
    never runs."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if services.projections is not None and getattr(services.projections, "runs_here", False):
            services.projections.start()
        try:
            yield
        finally:
            if services.projections is not None:
                services.projections.stop()
            for hook in on_shutdown:
                hook()

    api = FastAPI(
        title="dealflow",
        version="1",
        summary="Event-sourced sales pipeline engine",
        description="HTTP contract v1: deal events in, deal state, history, metrics and automation out.",
        lifespan=lifespan,
        # HTTP spans come from engine.api.middleware.RequestLog, which never records a query
        # string (a dashboard link may carry a token); FastAPI's endpoint spans nest under it.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    api.state.services = services
    install_error_handlers(api)
    for router in ROUTERS:
        api.include_router(router)
    describe_openapi(api)  # errors, security, replays, media types, times: engine.api.openapi
    api.add_middleware(BodySizeLimit, max_bytes=max_body_bytes, timeout_s=body_timeout_s)  # type: ignore[arg-type]
    api.add_middleware(StorableParams)  # type: ignore[arg-type]
    api.add_middleware(RequestLog)  # outermost: it sees every answer, 413s included
    return api
