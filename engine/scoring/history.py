"""The closed deals of a pipeline as training samples, from one pass over the event log.

Each sample is the deal as it stood at the end of the last instant *before* its close (or just
after it was opened, when it opened and closed at one instant): facts or activities recorded
at the close itself (an importer's implied criteria, say) would otherwise tell the model the
outcome. A deal reopened and still open is no sample; one closed again counts once, as last
closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from engine.domain.deal_basics import WON
from engine.domain.deal_events import DealEvent, Lost, Opened, Reopened, Won
from engine.scoring.features import Snapshot, features, snapshot

PAGE = 5_000


@dataclass(frozen=True, slots=True)
class Sample:
    deal_id: str
    closed_at: datetime
    won: bool
    features: dict[str, Any]


def closed_samples(
    app: Any, pipeline_id: str, *, until_position: int | None = None
) -> tuple[list[Sample], int]:
    """Samples of ``pipeline_id``'s closed deals, in deal id order, and the log position read up
    to (give it back as ``until_position`` to read the same history again).

    Only open deals are held: a deal's state is dropped when it closes (its sample is taken
    then) and read again from its own events should it be reopened. At a million deals holding
    every deal took 5.2 GB; most deals are closed."""
    head = app.max_position() if until_position is None else until_position
    fold = _Fold(app, pipeline_id)
    start = 1
    while start <= head:
        page = app.recorder.select_notifications(start, PAGE, stop=head)
        if not page:
            break
        for notification in page:
            event = app.mapper.to_domain_event(notification)
            if isinstance(event, DealEvent):
                fold.apply(event)
        start = page[-1].id + 1
    ordered = sorted(fold.samples.values(), key=lambda s: s.deal_id)
    return ordered, head


class _Fold:
    def __init__(self, app: Any, pipeline_id: str) -> None:
        self.app = app
        self.pipeline_id = pipeline_id
        self.deals: dict[UUID, Any] = {}  # the pipeline's open deals
        self.closed: set[UUID] = set()  # its closed deals (their state dropped)
        self.before: dict[UUID, Snapshot] = {}
        self.samples: dict[UUID, Sample] = {}

    def apply(self, event: DealEvent) -> None:
        key = event.originator_id
        if isinstance(event, Opened):
            if event.pipeline_id != self.pipeline_id or key in self.deals or key in self.closed:
                return
            self.deals[key] = event.mutate(None)
            self.before[key] = snapshot(self.deals[key])
            return
        deal = self.deals.get(key)
        if deal is None:
            if key not in self.closed or not isinstance(event, Reopened):
                return  # another pipeline's deal, or a closed one's event (read on reopening)
            deal = self._reload(key, event.originator_version - 1)
            if deal is None:
                return
        if event.originator_version != deal.version + 1:
            return
        if _later(event, deal):
            self.before[key] = snapshot(deal)  # the state at the end of the previous instant
        event.mutate(deal)
        if isinstance(event, (Won, Lost)):
            self.samples[key] = Sample(
                deal_id=deal.deal_id,
                closed_at=event.occurred_at,
                won=deal.status == WON,
                features=features(self.before[key], event.occurred_at),
            )
            del self.deals[key], self.before[key]
            self.closed.add(key)
        elif isinstance(event, Reopened):
            self.samples.pop(key, None)

    def _reload(self, key: UUID, version: int) -> Any:
        """A closed deal as it stood before being reopened, read from its own events, with its
        snapshot before the last instant kept as the fold keeps it."""
        deal: Any = None
        before: Snapshot | None = None
        for stored in self.app.recorder.select_events(key, lte=version):
            event = self.app.mapper.to_domain_event(stored)
            if not isinstance(event, DealEvent):
                continue
            if deal is not None and _later(event, deal):
                before = snapshot(deal)
            deal = event.mutate(deal)
            if before is None:
                before = snapshot(deal)  # just opened
        if deal is None or before is None or deal.version != version:
            return None
        self.closed.discard(key)
        self.deals[key] = deal
        self.before[key] = before
        return deal


def _later(event: DealEvent, deal: Any) -> bool:
    """The event begins a later instant than the deal's last one."""
    return deal.last_occurred_at is not None and event.occurred_at > deal.last_occurred_at
