"""The long-running processes: ``serve``, ``worker``, ``projections run`` and ``dev``.

Each builds its services here, in the composition root, from the pieces the areas provide
(``projections.runtime.ProjectionsService``, ``workflows.worker.AutomationProcess``), and stops
cleanly on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from dealflow.http import create_app
from dealflow.preflight import SetupError, check_port, check_temporal
from dealflow.revenue import revenue_hooks
from dealflow.runtime import build_services
from dealflow.server import uvicorn_options
from dealflow.telemetry import configure_tracing
from dealflow.workers import announce, check_workers, serve_workers
from engine.logs import configure_logging
from engine.ops_server import start_from_env
from engine.persistence.settings import StoreSettings
from engine.settings import Settings
from engine.tokens import TokenStore


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    check_port(args.host, args.port, "serve")
    check_workers(args.workers, StoreSettings.from_env())
    configure_logging(args.log_level)
    if args.workers > 1:
        return serve_workers(args)  # dealflow.workers: uvicorn's supervisor and N workers
    provider = configure_tracing("api")
    services = build_services(run_projections=not args.no_projections)
    announce(services)
    settings = Settings.load()
    app = create_app(
        services,
        body_timeout_s=settings.http_body_timeout,
        on_shutdown=[provider.shutdown] if provider is not None else [],
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=None,  # our handler (engine.logs): JSON off a terminal
        access_log=False,  # RequestLog writes one line per request, never a query string
        workers=1,
        **uvicorn_options(settings),  # slow and idle clients are cut off (dealflow.server)
    )
    services.close()
    return 0


def projections_run(args: argparse.Namespace) -> int:
    """Keep the read models current until SIGTERM or Ctrl-C (a batch in flight completes or
    rolls back; either way the tracked position stays exact)."""
    from engine.application import DealflowApp
    from engine.persistence.settings import schema_lock
    from projections.runtime import ProjectionsService

    configure_logging(args.log_level)
    provider = configure_tracing("projections")
    store = StoreSettings.from_env()
    service = ProjectionsService(DealflowApp(store), run=True)
    # The ops port's /metrics takes the API's tokens (engine.ops_server). Under the schema
    # lock: the token table may be created here while replicas start (see schema_lock).
    with schema_lock(store):
        tokens = TokenStore(service.app.db, Settings.load().bootstrap_token)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    service.start()
    ops = start_from_env(
        # The runner is not ready while a projection keeps failing (unlike an API replica).
        ready=lambda: (
            service.app.max_position() >= 0
            and not any(item["failing"] for item in service.status())
        ),
        metrics=lambda: {
            f'dealflow_projection_lag{{projection="{item["name"]}"}}': float(item["lag"])
            for item in service.status()
        },
        authenticate=tokens.authenticate,
    )
    print(f"projections running: {', '.join(service.names)}", flush=True)
    while not stopping.wait(1.0):
        pass
    if ops is not None:
        ops.stop()
    service.stop()
    service.app.close()
    print("projections stopped", flush=True)
    if provider is not None:
        provider.shutdown()
    return 0


async def until_signalled(work: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``work(stop)``; SIGINT/SIGTERM set ``stop`` (a second signal is ignored, shutdown is quick)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await work(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def worker(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    provider = configure_tracing("worker")

    async def work(stop: asyncio.Event) -> None:
        from workflows.settings import TemporalSettings
        from workflows.worker import AutomationProcess

        temporal = TemporalSettings.from_env()
        check_temporal(temporal.address, temporal.explicit_address)
        services = build_services(run_projections=False)
        client = await temporal.connect()
        process = AutomationProcess(
            services.app,
            client,
            temporal.task_queue,
            run_worker=not args.no_worker,
            run_bridge=not args.no_bridge,
            bridge_options=_bridge_options(),
            max_concurrent_activities=args.max_concurrent_activities,
            **revenue_hooks(services.app),
        )
        await process.start()
        ops = start_from_env(
            ready=lambda: services.app.max_position() >= 0,
            metrics=lambda: _worker_metrics(services.app, process),
            authenticate=services.tokens.authenticate,
        )
        logging.getLogger("dealflow.worker").info(
            "worker on %s (namespace %s, task queue %s)",
            temporal.address,
            temporal.namespace,
            temporal.task_queue,
        )
        try:
            await _first(stop.wait(), process.wait())
        finally:
            if ops is not None:
                ops.stop()
            await process.stop()
            services.close()

    asyncio.run(until_signalled(work))
    if provider is not None:
        provider.shutdown()
    return 0


def _worker_metrics(app: Any, process: Any) -> dict[str, float]:
    """What Prometheus scrapes from a worker: the log head and how far the bridge trails it."""
    head = float(app.max_position())
    metrics = {"dealflow_log_position": head}
    bridge = getattr(process, "bridge", None)
    if bridge is not None:
        metrics["dealflow_bridge_position"] = float(bridge.position)
        metrics["dealflow_bridge_lag"] = head - float(bridge.position)
    return metrics


def _bridge_options() -> dict[str, object]:
    return {"workflow_id_prefix": Settings.load().workflow_id_prefix}


async def _first(*awaitables: Awaitable[object]) -> None:
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    for task in done:
        task.result()


def dev(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    provider = configure_tracing("dev")

    async def work(stop: asyncio.Event) -> None:
        import uvicorn

        from workflows.devserver import DevServer, port_free
        from workflows.settings import TemporalSettings
        from workflows.worker import AutomationProcess

        log = logging.getLogger("dealflow.dev")
        store = StoreSettings.from_env()
        temporal = TemporalSettings.from_env()
        server: DevServer | None = None
        check_port(args.host, args.port, "dev")
        if temporal.explicit_address:
            check_temporal(temporal.address)
        else:
            if not port_free(args.temporal_port):
                raise SetupError(
                    f"port {args.temporal_port} (the Temporal dev server's) is already in use; "
                    "pass --temporal-port or point TEMPORAL_ADDRESS at a running server"
                )
            server = DevServer(
                port=args.temporal_port,
                ui_port=args.temporal_ui_port,
                db_file=store.home / "temporal.sqlite" if not store.is_postgres else None,
            )
            log.info("starting the Temporal dev server on %s", server.address)
            await server.start()
            temporal = TemporalSettings(**{**temporal.__dict__, "address": server.address})
        services = build_services(store, run_projections=not args.no_projections)
        process: AutomationProcess | None = None
        try:
            client = await temporal.connect()
            process = AutomationProcess(
                services.app,
                client,
                temporal.task_queue,
                bridge_options=_bridge_options(),
                **revenue_hooks(services.app),
            )
            await process.start()
            settings = Settings.load()
            api = _quiet_server(
                uvicorn.Config(
                    create_app(services, body_timeout_s=settings.http_body_timeout),
                    host=args.host,
                    port=args.port,
                    log_level=args.log_level,
                    log_config=None,
                    access_log=False,
                    lifespan="on",
                    **uvicorn_options(settings),
                )
            )
            serving = asyncio.create_task(api.serve())
            log.info(
                "dealflow dev: API on http://%s:%s, Temporal at %s, store %s",
                args.host,
                args.port,
                temporal.address,
                store.backend,
            )
            try:
                await _first(stop.wait(), process.wait(), serving)
            finally:
                api.should_exit = True
                await asyncio.wait([serving], timeout=10)
        finally:
            if process is not None:
                await process.stop()
            services.close()
            if server is not None:
                server.stop()
            log.info("dealflow dev stopped")

    asyncio.run(until_signalled(work))
    if provider is not None:
        provider.shutdown()
    return 0


def _quiet_server(config: Any) -> Any:
    """uvicorn's Server without its own signal handling (``dealflow dev`` owns the signals)."""
    import uvicorn

    class QuietServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return QuietServer(config)


