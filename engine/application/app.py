"""``DealflowApp``: the eventsourcing application, assembled from the concerns of this package."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

from engine.application.loading import RecentDeals
from engine.application.stream import StreamedWrites
from engine.domain.deal import Deal
from engine.persistence.db import Database
from engine.persistence.settings import StoreSettings, schema_lock
from engine.settings import Settings


class DealflowApp(StreamedWrites):
    """The service layer between senders and the Deal aggregates; it takes and returns ids and
    primitives. Its methods come from, bottom up: definitions (versioned pipelines, sequences,
    the directory), loading (deals and idempotency keys), views (deal state, history) and the
    write path (``ingest``, ``record_automation``)."""

    name = "dealflow"
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Deal: 100}  # type: ignore[misc]

    def __init__(
        self, settings: StoreSettings | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.settings = settings or StoreSettings.from_env()
        merged = self.settings.eventsourcing_env()
        merged.update(env or {})
        with schema_lock(self.settings):
            super().__init__(env=merged)
        self.db = Database(self.recorder)
        # Called with (pipeline_id) -> {stage: open deal count}; wired up by the projections.
        self.stage_occupancy: Callable[[str], dict[str, int]] | None = None
        self._builtin_lock = threading.Lock()
        self._definition_cache = {}
        self._recent = RecentDeals(Settings.load().deal_cache)

    def construct_env(self, name: str, env: Any = None) -> Any:
        # Our env (from StoreSettings) wins over the process environment, which may carry
        # eventsourcing variables meant for something else.
        environment = super().construct_env(name, env)
        if env:
            environment.update(env)
        return environment
