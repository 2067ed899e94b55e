"""Which deal and pipeline a stored aggregate is, for readers of the raw log.

Only a deal's ``opened`` names its deal and pipeline; readers that walk the log (the feed, the
audit export) meet the other events by originator id. A bounded cache keeps the names of the
deals met recently, and one query per page names the rest from their first rows.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from uuid import UUID

from engine.application import DealflowApp
from engine.audit.store import first_rows
from engine.domain.deal import Opened
from engine.persistence.mapper import decode_event

CACHE_SIZE = 50_000
Names = tuple[str | None, str | None]  # (deal_id, pipeline_id)


class DealNames:
    """originator -> (deal_id, pipeline_id), least recently used first out; thread-safe."""

    def __init__(self, app: DealflowApp, size: int = CACHE_SIZE) -> None:
        self.app = app
        self.size = size
        self._known: OrderedDict[UUID, Names] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, originator_id: UUID, names: Names) -> None:
        with self._lock:
            self._known[originator_id] = names
            self._known.move_to_end(originator_id)
            while len(self._known) > self.size:
                self._known.popitem(last=False)

    def get(self, originator_id: UUID) -> Names | None:
        """The deal's names, or None when this cache has not met the deal."""
        with self._lock:
            return self._known.get(originator_id)

    def names_of(self, originator_ids: Iterable[UUID]) -> dict[UUID, Names]:
        """The names of these deals: from the cache, else from their first rows (one query per
        500), which the cache then keeps. The answer holds every deal asked for, however small
        the cache. A deal whose first row is not an ``opened`` is named (None, None)."""
        names: dict[UUID, Names] = {}
        unknown: list[UUID] = []
        for originator_id in dict.fromkeys(originator_ids):
            cached = self.get(originator_id)
            if cached is None:
                unknown.append(originator_id)
            else:
                names[originator_id] = cached
        found = first_rows(self.app, unknown) if unknown else {}
        for originator_id in unknown:
            row = found.get(originator_id)
            learned: Names = (None, None)
            if row is not None:
                opened = decode_event(row.topic, row.state, originator_id, 1, self.app.mapper)
                if isinstance(opened, Opened):
                    learned = (opened.deal_id, opened.pipeline_id)
            names[originator_id] = learned
            self.put(originator_id, learned)
        return names
