"""Many deals at once, as they stand now or stood at a business time: one query for all their
events instead of one load per deal (scoring a pipeline's open deals needs every one)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from engine.domain.deal_basics import deal_uuid
from engine.domain.deal_events import DealEvent


def load_deals(app: Any, deal_ids: Iterable[str], as_of: datetime | None = None) -> dict[str, Any]:
    """``deal_id -> Deal`` for the deals that exist (at ``as_of``: their events that had occurred
    by then, a prefix of each history since business time never runs backwards per deal)."""
    wanted = {deal_uuid(deal_id): deal_id for deal_id in deal_ids}
    deals = load_states(app, wanted, as_of)
    return {wanted[key]: deal for key, deal in deals.items()}


def load_states(
    app: Any, originator_ids: Iterable[UUID], as_of: datetime | None = None
) -> dict[UUID, Any]:
    """``uuid -> Deal`` of those ids that are deals (other aggregates' ids are left out)."""
    deals: dict[Any, Any] = {}
    for record in app.recorder.select_events_for_many(sorted(set(originator_ids))):
        event = app.mapper.to_domain_event(record)
        if not isinstance(event, DealEvent):
            continue
        if as_of is not None and event.occurred_at > as_of:
            continue  # this deal's later events all occurred later too
        current = deals.get(event.originator_id)
        if current is None and event.originator_version != 1:
            continue
        if current is not None and event.originator_version != current.version + 1:
            continue
        deals[event.originator_id] = event.mutate(current)
    return deals
