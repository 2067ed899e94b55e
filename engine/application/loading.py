"""Loading deals: what a batch needs in as few queries as possible, and reads of one deal.

Recently written deals come from :class:`RecentDeals`, a small per-process cache of *committed*
state, caught up with anything another writer stored since.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from engine.application.definitions import DefinitionStore
from engine.application.messages import Command
from engine.commands import OpenedIn
from engine.domain.deal import Deal, DealEvent, PipelineRef, deal_uuid
from engine.domain.errors import DomainError, NotFound, ValidationFailed
from engine.domain.events import iso
from engine.persistence.recorders import IdempotencyRecord


@dataclass
class Work:
    """The deals a batch touches, as they evolve while its commands are applied."""

    deals: dict[UUID, Deal | None] = field(default_factory=dict)
    pipelines: dict[str, PipelineRef] = field(default_factory=dict)
    # Keys of events dealflow itself adds to the batch (post-purchase follow-ups): every stored
    # event has its idempotency record, which is what lets audit tell an inserted row.
    extra_keys: list[IdempotencyRecord] = field(default_factory=list)


class RecentDeals:
    """Deals as last committed by this process, so a deal that spans batches is not re-read
    and re-decoded in full each time. Only committed state goes in, and callers get copies:
    a batch that fails to commit can never leave its working state behind here."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._deals: OrderedDict[UUID, Deal] = OrderedDict()
        self._lock = threading.Lock()

    def copies(self, ids: set[UUID]) -> dict[UUID, Deal]:
        found: dict[UUID, Deal] = {}
        with self._lock:
            for aggregate_id in ids:
                deal = self._deals.get(aggregate_id)
                if deal is not None:
                    found[aggregate_id] = deal
        return {aggregate_id: copy.deepcopy(deal) for aggregate_id, deal in found.items()}

    def remember(self, deals: Iterable[Deal]) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            for deal in deals:
                self._deals[deal.id] = deal
                self._deals.move_to_end(deal.id)
            while len(self._deals) > self.capacity:
                self._deals.popitem(last=False)


def followup_id(deal_id: str, pipeline_id: str) -> str:
    """The id of the deal a won deal continues as, in its pipeline's ``after_won`` pipeline."""
    return f"{deal_id}:{pipeline_id}"[:200]


