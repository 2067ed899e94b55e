"""The dealflow application: the service layer between senders and the Deal aggregates.

It takes and returns ids and primitives. Writes go through :meth:`DealflowApp.ingest`, the one
path every event takes (single HTTP event, batch, importer, automation): check idempotency
keys, load the deals involved, run each command against its deal, and store every resulting
event together with its idempotency key in one transaction.
"""

from __future__ import annotations

import copy
import hashlib
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, cast
from uuid import UUID

import orjson
from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.utils import get_topic

from engine.commands import (
    ActivityLoggedIn,
    FactRecordedIn,
    LostIn,
    OpenedIn,
    ReopenedIn,
    StageChangedIn,
    UpdatedIn,
    WonIn,
    incoming_event,
)
from engine.domain.deal import (
    EVENT_TYPES,
    Deal,
    DealEvent,
    EventMeta,
    PipelineRef,
    deal_uuid,
)
from engine.domain.defaults import BUILT_IN_PIPELINES
from engine.domain.definitions import (
    DIRECTORY,
    PIPELINE,
    SEQUENCE,
    Definition,
    DefinitionApplied,
    definition_uuid,
)
from engine.domain.errors import (
    DealExists,
    DomainError,
    IdempotencyKeyReused,
    NotFound,
    ValidationFailed,
    VersionConflict,
)
from engine.domain.events import iso, utcnow
from engine.domain.pipeline import PipelineDefinition
from engine.next_steps import StepsLookup, next_steps, sequence_steps
from engine.persistence.db import Database
from engine.persistence.recorders import IdempotencyRecord
from engine.persistence.settings import StoreSettings, schema_lock

SYSTEM_ACTOR = "dealflow"
MAX_SAVE_ATTEMPTS = 10


# ---------------------------------------------------------------------------------------------
# What goes in and what comes out
# ---------------------------------------------------------------------------------------------


@dataclass
class Command:
    """One event a sender (or dealflow's automation) asks to record on one deal."""

    deal_id: str
    type: str
    event_id: str
    payload: Any  # an engine.commands model, or a dict for automation types
    request_hash: str
    actor: str
    occurred_at: datetime | None = None
    expected_version: int | None = None

    @classmethod
    def from_body(cls, deal_id: str, body: dict[str, Any], actor: str) -> Command:
        """A sender's event body (as the HTTP contract writes it) as a command.

        Raises pydantic's ValidationError when the body is not a valid deal event."""
        fields = {k: v for k, v in body.items() if k != "deal_id"}
        payload = incoming_event.validate_python(fields)
        return cls(
            deal_id=deal_id,
            type=payload.type,
            event_id=payload.event_id,
            payload=payload,
            request_hash=request_hash(deal_id, fields),
            actor=actor,
            occurred_at=payload.occurred_at,
            expected_version=payload.expected_version,
        )


@dataclass
class Outcome:
    status: str  # "recorded", "duplicate" or "rejected"
    deal_id: str
    event_id: str
    version: int | None = None
    position: int | None = None
    error: DomainError | None = None

    def to_dict(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"index": index, "status": self.status, "version": self.version}
        if self.error is not None:
            item["error"] = self.error.to_dict()
        return item


@dataclass
class _Work:
    """The deals a batch touches, as they evolve while its commands are applied."""

    deals: dict[UUID, Deal | None] = field(default_factory=dict)
    pipelines: dict[str, PipelineRef] = field(default_factory=dict)
    # Keys of events dealflow itself adds to the batch (post-purchase follow-ups): every stored
    # event has its idempotency record, which is what lets audit tell an inserted row.
    extra_keys: list[IdempotencyRecord] = field(default_factory=list)


def _conflicted(outcome: Outcome) -> Outcome:
    """After every retry lost a race, what would have been recorded is reported as a 409."""
    if outcome.status != "recorded":
        return outcome
    current = (outcome.version or 1) - 1
    return Outcome(
        "rejected",
        outcome.deal_id,
        outcome.event_id,
        version=current,
        error=VersionConflict(
            "the deal kept changing under concurrent writers; send the event again",
            current_version=current,
        ),
    )


def request_hash(deal_id: str, body: dict[str, Any]) -> str:
    """The fingerprint that tells a replay from a reused idempotency key."""
    content = {k: v for k, v in body.items() if k != "deal_id"} if "deal_id" in body else body
    canonical = orjson.dumps(
        {"deal_id": deal_id, "body": content}, option=orjson.OPT_SORT_KEYS, default=str
    )
    return hashlib.sha256(canonical).hexdigest()