def register_projections_run(projections: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `dealflow projections run` beside the area's own `status` and `rebuild`."""
    run = projections.add_parser(
        "run", help="keep the read models current (a separate process; SIGTERM stops)"
    )
    run.add_argument("--log-level", default="info")
    run.set_defaults(func=projections_run)


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `serve`, `worker` and `dev`."""
    serve_cmd = commands.add_parser(
        "serve", help="run the HTTP API (and, by default, the projections)"
    )
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8000)
    serve_cmd.add_argument(
        "--no-projections",
        action="store_true",
        help="leave read models to `dealflow projections run`",
    )
    serve_cmd.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API processes on the port (PostgreSQL only; projections stay in one process)",
    )
    serve_cmd.add_argument("--log-level", default="info")
    serve_cmd.set_defaults(func=serve)

    worker_cmd = commands.add_parser(
        "worker", help="run the Temporal worker and the event-to-workflow bridge"
    )
    worker_cmd.add_argument("--no-bridge", action="store_true", help="run only the worker")
    worker_cmd.add_argument("--no-worker", action="store_true", help="run only the bridge")
    worker_cmd.add_argument("--max-concurrent-activities", type=int, default=32)
    worker_cmd.add_argument("--log-level", default="info")
    worker_cmd.set_defaults(func=worker)

    dev_cmd = commands.add_parser(
        "dev", help="the whole local stack in one process tree (Ctrl-C stops it)"
    )
    dev_cmd.add_argument("--host", default="127.0.0.1")
    dev_cmd.add_argument("--port", type=int, default=8000)
    dev_cmd.add_argument(
        "--temporal-port",
        type=int,
        default=7233,
        help="dev server port (if TEMPORAL_ADDRESS is unset)",
    )
    dev_cmd.add_argument(
        "--temporal-ui-port", type=int, default=None, help="serve the Temporal Web UI on this port"
    )
    dev_cmd.add_argument("--no-projections", action="store_true")
    dev_cmd.add_argument("--log-level", default="info")
    dev_cmd.set_defaults(func=dev)
