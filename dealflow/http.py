"""The HTTP API (contract: shared HTTP contract v1, see docs/api.md), assembled from one router
per area: the write side and definitions (``engine.api``), audit (``engine.audit``), the read
side and dashboard (``projections``) and automation (``workflows``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from engine.api import routes_deals, routes_pipelines, routes_system
from engine.api.bodies import describe_hand_read_bodies
from engine.api.errors import install_error_handlers
from engine.api.middleware import DEFAULT_MAX_BODY_BYTES, BodySizeLimit
from engine.audit.api import router as audit_router
from engine.services import Services
from projections.api import router as projections_router
from projections.dashboard.routes import router as dashboard_router
from projections.forecast_api import router as forecast_router
from projections.review_api import router as review_router
from workflows.api import router as workflows_router

ROUTERS = (
    routes_system.router,
    routes_pipelines.router,
    routes_deals.router,
    projections_router,
    workflows_router,
    audit_router,
    dashboard_router,
    forecast_router,
    review_router,
)


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
    for router in ROUTERS:
        api.include_router(router)
    describe_hand_read_bodies(api)
    api.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)  # type: ignore[arg-type]
    return api