# ---------------------------------------------------------------------------------------------
# The application
# ---------------------------------------------------------------------------------------------


class DealflowApp(Application[UUID]):
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
        self._recent = RecentDeals(int(os.environ.get("DEALFLOW_DEAL_CACHE", "20000")))

    def construct_env(self, name: str, env: Any = None) -> Any:
        # Our env (from StoreSettings) wins over the process environment, which may carry
        # eventsourcing variables meant for something else.
        environment = super().construct_env(name, env)
        if env:
            environment.update(env)
        return environment

    # -- writes ---------------------------------------------------------------------------------
    def ingest(
        self, commands: Sequence[Command], *, allow_automation: bool = False
    ) -> list[Outcome]:
        """Apply commands in order (per deal), storing all accepted events in one transaction."""
        if not commands:
            return []
        for attempt in range(MAX_SAVE_ATTEMPTS):
            outcomes, deals, keys = self._decide(commands, allow_automation)
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
                    return [_conflicted(outcome) for outcome in outcomes]
                time.sleep(random.uniform(0, 0.002 * 2**attempt))
                continue
            for outcome in outcomes:
                if outcome.status == "recorded":
                    outcome.position = positions.get(
                        (deal_uuid(outcome.deal_id), outcome.version or 0)
                    )
            return outcomes
        raise AssertionError("unreachable")

    def _save_batch(
        self, deals: list[Deal], keys: list[IdempotencyRecord]
    ) -> dict[tuple[UUID, int], int]:
        """Store the batch's events with their idempotency keys in one transaction.

        Bypasses ``Application.save``: deal events come with the JSON they were sealed with
        (their hash covers it), so serialising them again, and the per-object protocol checks
        of ``save``, are pure cost at 5,000 events a batch. Snapshots are still taken.
        """
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        stored: list[StoredEvent] = []
        for deal in deals:
            for event, state in deal.collect_sealed():
                stored.append(
                    StoredEvent(
                        event.originator_id, event.originator_version, _topic(type(event)), state
                    )
                )
                processing_event.events.append(event)  # type: ignore[arg-type]
            processing_event.aggregates[deal.id] = deal  # type: ignore[assignment]
        ids = self.recorder.insert_events(stored, idempotency=keys) or []
        self._take_snapshots(processing_event)
        return {
            (cast(UUID, s.originator_id), s.originator_version): i
            for s, i in zip(stored, ids, strict=True)
        }

    def _decide(
        self, commands: Sequence[Command], allow_automation: bool
    ) -> tuple[list[Outcome], list[Deal], list[IdempotencyRecord]]:
        known = self._known_keys([c.event_id for c in commands])
        work = _Work()
        fresh = [c for c in commands if c.event_id not in known]
        self._load_deals(work, {deal_uuid(c.deal_id) for c in fresh})
        self._load_followups(work, [c for c in fresh if c.type == "won"])
        outcomes: list[Outcome] = []
        keys: list[IdempotencyRecord] = []
        now = utcnow()
        for command in commands:
            seen = known.get(command.event_id)
            if seen is not None:
                outcomes.append(self._replay_outcome(command, seen))
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

    def _replay_outcome(self, command: Command, seen: tuple[str, str, int]) -> Outcome:
        stored_hash, stored_deal, version = seen
        if stored_hash != command.request_hash:
            return Outcome(
                "rejected",
                command.deal_id,
                command.event_id,
                error=IdempotencyKeyReused(
                    f"event_id {command.event_id!r} was already used for a different event",
                    deal_id=stored_deal,
                ),
            )
        return Outcome("duplicate", stored_deal, command.event_id, version=version)

    def _execute(self, work: _Work, deal: Deal | None, command: Command, meta: EventMeta) -> Deal:
        payload = command.payload
        if command.type == "opened":
            assert isinstance(payload, OpenedIn)
            if deal is not None:
                raise DealExists(
                    f"deal {command.deal_id!r} already exists", deal_id=command.deal_id
                )
            ref = self._pipeline(work, payload.pipeline_id)
            fields = payload.model_dump(
                exclude={
                    "type",
                    "event_id",
                    "occurred_at",
                    "expected_version",
                    "pipeline_id",
                    "name",
                    "stage",
                    "currency",
                },
                exclude_none=True,
            )
            return Deal.open(
                command.deal_id,
                ref,
                meta,
                name=payload.name,
                stage=payload.stage,
                currency=payload.currency,
                **fields,
            )
        if deal is None:
            raise NotFound(f"deal {command.deal_id!r} does not exist", deal_id=command.deal_id)
        if command.expected_version is not None and command.expected_version != deal.version:
            raise VersionConflict(
                f"expected version {command.expected_version} but the deal is at {deal.version}",
                current_version=deal.version,
            )
        ref = self._pipeline(work, deal.pipeline_id)
        version = ref.version
        if isinstance(payload, FactRecordedIn):
            deal.record_fact(
                meta, version, fact=payload.fact, value=payload.value, note=payload.note
            )
        elif isinstance(payload, UpdatedIn):
            deal.update(meta, version, payload.changes(), ref.definition)
        elif isinstance(payload, ActivityLoggedIn):
            deal.log_activity(meta, version, activity=payload.activity, summary=payload.summary)
        elif isinstance(payload, StageChangedIn):
            deal.change_stage(meta, ref, to_stage=payload.to_stage)
        elif isinstance(payload, WonIn):
            # Resolve where a won deal continues before winning it: a command that fails after
            # its event was triggered would leave that event pending on the working copy.
            after_won = ref.definition.after_won
            target = self._pipeline(work, after_won) if after_won else None
            deal.win(meta, ref, amount=payload.amount)
            if target is not None:
                self._post_purchase(work, deal, target, meta)
        elif isinstance(payload, LostIn):
            deal.lose(meta, version, reason=payload.reason)
        elif isinstance(payload, ReopenedIn):
            deal.reopen(meta, ref, to_stage=payload.to_stage)
        else:
            try:
                self._execute_automation(deal, command.type, dict(payload), meta, version)
            except (KeyError, TypeError, ValueError) as error:
                raise ValidationFailed(
                    f"malformed {command.type} event: {error}", field="data"
                ) from error
        return deal

    @staticmethod
    def _execute_automation(
        deal: Deal, type_: str, data: dict[str, Any], meta: EventMeta, version: int
    ) -> None:
        if type_ == "nurture_enrolled":
            deal.enroll_nurture(
                meta,
                version,
                sequence_id=data["sequence_id"],
                sequence_version=int(data["sequence_version"]),
            )
        elif type_ == "nurture_touch_sent":
            deal.record_touch(
                meta,
                version,
                sequence_id=data["sequence_id"],
                step=int(data["step"]),
                channel=data["channel"],
                to=data.get("to"),
                subject=data.get("subject"),
            )
        elif type_ == "nurture_stopped":
            deal.stop_nurture(meta, version, sequence_id=data["sequence_id"], reason=data["reason"])
        elif type_ == "escalated":
            deal.escalate(
                meta, version, stage=data["stage"], level=data["level"], to=data.get("to")
            )
        elif type_ == "flagged_stale":
            deal.flag_stale(meta, version, stage=data["stage"])
        else:
            raise ValidationFailed(f"unknown event type {type_!r}", field="type")

    def _post_purchase(
        self, work: _Work, deal: Deal, target_ref: PipelineRef, meta: EventMeta
    ) -> None:
        """A won deal continues in the pipeline's ``after_won`` pipeline, as a linked new deal."""
        target = target_ref.pipeline_id
        followup_id = _followup_id(deal.deal_id, target)
        followup_uuid = deal_uuid(followup_id)
        if followup_uuid in work.deals:
            if work.deals[followup_uuid] is not None:
                return  # already opened (earlier, or by the sender itself)
        elif self._exists(followup_uuid):
            return
        event_id = f"{meta.event_id}:{target}"
        followup = Deal.open(
            followup_id,
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
                event_id, request_hash(followup_id, {"won_deal_id": deal.deal_id}), followup_id, 1
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
        command = Command(
            deal_id=deal_id,
            type=type_,
            event_id=event_id,
            payload=data,
            request_hash=request_hash(deal_id, {"type": type_, **data}),
            actor=actor,
            occurred_at=occurred_at,
        )
        return self.ingest([command], allow_automation=True)[0]

    # -- loading --------------------------------------------------------------------------------
    def _known_keys(self, event_ids: list[str]) -> dict[str, tuple[str, str, int]]:
        records = self.recorder.select_idempotency(list(dict.fromkeys(event_ids)))  # type: ignore[attr-defined]
        return {r.event_id: (r.request_hash, r.deal_id, r.version) for r in records}

    def _load_deals(self, work: _Work, ids: set[UUID]) -> None:
        """Bring the deals a batch touches into ``work``: recently written ones from memory,
        caught up with anything another writer stored since; the rest in one query."""
        recent = self._recent.copies(ids)
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

    def _load_followups(self, work: _Work, wins: list[Command]) -> None:
        """Load, in one go, the post-purchase deals that winning these deals would open, so that
        deciding whether one already exists costs no query per won deal."""
        candidates: set[UUID] = set()
        for command in wins:
            deal = work.deals.get(deal_uuid(command.deal_id))
            if deal is None:
                continue
            try:
                target = self._pipeline(work, deal.pipeline_id).definition.after_won
            except DomainError:
                continue
            if target:
                candidates.add(deal_uuid(_followup_id(command.deal_id, target)))
        missing = candidates - work.deals.keys()
        if missing:
            self._load_deals(work, missing)

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

    # -- views ----------------------------------------------------------------------------------
    def deal_state(self, deal: Deal, *, at: datetime | None = None) -> dict[str, Any]:
        ref = self.pipeline_ref(deal.pipeline_id)
        return deal_view(deal, ref.definition, at or utcnow(), sequence_steps(self))

    def history(self, deal_id: str) -> dict[str, Any]:
        return {"deal_id": deal_id, "events": [history_item(e) for e in self.deal_events(deal_id)]}

    def position_of(self, deal_id: str, version: int) -> int | None:
        table = self.db.events_table
        column = "notification_id" if self.db.is_postgres else "rowid"
        aggregate_id = deal_uuid(deal_id)
        row = self.db.fetchone(
            f"SELECT {column} AS position FROM {table} WHERE originator_id = %s AND originator_version = %s",
            (aggregate_id if self.db.is_postgres else aggregate_id.hex, version),
        )
        return int(row["position"]) if row else None

    def max_position(self) -> int:
        return int(self.recorder.max_notification_id() or 0)

    # -- definitions: pipelines, sequences, the directory --------------------------------------
    def _definition(self, kind: str, key: str, version: int | None = None) -> Definition | None:
        try:
            return self.repository.get(definition_uuid(kind, key), version=version)  # type: ignore[no-any-return]
        except AggregateNotFoundError:
            return None

    def put_definition(self, kind: str, key: str, body: dict[str, Any], actor: str) -> int:
        for _ in range(MAX_SAVE_ATTEMPTS):
            definition = self._definition(kind, key) or Definition.create(kind, key)
            if not definition.apply_body(body, actor, utcnow()):
                return definition.version
            try:
                self.save(definition)
            except IntegrityError:
                continue
            return definition.version
        raise VersionConflict(f"{kind} {key!r} is being changed concurrently", current_version=0)

    def get_definition(
        self, kind: str, key: str, version: int | None = None
    ) -> tuple[int, dict[str, Any]]:
        definition = self._definition(kind, key, version)
        if definition is None and kind == PIPELINE and key in BUILT_IN_PIPELINES:
            self._install_builtin(key)
            definition = self._definition(kind, key, version)
        if definition is None:
            raise NotFound(f"{kind} {key!r} does not exist", **{f"{kind}_id": key})
        return definition.version, definition.body

    def definition_history(self, kind: str, key: str) -> list[dict[str, Any]]:
        return [
            {
                "version": e.originator_version,
                "applied_at": iso(e.timestamp),
                "actor": e.actor,
                "body": e.body,
            }
            for e in cast(
                list[DefinitionApplied], list(self.events.get(definition_uuid(kind, key)))
            )
        ]

    def _install_builtin(self, pipeline_id: str) -> None:
        with self._builtin_lock:
            if self._definition(PIPELINE, pipeline_id) is None:
                body = PipelineDefinition.model_validate(
                    BUILT_IN_PIPELINES[pipeline_id]
                ).model_dump(mode="json", exclude_none=True)
                self.put_definition(PIPELINE, pipeline_id, body, f"{SYSTEM_ACTOR}:built-in")

    def put_pipeline(self, pipeline_id: str, definition: PipelineDefinition, actor: str) -> int:
        from engine.domain.errors import PipelineInUse

        if self.stage_occupancy is not None:
            occupied = self.stage_occupancy(pipeline_id)
            dropped = sorted(
                s for s, n in occupied.items() if n > 0 and not definition.has_stage(s)
            )
            if dropped:
                raise PipelineInUse(
                    f"open deals sit in stages the new definition drops: {', '.join(dropped)}",
                    stages=dropped,
                )
        body = definition.model_dump(mode="json", exclude_none=True)
        return self.put_definition(PIPELINE, pipeline_id, body, actor)

    def pipeline_ref(self, pipeline_id: str, version: int | None = None) -> PipelineRef:
        found_version, body = self.get_definition(PIPELINE, pipeline_id, version)
        return PipelineRef(
            pipeline_id, found_version, _parse_pipeline(pipeline_id, found_version, body)
        )

    def _pipeline(self, work: _Work, pipeline_id: str) -> PipelineRef:
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

    def put_sequence(self, sequence_id: str, body: dict[str, Any], actor: str) -> int:
        return self.put_definition(SEQUENCE, sequence_id, body, actor)

    def put_directory(self, body: dict[str, Any], actor: str) -> int:
        return self.put_definition(DIRECTORY, "team", body, actor)


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


def _followup_id(deal_id: str, pipeline_id: str) -> str:
    return f"{deal_id}:{pipeline_id}"[:200]


_topics: dict[type[Any], str] = {}


def _topic(cls: type[Any]) -> str:
    topic = _topics.get(cls)
    if topic is None:
        topic = _topics[cls] = get_topic(cls)
    return topic


_parsed_pipelines: dict[tuple[str, int], PipelineDefinition] = {}


def _parse_pipeline(pipeline_id: str, version: int, body: dict[str, Any]) -> PipelineDefinition:
    """Definitions never change once applied, so each (id, version) is parsed once per process."""
    key = (pipeline_id, version)
    parsed = _parsed_pipelines.get(key)
    if parsed is None or parsed.model_dump(mode="json", exclude_none=True) != body:
        parsed = PipelineDefinition.model_validate(body)
        _parsed_pipelines[key] = parsed
    return parsed


# ---------------------------------------------------------------------------------------------
# Read shapes (contract: Deal state and History)
# ---------------------------------------------------------------------------------------------


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def deal_view(
    deal: Deal, definition: PipelineDefinition, at: datetime, steps_of: StepsLookup | None = None
) -> dict[str, Any]:
    """The contract's deal state. ``stale`` is judged at ``at`` (now, or the as-of time)."""
    return {
        "deal_id": deal.deal_id,
        "pipeline_id": deal.pipeline_id,
        "pipeline_version": deal.pipeline_version,
        "name": deal.name,
        "stage": deal.stage,
        "status": deal.status,
        "amount": _money(deal.amount),
        "currency": deal.currency,
        "owner": deal.owner,
        "account": deal.account,
        "industry": deal.industry,
        "lead_source": deal.lead_source,
        "decision_maker_role": deal.decision_maker_role,
        "expected_close": deal.expected_close.isoformat() if deal.expected_close else None,
        "country": deal.country,
        "qualification": deal.qualification,
        "attributes": deal.attributes,
        "facts": dict(deal.facts),
        "activities_in_stage": dict(deal.activities_in_stage),
        "opened_at": iso(deal.opened_at) if deal.opened_at else None,
        "stage_entered_at": iso(deal.stage_entered_at) if deal.stage_entered_at else None,
        "closed_at": iso(deal.closed_at) if deal.closed_at else None,
        "lost_reason": deal.lost_reason,
        "stale": is_stale(deal, definition, at),
        "nurture": sorted(deal.nurture),
        "version": deal.version,
        "next_steps": next_steps(deal, definition, at, steps_of),
    }


def is_stale(deal: Deal, definition: PipelineDefinition, at: datetime) -> bool:
    """Open, and in its current stage longer than the stage allows (or flagged by escalation)."""
    if deal.is_closed:
        return False
    if deal.flagged_stale:
        return True
    if not definition.has_stage(deal.stage) or deal.stage_entered_at is None:
        return False
    limit = definition.stage(deal.stage).max_days_in_stage
    return limit is not None and at - deal.stage_entered_at > timedelta(days=limit)


def history_item(event: DealEvent) -> dict[str, Any]:
    return {
        "version": event.originator_version,
        "type": event.TYPE,
        "occurred_at": iso(event.occurred_at),
        "recorded_at": iso(event.timestamp),
        "event_id": event.event_id,
        "actor": event.actor,
        "pipeline_version": event.pipeline_version,
        "hash": event.hash,
        "data": event.data(),
    }


def replay(events: Iterable[DealEvent]) -> Deal | None:
    deal: Deal | None = None
    for event in events:
        deal = event.mutate(deal)
    return deal
