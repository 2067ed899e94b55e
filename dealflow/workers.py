"""``dealflow serve --workers N``: N API processes on one port, uvicorn's worker model.

uvicorn's supervisor (this process) binds the socket, spawns N workers that accept on it,
replaces a worker that dies, and on SIGTERM or Ctrl-C stops them all (each finishes its
requests in flight) before it returns. Each worker builds its own services from the
environment (:func:`api_worker`, the factory uvicorn imports by name), never running the
projections: with projections on, the supervisor runs them, so the read models still have
exactly one writer. PostgreSQL only: SQLite takes one writer at a time on its file, so more
processes would only wait on each other's locks (``serve`` refuses with a one-line error).
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

import uvicorn
from fastapi import FastAPI

from dealflow.http import create_app
from dealflow.preflight import SetupError, describe_store
from dealflow.runtime import build_services
from dealflow.server import worker_options
from dealflow.telemetry import configure_tracing
from engine.logs import configure_logging
from engine.persistence.settings import StoreSettings
from engine.settings import Settings

WORKER_HEADER = "X-Dealflow-Worker"
WORKER_HEALTHCHECK_S = 30


def check_workers(workers: int, store: StoreSettings) -> None:
    """Refuse a worker count this store cannot use (exit 2, one line)."""
    if workers < 1:
        raise SetupError(f"--workers must be at least 1 (got {workers})")
    if workers > 1 and not store.is_postgres:
        raise SetupError(
            f"--workers {workers} needs PostgreSQL (DATABASE_URL): SQLite takes one writer "
            "at a time on its file, so more API processes add lock waits, not throughput; "
            "run one worker"
        )


def announce(services: Any) -> None:
    """Log the store, and warn when no request can authenticate."""
    log = logging.getLogger("dealflow.serve")
    log.info("dealflow serve: store %s", describe_store(services.settings))
    if services.tokens.active_count() == 0 and not Settings.load().bootstrap_token:
        log.warning(
            "no API token in this store and no DEALFLOW_BOOTSTRAP_TOKEN: every request will get "
            "401; create one (dealflow tokens create --name NAME --scopes ingest,read) or set "
            "DEALFLOW_BOOTSTRAP_TOKEN"
        )


def api_worker() -> FastAPI:
    """One worker's app (uvicorn calls this in each worker process): services from the
    environment, projections left to the supervisor or to `dealflow projections run`."""
    provider = configure_tracing("api")
    services = build_services(run_projections=False)
    app = create_app(
        services,
        body_timeout_s=Settings.load().http_body_timeout,
        on_shutdown=[services.close, *([provider.shutdown] if provider is not None else [])],
    )
    app.add_middleware(WorkerHeader)  # type: ignore[arg-type]
    return app


class WorkerHeader:
    """Names this worker (its process id) in /healthz answers: plain ASGI, so that every
    other request passes straight through."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.header = (WORKER_HEADER.lower().encode(), str(os.getpid()).encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/healthz":
            await self.app(scope, receive, send)
            return

        async def named(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, named)


def serve_workers(args: argparse.Namespace) -> int:
    """Run ``args.workers`` API processes (and, unless ``--no-projections``, the projections
    here, in the supervisor) until SIGTERM or Ctrl-C."""
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    log = logging.getLogger("dealflow.serve")
    settings = Settings.load()
    services = build_services(run_projections=not args.no_projections)
    announce(services)
    config = WorkerConfig(
        "dealflow.workers:api_worker",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        log_config=None,
        access_log=False,
        # A spawned worker answers the supervisor's ping only once its imports are done; on a
        # busy machine that takes longer than uvicorn's 5 s, which would kill and respawn it
        # for ever. Longer than that, it is hung.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
        **worker_options(settings),
    )
    sock = config.bind_socket()
    supervisor = Multiprocess(config, sockets=[sock])
    if services.projections is not None and services.projections.runs_here:
        services.projections.start()
        log.info("projections run in the supervisor [%s]", os.getpid())
    try:
        supervisor.run()
    finally:
        sock.close()
        if services.projections is not None:
            services.projections.stop()
        services.close()
    if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
        raise SetupError("an API worker failed to start (its error is logged above)")
    return 0


class WorkerConfig(uvicorn.Config):
    """uvicorn's options plus dealflow's log handler, set up again in each worker (uvicorn
    pickles the config into each spawned worker and calls ``configure_logging`` there)."""

    def configure_logging(self) -> None:
        super().configure_logging()
        configure_logging(str(self.log_level or "info"))
