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
    to (give it back as ``until_position`` to read the same history again)."""
    head = app.max_position() if until_position is None else until_position
    deals: dict[UUID, Any] = {}
    before: dict[UUID, Snapshot] = {}
    samples: dict[UUID, Sample] = {}
    start = 1
    while start <= head:
        page = app.recorder.select_notifications(start, PAGE, stop=head)
        if not page:
            break
        for notification in page:
            event = app.mapper.to_domain_event(notification)
            if isinstance(event, DealEvent):
                _fold(event, deals, before, samples, pipeline_id)
        start = page[-1].id + 1
    ordered = sorted(samples.values(), key=lambda s: s.deal_id)
    return ordered, head


def _fold(
    event: DealEvent,
    deals: dict[UUID, Any],
    before: dict[UUID, Snapshot],
    samples: dict[UUID, Sample],
    pipeline_id: str,
) -> None:
    key = event.originator_id
    if isinstance(event, Opened):
        if event.pipeline_id != pipeline_id or key in deals:
            return
        deals[key] = event.mutate(None)
        before[key] = snapshot(deals[key])
        return
    deal = deals.get(key)
    if deal is None or event.originator_version != deal.version + 1:
        return
    if deal.last_occurred_at is not None and event.occurred_at > deal.last_occurred_at:
        before[key] = snapshot(deal)  # the state at the end of the previous instant
    event.mutate(deal)
    if isinstance(event, (Won, Lost)):
        samples[key] = Sample(
            deal_id=deal.deal_id,
            closed_at=event.occurred_at,
            won=deal.status == WON,
            features=features(before[key], event.occurred_at),
        )
    elif isinstance(event, Reopened):
        samples.pop(key, None)
