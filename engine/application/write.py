"""The one write path: :meth:`WritePath.ingest`, which every event takes (single HTTP event,
batch, importer, automation).

Check the idempotency keys, load the deals involved, run each command against its deal (the
Deal method that handles it comes from :data:`engine.application.handlers.DEAL_METHODS`), and
store every resulting event together with its idempotency key in one transaction.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import ProcessingEvent
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.utils import get_topic
from opentelemetry import trace

from engine.application.automation import automation_command, refused
from engine.application.handlers import DEAL_METHODS, open_deal
from engine.application.loading import Work, followup_id
from engine.application.messages import (
    MAX_SAVE_ATTEMPTS,
    SYSTEM_ACTOR,
    Command,
    Outcome,
    conflicted,
    replay_outcome,
    request_hash,
)
from engine.application.views import DealReads
from engine.collector import paused_for
from engine.commands import OpenedIn, WonIn
from engine.domain.deal import EVENT_TYPES, Deal, EventMeta, PipelineRef, deal_uuid
from engine.domain.errors import (
    DealExists,
    DomainError,
    IdempotencyKeyReused,
    NotFound,
    ValidationFailed,
    VersionConflict,
)
from engine.domain.events import utcnow
from engine.persistence.recorders import CopyData, IdempotencyRecord

_tracer = trace.get_tracer("dealflow.application")


class WritePath(DealReads):
    """Deciding commands against their deals and saving the results. Part of
    :class:`DealflowApp`."""

    def ingest(
        self, commands: Sequence[Command], *, allow_automation: bool = False
    ) -> list[Outcome]:
        """Apply commands in order (per deal), storing all accepted events in one transaction."""
        if not commands:
            return []
        with paused_for(len(commands)), _tracer.start_as_current_span("dealflow.ingest") as span:
            span.set_attribute("dealflow.commands", len(commands))
            outcomes = self._ingest(commands, allow_automation)
            span.set_attribute(
                "dealflow.recorded", sum(1 for o in outcomes if o.status == "recorded")
            )
            return outcomes

    def _ingest(self, commands: Sequence[Command], allow_automation: bool) -> list[Outcome]:
        for attempt in range(MAX_SAVE_ATTEMPTS):
            outcomes, deals, keys = self._decide(commands, allow_automation)
            if self._replays_arrived(commands, outcomes):
                continue  # decide again: those commands are now answered as replays
            if not keys:
                return outcomes
            try:
                positions = self._save_batch(deals, keys)
                self._recent.remember(deals)
            except IntegrityError:
                # Another writer got in first (same deal version or same event_id): decide again
                # against what is stored now. Nothing of this attempt was recorded. Random,
                # growing pauses keep writers racing for one deal from colliding in lockstep.
                if attempt == MAX_SAVE_ATTEMPTS - 1:
                    return self._after_lost_races(commands, outcomes)
                time.sleep(random.uniform(0, 0.002 * 2**attempt))
                continue
            # Keyed by the sender's deal id: a str caches its hash, a UUID computes it in Python
            # on every lookup (several per event on this path).
            last = {deal.deal_id: deal for deal in deals}
            for outcome in outcomes:
                if outcome.status == "recorded":
                    outcome.position = positions.get((outcome.deal_id, outcome.version or 0))
                    deal = last.get(outcome.deal_id)
                    if deal is not None and deal.version == outcome.version:
                        outcome.deal = deal
            return outcomes
        return self._after_lost_races(commands, outcomes)

    def _replays_arrived(self, commands: Sequence[Command], outcomes: list[Outcome]) -> bool:
        """Whether a command refused by the domain has had its event_id stored meanwhile.

        A resend racing its original reads the keys before the original commits, then the deal
        after: the deal already shows the original's event (say the deal exists now) and the
        resend would be refused for it. Its key, committed with that event, tells the truth.
        """
        refused_ids = [
            command.event_id
            for command, outcome in zip(commands, outcomes, strict=True)
            if outcome.status == "rejected" and not isinstance(outcome.error, IdempotencyKeyReused)
        ]
        return bool(refused_ids) and bool(self._known_keys(refused_ids))

    def _after_lost_races(
        self, commands: Sequence[Command], outcomes: list[Outcome]
    ) -> list[Outcome]:
        """Every attempt lost a race: a command whose event_id got stored meanwhile is a replay;
        what would have been recorded is reported as a conflict to send again."""
        known = self._known_keys([c.event_id for c in commands])
        return [
            replay_outcome(command, *known[command.event_id])
            if command.event_id in known
            else conflicted(outcome)
            for command, outcome in zip(commands, outcomes, strict=True)
        ]

    def _save_batch(
        self, deals: list[Deal], keys: list[IdempotencyRecord]
    ) -> dict[tuple[str, int], int]:
        """Store the batch's events with their idempotency keys in one transaction.

        Bypasses ``Application.save``: deal events come with the JSON they were sealed with
        (their hash covers it), so serialising them again, and the per-object protocol checks
        of ``save``, are pure cost at 5,000 events a batch. Snapshots are still taken.
        """
        return self._store(collect_sealed(deals), keys)

    def _store(
        self, sealed: SealedBatch, keys: list[IdempotencyRecord]
    ) -> dict[tuple[str, int], int]:
        """Insert what :func:`collect_sealed` took from the deals (the deals are not needed)."""
        extra = {"copy_data": sealed.copy_data} if sealed.copy_data is not None else {}
        ids = self.recorder.insert_events(sealed.stored, idempotency=keys, **extra) or []
        self._take_snapshots(sealed.processing_event)
        return dict(zip(sealed.stored_keys, ids, strict=True))

    def _decide(
        self,
        commands: Sequence[Command],
        allow_automation: bool,
        ahead: Ahead | None = None,
    ) -> tuple[list[Outcome], list[Deal], list[IdempotencyRecord]]:
        """Decide every command against its deal. ``ahead``: a batch decided earlier whose
        write has not committed yet (:mod:`engine.application.stream`): its keys and deals are
        what this batch sees, since the store does not show them yet."""
        known = self._known_keys([c.event_id for c in commands])
        if ahead is not None:
            for command in commands:
                earlier = ahead.keys.get(command.event_id)
                if earlier is not None:
                    known[command.event_id] = earlier
        work = Work()
        fresh = [c for c in commands if c.event_id not in known]
        carried = ahead.deals if ahead is not None else None
        self._load_deals(work, {deal_uuid(c.deal_id) for c in fresh}, carried=carried)
        self._load_followups(work, fresh, carried=carried)
        outcomes: list[Outcome] = []
        keys: list[IdempotencyRecord] = []
        now = utcnow()
        for command in commands:
            seen = known.get(command.event_id)
            if seen is not None:
                outcomes.append(replay_outcome(command, *seen))
                continue
            aggregate_id = deal_uuid(command.deal_id)
            deal = work.deals.get(aggregate_id)
            try:
                if (
                    command.type in EVENT_TYPES
                    and EVENT_TYPES[command.type].AUTOMATION
                    and not allow_automation
                ):
                    raise ValidationFailed(
                        f"events of type {command.type!r} are written by dealflow itself",
                        field="type",
                    )
                meta = EventMeta(
                    occurred_at=command.occurred_at or now,
                    event_id=command.event_id,
                    actor=command.actor,
                    recorded_at=now,
                )
                deal = self._execute(work, deal, command, meta)
            except DomainError as error:
                outcomes.append(
                    Outcome(
                        "rejected",
                        command.deal_id,
                        command.event_id,
                        error=error,
                        version=deal.version if deal else None,
                    )
                )
                continue
            work.deals[aggregate_id] = deal
            keys.append(
                IdempotencyRecord(
                    command.event_id, command.request_hash, command.deal_id, deal.version
                )
            )
            known[command.event_id] = (command.request_hash, command.deal_id, deal.version)
            outcomes.append(
                Outcome("recorded", command.deal_id, command.event_id, version=deal.version)
            )
        touched = [d for d in work.deals.values() if d is not None and d.pending]
        return outcomes, touched, keys + work.extra_keys

    def _execute(self, work: Work, deal: Deal | None, command: Command, meta: EventMeta) -> Deal:
        payload = command.payload
        if isinstance(payload, OpenedIn):
            if deal is not None:
                raise DealExists(
                    f"deal {command.deal_id!r} already exists", deal_id=command.deal_id
                )
            return open_deal(
                command.deal_id, payload, self._pipeline(work, payload.pipeline_id), meta
            )
        if deal is None:
            raise NotFound(f"deal {command.deal_id!r} does not exist", deal_id=command.deal_id)
        if command.expected_version is not None and command.expected_version != deal.version:
            raise VersionConflict(
                f"expected version {command.expected_version} but the deal is at {deal.version}",
                current_version=deal.version,
            )
        ref = self._pipeline(work, deal.pipeline_id)
        method = DEAL_METHODS.get(type(payload))
        if method is None:
            raise ValidationFailed(f"unknown event type {command.type!r}", field="type")
        # Resolve where a won deal continues before winning it: a command that fails after its
        # event was triggered would leave that event pending on the working copy.
        after_won = ref.definition.after_won if isinstance(payload, WonIn) else None
        target = self._pipeline(work, after_won) if after_won else None
        method(deal, meta, ref, payload)
        if target is not None:
            self._post_purchase(work, deal, target, meta)
        return deal

    def _post_purchase(
        self, work: Work, deal: Deal, target_ref: PipelineRef, meta: EventMeta
    ) -> None:
        """A won deal continues in the pipeline's ``after_won`` pipeline, as a linked new deal."""
        target = target_ref.pipeline_id
        new_id = followup_id(deal.deal_id, target)
        new_uuid = deal_uuid(new_id)
        if new_uuid in work.deals:
            if work.deals[new_uuid] is not None:
                return  # already opened (earlier, or by the sender itself)
        elif self._exists(new_uuid):
            return
        event_id = f"{meta.event_id}:{target}"
        followup = Deal.open(
            new_id,
            target_ref,
            EventMeta(meta.occurred_at, event_id, SYSTEM_ACTOR, meta.recorded_at),
            name=deal.name,
            currency=deal.currency,
            owner=deal.owner,
            account=deal.account,
            industry=deal.industry,
            lead_source=deal.lead_source,
            decision_maker_role=deal.decision_maker_role,
            attributes={"won_deal_id": deal.deal_id},
        )
        work.deals[followup.id] = followup
        work.extra_keys.append(
            IdempotencyRecord(
                event_id, request_hash(new_id, {"won_deal_id": deal.deal_id}), new_id, 1
            )
        )

    def record_automation(
        self,
        deal_id: str,
        type_: str,
        data: dict[str, Any],
        *,
        event_id: str,
        actor: str = f"{SYSTEM_ACTOR}:automation",
        occurred_at: datetime | None = None,
    ) -> Outcome:
        """Record what dealflow's own automation did (touches, escalations...), idempotently."""
        try:
            command = automation_command(
                deal_id, type_, data, event_id=event_id, actor=actor, occurred_at=occurred_at
            )
        except DomainError as error:
            return refused(deal_id, event_id, error)
        return self.ingest([command], allow_automation=True)[0]


