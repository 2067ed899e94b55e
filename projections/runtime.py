"""Plugs the projections into a dealflow process: ``attach(services, run=...)``.

``services.projections`` gets an object with ``runs_here``, ``start()``, ``stop()``,
``status()`` and ``wait(position, timeout)``; ``status`` and ``wait`` read the tracking table,
so they also work in an API replica that leaves the running to ``dealflow projections run``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from engine.persistence.settings import schema_lock
from engine.settings import Settings
from projections.readmodel import health
from projections.readmodel.projection import DealsProjection
from projections.readmodel.runner import BatchRunner
from projections.readmodel.views import DealsViewMixin, build_view

log = logging.getLogger("dealflow.projections")
CHECKPOINT_CHECK_SECONDS = 60.0


class ProjectionsService:
    def __init__(self, app: Any, *, run: bool) -> None:
        self.app = app
        self.runs_here = run
        self.view: DealsViewMixin = build_view(app)
        with schema_lock(app.settings):
            health.create_table(app.db)
        self.projection = DealsProjection(self.view)
        self._committed = threading.Condition()
        self.runner = BatchRunner(app, self.projection, on_commit=self._notify)
        self.runners = {self.runner.name: self.runner}
        # The process that keeps the read models current also keeps the audit checkpoints
        # coming (every 10,000 events or 15 minutes, see engine.audit.checkpoints), so a
        # deleted or re-ordered tail of the log is caught without anyone remembering to ask.
        # On a thread of its own: sealing a minute of a busy log took two thirds of the
        # projection thread's time when it ran in the commit callback (bench crm-replay), and
        # the read models fell behind meanwhile.
        self._stopping = threading.Event()
        self._refresher: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self.runs_here:
            self.runner.start()
            self._checkpointer = threading.Thread(
                target=self._keep_checkpoints, name="audit-checkpoint", daemon=True
            )
            self._checkpointer.start()
            interval = Settings.load().score_refresh
            if interval > 0:
                self._refresher = threading.Thread(
                    target=self._refresh_scores, args=(interval,), name="score-refresh", daemon=True
                )
                self._refresher.start()

    def stop(self) -> None:
        self._stopping.set()
        self.runner.stop()
        for thread in (self._refresher, self._checkpointer):
            if thread is not None:
                thread.join(timeout=10)

    def _refresh_scores(self, interval: float) -> None:
        """Keep each open deal's static score part current (score_cache), so that ranking a
        pipeline by score stays one statement after deals move and models are retrained."""
        from projections.queries import score_cache

        while not self._stopping.wait(interval):
            try:
                score_cache.refresh_all(self.app)
            except Exception:  # noqa: BLE001 - the next pass tries again; queries fill too
                log.warning("score refresh failed", exc_info=True)

    def _notify(self, _: int) -> None:
        with self._committed:
            self._committed.notify_all()

    def _keep_checkpoints(self) -> None:
        while not self._stopping.wait(CHECKPOINT_CHECK_SECONDS):
            self._checkpoint()

    def _checkpoint(self) -> None:
        from engine.audit.checkpoints import maybe_write_checkpoint

        try:
            maybe_write_checkpoint(self.app)
        except Exception:  # noqa: BLE001 - e.g. another process wrote the same checkpoint
            log.warning("audit checkpoint skipped", exc_info=True)

    # -- what the API and the CLI ask ----------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self.runners)

    def position(self, name: str = "deals") -> int:
        return self.runners[name].projection.view.position()

    def status(self) -> list[dict[str, Any]]:
        head = self.app.max_position()
        failing = health.failures(self.app.db)
        items = []
        for name, runner in self.runners.items():
            position = runner.projection.view.position()
            failure = failing.get(name)
            items.append(
                {
                    "name": name,
                    "position": position,
                    "head": head,
                    "lag": max(head - position, 0),
                    "running": runner.running,
                    "runs_here": self.runs_here,
                    "events_processed": runner.stats.processed,
                    # From the table the runner writes, wherever it runs.
                    "last_error": failure["error"] if failure else runner.stats.last_error,
                    "failing": failure is not None,
                    "failing_for_s": failure["failing_for_s"] if failure else None,
                    "failures": failure["failures"] if failure else 0,
                }
            )
        return items

    def wait(self, position: int, timeout: float = 5.0) -> bool:
        """True once every projection has processed ``position``; False after ``timeout``."""
        deadline = time.monotonic() + max(timeout, 0.0)
        pause = 0.01
        while True:
            if all(r.projection.view.position() >= position for r in self.runners.values()):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self.runner.running:
                with self._committed:
                    self._committed.wait(min(remaining, 0.25))
            else:
                time.sleep(min(remaining, pause))
                pause = min(pause * 2, 0.2)

    def catch_up(self, progress: Callable[[int], None] | None = None) -> int:
        """Process everything recorded so far in this thread (tests, the CLI, benches)."""
        return self.runner.catch_up(until=self.app.max_position(), progress=progress)

    def rebuild(
        self,
        name: str | None = None,
        progress: Callable[[int], None] | None = None,
        workers: int = 2,
    ) -> int:
        """Rebuild from the start of the log. On PostgreSQL with ``workers`` > 0 deal ranges are
        folded in that many processes (:mod:`projections.readmodel.rebuild`); otherwise the
        runner catches up page by page."""
        from projections.readmodel.rebuild import parallel_rebuild, supports
        from projections.readmodel.views import PostgresDealsView

        for runner_name, runner in self.runners.items():
            if name is None or name == runner_name:
                view = runner.projection.view
                parallel = workers > 0 and isinstance(view, PostgresDealsView)
                if parallel and supports(self.app) and not runner.running:
                    parallel_rebuild(self.app, view, workers=workers, progress=progress)
                    view.analyze()
                    continue
                view.reset(bulk=True)
                try:
                    runner.catch_up(until=self.app.max_position(), progress=progress)
                finally:
                    view.finish_rebuild()
                view.analyze()
        return self.app.max_position()

    def stage_occupancy(self, pipeline_id: str) -> dict[str, int]:
        """Open deals per stage (the pipeline-in-use guard). When the projections run in this
        process, the read model is first brought up to the log's head (a short wait for the
        runner, else the missing events are folded here); when they run elsewhere the view is
        read as it stands, without waiting."""
        if self.runs_here:
            head = self.app.max_position()
            if self.position() < head and not (
                self.runner.running and self.wait(head, timeout=0.2)
            ):
                self.catch_up()
        rows = self.app.db.fetchall(
            "SELECT stage, open_n AS n FROM rm_stage_stats WHERE pipeline_id = %s AND open_n > 0",
            (pipeline_id,),
        )
        return {row["stage"]: int(row["n"]) for row in rows}


def attach(services: Any, *, run: bool = True) -> None:
    """Create the read-model tables and, if ``run``, the runner that keeps them current."""
    service = ProjectionsService(services.app, run=run)
    services.projections = service
    services.app.stage_occupancy = service.stage_occupancy
