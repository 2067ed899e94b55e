"""The deals projection, in eventsourcing's terms: a ``Projection`` over a tracking-recorder view.

``process_event`` is eventsourcing's one-event interface (used by the live subscription path
when it receives a single event); ``process_batch`` is the throughput path. Both end in the
same ``view.process`` and so in the same fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection

from projections.readmodel.records import EventRecord, from_domain_event
from projections.readmodel.views import DealsViewMixin


class DealsProjection(Projection[Any]):
    """Deals' current state, their history, and their stage stays."""

    name = "deals"

    def __init__(self, view: DealsViewMixin) -> None:
        super().__init__(view=view)

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:  # type: ignore[override]
        record = from_domain_event(domain_event, tracking.notification_id)
        self.view.process([record] if record is not None else [], tracking)

    def process_batch(
        self, records: Sequence[EventRecord], tracking: Tracking, expected: int | None = None
    ) -> Any:
        return self.view.process(records, tracking, expected)