class DealLoading(DefinitionStore):
    """Loading deals and idempotency keys for the write path, and reading one deal.
    Part of :class:`DealflowApp`."""

    _recent: RecentDeals

    def _known_keys(self, event_ids: list[str]) -> dict[str, tuple[str, str, int]]:
        records = self.recorder.select_idempotency(list(dict.fromkeys(event_ids)))  # type: ignore[attr-defined]
        return {r.event_id: (r.request_hash, r.deal_id, r.version) for r in records}

    def _load_deals(
        self,
        work: Work,
        ids: set[UUID],
        known: Mapping[UUID, Deal | None] | None = None,
        carried: Mapping[UUID, Deal | None] | None = None,
    ) -> None:
        """Bring the deals a batch touches into ``work``: recently written ones from memory,
        caught up with anything another writer stored since; the rest in one query.
        ``known``: states the caller read earlier, caught up the same way. ``carried``: deals
        as a batch not committed yet left them, taken as they are (the store lags them)."""
        if carried:
            taken = ids & carried.keys()
            for aggregate_id in taken:
                work.deals[aggregate_id] = carried[aggregate_id]
            ids = ids - taken
            if not ids:
                return
        recent = self._recent.copies(ids)
        for aggregate_id, deal in (known or {}).items():
            if deal is None or aggregate_id not in ids:
                continue
            if aggregate_id not in recent or recent[aggregate_id].version < deal.version:
                recent[aggregate_id] = copy.deepcopy(deal)
        if not recent and len(ids) <= 4:
            for aggregate_id in ids:
                work.deals[aggregate_id] = self._get_deal(aggregate_id)
            return
        floors = {aggregate_id: deal.version for aggregate_id, deal in recent.items()}
        stored = self.recorder.select_events_for_many(sorted(ids), gt=floors)  # type: ignore[attr-defined]
        for aggregate_id in ids:
            work.deals[aggregate_id] = recent.get(aggregate_id)
        for record in stored:
            event = cast(DealEvent, self.mapper.to_domain_event(record))
            work.deals[event.originator_id] = event.mutate(work.deals[event.originator_id])

    def _load_followups(
        self,
        work: Work,
        fresh: list[Command],
        carried: Mapping[UUID, Deal | None] | None = None,
    ) -> None:
        """Load, in one go, the post-purchase deals that winning these deals would open, so that
        deciding whether one already exists costs no query per won deal. A deal opened and won
        in the same batch (an importer's replay) is not stored yet: its pipeline comes from its
        ``opened`` command, else each of its wins would check for its follow-up on its own."""
        opened_in = {
            deal_uuid(c.deal_id): c.payload.pipeline_id
            for c in fresh
            if isinstance(c.payload, OpenedIn)
        }
        candidates: set[UUID] = set()
        for command in fresh:
            if command.type != "won":
                continue
            aggregate_id = deal_uuid(command.deal_id)
            deal = work.deals.get(aggregate_id)
            pipeline_id = deal.pipeline_id if deal is not None else opened_in.get(aggregate_id)
            if pipeline_id is None:
                continue
            try:
                target = self._pipeline(work, pipeline_id).definition.after_won
            except DomainError:
                continue
            if target:
                candidates.add(deal_uuid(followup_id(command.deal_id, target)))
        missing = candidates - work.deals.keys()
        if missing:
            self._load_deals(work, missing, carried=carried)

    def _pipeline(self, work: Work, pipeline_id: str) -> PipelineRef:
        """The pipeline's current version, read once per batch."""
        ref = work.pipelines.get(pipeline_id)
        if ref is None:
            try:
                ref = self.pipeline_ref(pipeline_id)
            except NotFound as missing:
                raise ValidationFailed(
                    f"pipeline {pipeline_id!r} does not exist", field="pipeline_id"
                ) from missing
            work.pipelines[pipeline_id] = ref
        return ref

    def _get_deal(self, aggregate_id: UUID, version: int | None = None) -> Deal | None:
        try:
            return self.repository.get(aggregate_id, version=version)  # type: ignore[no-any-return]
        except AggregateNotFoundError:
            return None

    def _exists(self, aggregate_id: UUID) -> bool:
        return bool(self.recorder.select_events(aggregate_id, limit=1))

    def deal(self, deal_id: str, *, version: int | None = None) -> Deal:
        deal = self._get_deal(deal_uuid(deal_id), version)
        if deal is None:
            raise NotFound(f"deal {deal_id!r} does not exist", deal_id=deal_id)
        if version is not None and deal.version != version:
            raise NotFound(
                f"deal {deal_id!r} has no version {version}", deal_id=deal_id, version=version
            )
        return deal

    def deals_by_id(
        self, deal_ids: Iterable[str], known: Mapping[str, Deal | None] | None = None
    ) -> dict[str, Deal | None]:
        """Several deals at once: recently written ones from memory, the rest in one query
        (a burst of automation reads its deals like a batch, not one query per deal).
        ``known``: the same deals as read earlier; only what was stored since is read."""
        by_uuid = {deal_uuid(deal_id): deal_id for deal_id in deal_ids}
        earlier = {deal_uuid(d): deal for d, deal in (known or {}).items()}
        found = self.deals_by_uuid(by_uuid, earlier)
        return {deal_id: found.get(aggregate_id) for aggregate_id, deal_id in by_uuid.items()}

    def deals_by_uuid(
        self, ids: Iterable[UUID], known: Mapping[UUID, Deal | None] | None = None
    ) -> dict[UUID, Deal | None]:
        """:meth:`deals_by_id` by aggregate id (the bridge knows events, not deal ids)."""
        work = Work()
        self._load_deals(work, set(ids), known)
        return work.deals

    def deal_events(self, deal_id: str) -> list[DealEvent]:
        events = list(self.events.get(deal_uuid(deal_id)))
        if not events:
            raise NotFound(f"deal {deal_id!r} does not exist", deal_id=deal_id)
        return events  # type: ignore[return-value]

    def deal_as_of(self, deal_id: str, as_of: datetime) -> Deal:
        """The deal as it stood at a business time: every event that had occurred by then."""
        deal: Deal | None = None
        for event in self.deal_events(deal_id):
            if event.occurred_at > as_of:
                break
            deal = event.mutate(deal)
        if deal is None:
            raise NotFound(
                f"deal {deal_id!r} did not exist at {iso(as_of)}", deal_id=deal_id, as_of=iso(as_of)
            )
        return deal