@dataclass
class Ahead:
    """A batch decided and sent to the store, not yet committed: what the next batch sees."""

    keys: dict[str, tuple[str, str, int]]  # event_id -> (request hash, deal id, version)
    deals: dict[UUID, Deal]


@dataclass
class SealedBatch:
    """A batch's events taken from its deals, ready to insert."""

    stored: list[StoredEvent] = field(default_factory=list)
    stored_keys: list[tuple[str, int]] = field(default_factory=list)  # (deal id, version)
    processing_event: ProcessingEvent[UUID] = field(default_factory=ProcessingEvent)
    copy_data: CopyData | None = None  # the COPY's bytes, when built ahead


def collect_sealed(deals: list[Deal]) -> SealedBatch:
    """Take the deals' pending events with the JSON they were sealed with."""
    sealed = SealedBatch()
    for deal in deals:
        for event, state in deal.collect_sealed():
            sealed.stored.append(
                StoredEvent(
                    event.originator_id, event.originator_version, _topic(type(event)), state
                )
            )
            sealed.stored_keys.append((deal.deal_id, event.originator_version))
            sealed.processing_event.events.append(event)  # type: ignore[arg-type]
        sealed.processing_event.aggregates[deal.id] = deal  # type: ignore[assignment]
    return sealed


_topics: dict[type[Any], str] = {}


def _topic(cls: type[Any]) -> str:
    topic = _topics.get(cls)
    if topic is None:
        topic = _topics[cls] = get_topic(cls)
    return topic
