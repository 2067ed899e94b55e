"""The Deal aggregate: one sales opportunity, from first contact to close and beyond.

Commands (imperative verbs: ``record_fact``, ``change_stage``, ``win``...) check the rules and
then trigger past-tense events (``FactRecorded``, ``StageChanged``, ``Won``...). Event ``apply``
methods only change state; they never check a rule, so a history recorded under an older
pipeline definition replays exactly as it was recorded.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, ClassVar
from uuid import UUID, uuid5

import orjson
from pydantic_core import to_jsonable_python

from engine.domain.errors import (
    DealClosed,
    ExitCriteriaUnmet,
    InvalidTransition,
    ValidationFailed,
)
from engine.domain.events import (
    GENESIS_HASH,
    META_FIELDS,
    DomainEvent,
    chain_hash,
    hash_content,
    iso,
)
from engine.domain.pipeline import PipelineDefinition, evaluate_criteria

DEAL_NAMESPACE = UUID("6f1c9a52-3f0e-4d7e-9a55-0b8a1d9e2c41")

# Fields a sender may set on `opened` and change with `updated`.
DEAL_FIELDS = (
    "name",
    "amount",
    "currency",
    "owner",
    "account",
    "industry",
    "lead_source",
    "decision_maker_role",
    "expected_close",
    "attributes",
)

OPEN, WON, LOST = "open", "won", "lost"


@lru_cache(maxsize=65536)
def deal_uuid(deal_id: str) -> UUID:
    """The aggregate id of a deal, derived from the sender's id so every writer agrees on it."""
    return uuid5(DEAL_NAMESPACE, f"deal:{deal_id}")


@dataclass(frozen=True, slots=True)
class EventMeta:
    """The envelope a command's event is recorded with."""

    occurred_at: datetime
    event_id: str
    actor: str
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class PipelineRef:
    """A pipeline definition at one version: what a command is validated against."""

    pipeline_id: str
    version: int
    definition: PipelineDefinition


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


class DealEvent(DomainEvent):
    TYPE: ClassVar[str] = ""
    # Types only dealflow's own automation may write (a client sending one gets 422).
    AUTOMATION: ClassVar[bool] = False

    occurred_at: datetime
    event_id: str
    actor: str
    pipeline_version: int | None = None
    hash: str

    def data(self) -> dict[str, Any]:
        """The event's own payload, JSON-ready (what history shows as ``data``)."""
        return self.model_dump(mode="json", exclude=META_FIELDS)  # type: ignore[arg-type]

    def content_hash(
        self,
        previous_hash: str,
        data: dict[str, Any] | None = None,
        times: tuple[str, str] | None = None,
    ) -> str:
        """The chain link. ``data`` and ``times`` (occurred_at, recorded_at as :func:`iso`
        spells them) may be passed in when the caller has them already."""
        occurred_at, recorded_at = times or (iso(self.occurred_at), iso(self.timestamp))
        return chain_hash(
            previous_hash,
            hash_content(
                type_=self.TYPE,
                version=self.originator_version,
                occurred_at=occurred_at,
                recorded_at=recorded_at,
                actor=self.actor,
                event_id=self.event_id,
                pipeline_version=self.pipeline_version,
                data=self.data() if data is None else data,
            ),
        )

    def mutate(self, deal: Deal | None) -> Deal:
        assert deal is not None, f"{self.TYPE} cannot start a deal"
        if self.originator_version != deal.version + 1:
            raise ValueError(
                f"event version {self.originator_version} does not follow deal version {deal.version}"
            )
        self.apply(deal)
        deal.version = self.originator_version
        deal.last_hash = self.hash
        deal.last_occurred_at = self.occurred_at
        deal.modified_at = self.timestamp
        if self.pipeline_version is not None:
            deal.pipeline_version = self.pipeline_version
        return deal

    def apply(self, deal: Deal) -> None:
        raise NotImplementedError


class Opened(DealEvent):
    TYPE = "opened"
    deal_id: str
    pipeline_id: str
    name: str
    stage: str
    amount: Decimal | None = None
    currency: str
    owner: str | None = None
    account: str | None = None
    industry: str | None = None
    lead_source: str | None = None
    decision_maker_role: str | None = None
    expected_close: date | None = None
    attributes: dict[str, Any] = {}

    def mutate(self, deal: Deal | None) -> Deal:
        assert deal is None, "a deal is opened once"
        deal = Deal(self.originator_id)
        deal.deal_id = self.deal_id
        deal.pipeline_id = self.pipeline_id
        deal.opened_at = self.occurred_at
        deal.created_at = self.timestamp
        deal.version = 0
        return super().mutate(deal)

    def apply(self, deal: Deal) -> None:
        deal.name = self.name
        deal.amount = self.amount
        deal.currency = self.currency
        deal.owner = self.owner
        deal.account = self.account
        deal.industry = self.industry
        deal.lead_source = self.lead_source
        deal.decision_maker_role = self.decision_maker_role
        deal.expected_close = self.expected_close
        deal.attributes = dict(self.attributes)
        deal.enter_stage(self.stage, self.occurred_at)


class FactRecorded(DealEvent):
    TYPE = "fact_recorded"
    fact: str
    value: bool
    note: str | None = None

    def apply(self, deal: Deal) -> None:
        deal.facts[self.fact] = self.value


class Updated(DealEvent):
    TYPE = "updated"
    changes: dict[str, Any]

    def apply(self, deal: Deal) -> None:
        for name, value in self.changes.items():
            if name == "attributes":
                # Attributes merge key by key; a null value removes the key.
                for key, item in (value or {}).items():
                    if item is None:
                        deal.attributes.pop(key, None)
                    else:
                        deal.attributes[key] = item
            elif name == "amount":
                deal.amount = None if value is None else Decimal(str(value))
            elif name == "expected_close":
                deal.expected_close = None if value is None else date.fromisoformat(str(value))
            else:
                setattr(deal, name, value)


class ActivityLogged(DealEvent):
    TYPE = "activity_logged"
    activity: str
    summary: str | None = None

    def apply(self, deal: Deal) -> None:
        deal.activities_in_stage[self.activity] = deal.activities_in_stage.get(self.activity, 0) + 1
        deal.activity_count += 1
        deal.last_activity_at = self.occurred_at


class StageChanged(DealEvent):
    TYPE = "stage_changed"
    from_stage: str
    to_stage: str
    direction: str  # "forward" or "backward"
    # Every exit criterion that was checked, with whether it held (for the audit timeline).
    criteria: list[dict[str, Any]] = []

    def apply(self, deal: Deal) -> None:
        deal.enter_stage(self.to_stage, self.occurred_at)


class Won(DealEvent):
    TYPE = "won"
    from_stage: str
    amount: Decimal | None = None
    criteria: list[dict[str, Any]] = []

    def apply(self, deal: Deal) -> None:
        deal.status = WON
        deal.closed_at = self.occurred_at
        if self.amount is not None:
            deal.amount = self.amount


class Lost(DealEvent):
    TYPE = "lost"
    from_stage: str
    reason: str

    def apply(self, deal: Deal) -> None:
        deal.status = LOST
        deal.closed_at = self.occurred_at
        deal.lost_reason = self.reason


class Reopened(DealEvent):
    TYPE = "reopened"
    from_status: str
    to_stage: str

    def apply(self, deal: Deal) -> None:
        deal.status = OPEN
        deal.closed_at = None
        deal.lost_reason = None
        deal.enter_stage(self.to_stage, self.occurred_at)


class NurtureEnrolled(DealEvent):
    TYPE = "nurture_enrolled"
    AUTOMATION = True
    sequence_id: str
    sequence_version: int

    def apply(self, deal: Deal) -> None:
        deal.nurture[self.sequence_id] = self.sequence_version


class NurtureTouchSent(DealEvent):
    TYPE = "nurture_touch_sent"
    AUTOMATION = True
    sequence_id: str
    step: int
    channel: str
    to: str | None = None
    subject: str | None = None

    def apply(self, deal: Deal) -> None:
        deal.touches_sent += 1


class NurtureStopped(DealEvent):
    TYPE = "nurture_stopped"
    AUTOMATION = True
    sequence_id: str
    reason: str

    def apply(self, deal: Deal) -> None:
        deal.nurture.pop(self.sequence_id, None)


class Escalated(DealEvent):
    TYPE = "escalated"
    AUTOMATION = True
    stage: str
    level: str  # "owner" or "manager"
    to: str | None = None

    def apply(self, deal: Deal) -> None:
        deal.escalations.append(self.level)


class FlaggedStale(DealEvent):
    TYPE = "flagged_stale"
    AUTOMATION = True
    stage: str

    def apply(self, deal: Deal) -> None:
        deal.flagged_stale = True


EVENT_TYPES: dict[str, type[DealEvent]] = {
    cls.TYPE: cls
    for cls in (
        Opened,
        FactRecorded,
        Updated,
        ActivityLogged,
        StageChanged,
        Won,
        Lost,
        Reopened,
        NurtureEnrolled,
        NurtureTouchSent,
        NurtureStopped,
        Escalated,
        FlaggedStale,
    )
}
AUTOMATION_TYPES = frozenset(t for t, cls in EVENT_TYPES.items() if cls.AUTOMATION)
# Events an automation may still record after a deal closed (stopping a sequence, say).
ALLOWED_WHEN_CLOSED = frozenset({"reopened", "nurture_stopped"})


# ---------------------------------------------------------------------------------------------
# The aggregate
# ---------------------------------------------------------------------------------------------


class Deal:
    """State of one deal, evolved by its events; commands append new events to ``pending``."""

    def __init__(self, id: UUID) -> None:  # noqa: A002 - eventsourcing names it `id`
        self.id = id
        self.version = 0
        self.deal_id = ""
        self.pipeline_id = ""
        self.pipeline_version: int | None = None
        self.name = ""
        self.stage = ""
        self.status = OPEN
        self.amount: Decimal | None = None
        self.currency = "USD"
        self.owner: str | None = None
        self.account: str | None = None
        self.industry: str | None = None
        self.lead_source: str | None = None
        self.decision_maker_role: str | None = None
        self.expected_close: date | None = None
        self.attributes: dict[str, Any] = {}
        self.facts: dict[str, bool] = {}
        self.opened_at: datetime | None = None
        self.created_at: datetime | None = None
        self.modified_at: datetime | None = None
        self.stage_entered_at: datetime | None = None
        self.stage_entries = 0  # how many times the deal entered a stage (names a stay)
        self.closed_at: datetime | None = None
        self.lost_reason: str | None = None
        self.activities_in_stage: dict[str, int] = {}
        self.activity_count = 0
        self.last_activity_at: datetime | None = None
        self.last_occurred_at: datetime | None = None
        self.nurture: dict[str, int] = {}
        self.touches_sent = 0
        self.escalations: list[str] = []
        self.flagged_stale = False
        self.last_hash = GENESIS_HASH
        self.pending: list[DealEvent] = []
        # The stored JSON of each pending event, made once when it was sealed (see _seal).
        self.sealed: dict[int, bytes] = {}

    # -- state helpers used by events ---------------------------------------------------------
    def enter_stage(self, stage: str, at: datetime) -> None:
        self.stage = stage
        self.stage_entered_at = at
        self.stage_entries += 1
        self.activities_in_stage = {}
        self.escalations = []
        self.flagged_stale = False

    def field_value(self, name: str) -> Any:
        if name.startswith("attributes."):
            return self.attributes.get(name.split(".", 1)[1])
        return getattr(self, name)

    @property
    def is_closed(self) -> bool:
        return self.status != OPEN

    # -- eventsourcing protocol ---------------------------------------------------------------
    def collect_events(self) -> list[DealEvent]:
        events, self.pending = self.pending, []
        self.sealed = {}
        return events

    def collect_sealed(self) -> list[tuple[DealEvent, bytes]]:
        """Pending events with their stored JSON (the batch path stores these bytes as they are)."""
        sealed = self.sealed
        return [(event, sealed[event.originator_version]) for event in self.collect_events()]

    def __deepcopy__(self, memo: dict[int, Any]) -> Deal:
        clone = Deal.__new__(Deal)
        for key, value in self.__dict__.items():
            clone.__dict__[key] = (
                copy.deepcopy(value, memo) if isinstance(value, (dict, list)) else value
            )
        return clone

    def _trigger(
        self,
        event_class: type[DealEvent],
        meta: EventMeta,
        pipeline_version: int | None,
        **data: Any,
    ) -> DealEvent:
        """Create the next event in this deal's sequence, chain its hash, apply it, keep it pending."""
        if self.last_occurred_at is not None and meta.occurred_at < self.last_occurred_at:
            raise ValidationFailed(
                "occurred_at is earlier than the deal's previous event "
                f"({iso(self.last_occurred_at)}); a deal's business time never runs backwards",
                field="occurred_at",
            )
        version = self.version + 1
        # Commands pass values already validated (engine.commands) and typed, so the event is
        # constructed without a second validation: it costs more than everything else per event.
        event = _construct(
            event_class,
            {
                "originator_id": self.id,
                "originator_version": version,
                "timestamp": meta.recorded_at,
                "occurred_at": meta.occurred_at,
                "event_id": meta.event_id,
                "actor": meta.actor,
                "pipeline_version": pipeline_version,
                "hash": GENESIS_HASH,
                **data,
            },
        )
        stored = _seal(event, self.last_hash)
        event.mutate(self)
        self.pending.append(event)
        self.sealed[version] = stored
        return event

    # -- commands -----------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        deal_id: str,
        pipeline: PipelineRef,
        meta: EventMeta,
        *,
        name: str,
        stage: str | None = None,
        currency: str | None = None,
        **fields: Any,
    ) -> Deal:
        definition = pipeline.definition
        stage = stage or definition.first_stage
        if not definition.has_stage(stage):
            raise InvalidTransition(
                f"stage {stage!r} is not in pipeline {pipeline.pipeline_id!r}",
                stage=stage,
                stages=definition.stage_ids,
            )
        unknown = set(fields) - set(DEAL_FIELDS)
        if unknown:
            raise ValidationFailed(f"unknown deal fields: {', '.join(sorted(unknown))}")
        _check_amount(fields.get("amount"))
        if fields.get("attributes") is not None:
            fields["attributes"] = to_jsonable_python(fields["attributes"])
        event = _construct(
            Opened,
            {
                "originator_id": deal_uuid(deal_id),
                "originator_version": 1,
                "timestamp": meta.recorded_at,
                "occurred_at": meta.occurred_at,
                "event_id": meta.event_id,
                "actor": meta.actor,
                "pipeline_version": pipeline.version,
                "hash": GENESIS_HASH,
                "deal_id": deal_id,
                "pipeline_id": pipeline.pipeline_id,
                "name": name,
                "stage": stage,
                "currency": currency or definition.currency,
                **{k: v for k, v in fields.items() if v is not None},
            },
        )
        stored = _seal(event, GENESIS_HASH)
        opened = event.mutate(None)
        opened.pending.append(event)
        opened.sealed[1] = stored
        return opened

    def record_fact(
        self,
        meta: EventMeta,
        pipeline_version: int | None,
        *,
        fact: str,
        value: bool,
        note: str | None = None,
    ) -> None:
        self._require_open("fact_recorded")
        self._trigger(FactRecorded, meta, pipeline_version, fact=fact, value=value, note=note)

    def update(
        self, meta: EventMeta, pipeline_version: int | None, changes: dict[str, Any]
    ) -> None:
        self._require_open("updated")
        unknown = set(changes) - set(DEAL_FIELDS)
        if unknown:
            raise ValidationFailed(f"fields that cannot be updated: {', '.join(sorted(unknown))}")
        if not changes:
            raise ValidationFailed("an update needs at least one field")
        if "name" in changes and not changes["name"]:
            raise ValidationFailed("name cannot be empty", field="name")
        _check_amount(changes.get("amount"))
        self._trigger(Updated, meta, pipeline_version, changes=_json_ready(changes))

    def log_activity(
        self,
        meta: EventMeta,
        pipeline_version: int | None,
        *,
        activity: str,
        summary: str | None = None,
    ) -> None:
        self._require_open("activity_logged")
        self._trigger(ActivityLogged, meta, pipeline_version, activity=activity, summary=summary)

    def change_stage(self, meta: EventMeta, pipeline: PipelineRef, *, to_stage: str) -> None:
        self._require_open("stage_changed")
        definition = pipeline.definition
        if not definition.has_stage(to_stage):
            raise InvalidTransition(
                f"stage {to_stage!r} is not in pipeline {pipeline.pipeline_id!r}",
                to_stage=to_stage,
                stages=definition.stage_ids,
            )
        if to_stage == self.stage:
            raise InvalidTransition(f"the deal is already in stage {to_stage!r}", to_stage=to_stage)
        current = self._current_index(definition)
        target = definition.index(to_stage)
        criteria: list[dict[str, Any]] = []
        if target > current:
            # Leaving forward: the current stage and every stage skipped must be satisfied.
            criteria = self._require_criteria(
                definition, definition.stage_ids[current:target], f"move to {to_stage!r}"
            )
        self._trigger(
            StageChanged,
            meta,
            pipeline.version,
            from_stage=self.stage,
            to_stage=to_stage,
            direction="forward" if target > current else "backward",
            criteria=criteria,
        )

    def win(self, meta: EventMeta, pipeline: PipelineRef, *, amount: Decimal | None = None) -> None:
        self._require_open("won")
        _check_amount(amount)
        definition = pipeline.definition
        current = self._current_index(definition)
        criteria = self._require_criteria(
            definition, definition.stage_ids[current:], "win the deal"
        )
        self._trigger(
            Won, meta, pipeline.version, from_stage=self.stage, amount=amount, criteria=criteria
        )

    def lose(self, meta: EventMeta, pipeline_version: int | None, *, reason: str) -> None:
        self._require_open("lost")
        if not reason or not reason.strip():
            raise ValidationFailed("a lost deal needs a reason", field="reason")
        self._trigger(Lost, meta, pipeline_version, from_stage=self.stage, reason=reason)

    def reopen(self, meta: EventMeta, pipeline: PipelineRef, *, to_stage: str) -> None:
        if not self.is_closed:
            raise InvalidTransition("only a won or lost deal can be reopened", status=self.status)
        if not pipeline.definition.has_stage(to_stage):
            raise InvalidTransition(
                f"stage {to_stage!r} is not in pipeline {pipeline.pipeline_id!r}",
                to_stage=to_stage,
                stages=pipeline.definition.stage_ids,
            )
        self._trigger(Reopened, meta, pipeline.version, from_status=self.status, to_stage=to_stage)

    # -- automation commands (dealflow's own workflows) ---------------------------------------
    def enroll_nurture(
        self,
        meta: EventMeta,
        pipeline_version: int | None,
        *,
        sequence_id: str,
        sequence_version: int,
    ) -> None:
        self._require_open("nurture_enrolled")
        if sequence_id in self.nurture:
            raise InvalidTransition(
                f"the deal is already enrolled in {sequence_id!r}", sequence_id=sequence_id
            )
        self._trigger(
            NurtureEnrolled,
            meta,
            pipeline_version,
            sequence_id=sequence_id,
            sequence_version=sequence_version,
        )

    def record_touch(
        self,
        meta: EventMeta,
        pipeline_version: int | None,
        *,
        sequence_id: str,
        step: int,
        channel: str,
        to: str | None,
        subject: str | None,
    ) -> None:
        self._require_open("nurture_touch_sent")
        self._trigger(
            NurtureTouchSent,
            meta,
            pipeline_version,
            sequence_id=sequence_id,
            step=step,
            channel=channel,
            to=to,
            subject=subject,
        )

    def stop_nurture(
        self, meta: EventMeta, pipeline_version: int | None, *, sequence_id: str, reason: str
    ) -> None:
        if sequence_id not in self.nurture:
            raise InvalidTransition(
                f"the deal is not enrolled in {sequence_id!r}", sequence_id=sequence_id
            )
        self._trigger(
            NurtureStopped, meta, pipeline_version, sequence_id=sequence_id, reason=reason
        )

    def escalate(
        self,
        meta: EventMeta,
        pipeline_version: int | None,
        *,
        stage: str,
        level: str,
        to: str | None,
    ) -> None:
        self._require_open("escalated")
        self._require_stage(stage)
        if level in self.escalations:
            raise InvalidTransition(f"already escalated to {level} in this stay", level=level)
        self._trigger(Escalated, meta, pipeline_version, stage=stage, level=level, to=to)

    def flag_stale(self, meta: EventMeta, pipeline_version: int | None, *, stage: str) -> None:
        self._require_open("flagged_stale")
        self._require_stage(stage)
        if self.flagged_stale:
            raise InvalidTransition("the deal is already flagged stale in this stay")
        self._trigger(FlaggedStale, meta, pipeline_version, stage=stage)

    # -- rule helpers ---------------------------------------------------------------------------
    def _require_open(self, event_type: str) -> None:
        if self.is_closed and event_type not in ALLOWED_WHEN_CLOSED:
            raise DealClosed(
                f"the deal is {self.status}; only 'reopened' is accepted on a closed deal",
                status=self.status,
            )

    def _require_stage(self, stage: str) -> None:
        if stage != self.stage:
            raise InvalidTransition(f"the deal is no longer in stage {stage!r}", stage=self.stage)

    def _current_index(self, definition: PipelineDefinition) -> int:
        if not definition.has_stage(self.stage):
            # The definition dropped the stage the deal sits in: it can only be moved explicitly,
            # and counts as before every stage so that no criterion of the new definition is skipped.
            return 0
        return definition.index(self.stage)

    def _require_criteria(
        self, definition: PipelineDefinition, stage_ids: list[str], action: str
    ) -> list[dict[str, Any]]:
        results = evaluate_criteria(definition, stage_ids, self)
        unmet = [
            {"stage": r["stage"], "criterion": r["criterion"]} for r in results if not r["held"]
        ]
        if unmet:
            names = ", ".join(f"{u['stage']}.{u['criterion']}" for u in unmet)
            raise ExitCriteriaUnmet(f"cannot {action}: exit criteria not met: {names}", unmet=unmet)
        return results


_defaults: dict[type[DealEvent], tuple[dict[str, Any], tuple[str, ...]]] = {}


def _construct(event_class: type[DealEvent], values: dict[str, Any]) -> DealEvent:
    """``model_construct`` without its per-call bookkeeping (it measured ~17 µs an event).

    Same result for trusted, already-typed values: the fields' defaults, then the values.
    """
    known = _defaults.get(event_class)
    if known is None:
        defaults = {
            name: field.default
            for name, field in event_class.model_fields.items()
            if not field.is_required() and field.default_factory is None
        }
        mutable = tuple(name for name, value in defaults.items() if isinstance(value, (dict, list)))
        known = _defaults[event_class] = (defaults, mutable)
    defaults, mutable = known
    state = {**defaults, **values}
    for name in mutable:
        if name not in values:
            state[name] = copy.copy(defaults[name])
    event = event_class.__new__(event_class)
    object.__setattr__(event, "__dict__", state)
    object.__setattr__(event, "__pydantic_fields_set__", set(values))
    object.__setattr__(event, "__pydantic_extra__", None)
    object.__setattr__(event, "__pydantic_private__", None)
    return event


def _seal(event: DealEvent, previous_hash: str) -> bytes:
    """Set a just-built event's chain hash, and keep its stored JSON.

    The event is frozen, but nobody has seen it yet; copying a whole pydantic model per event
    only to change one field, and serialising it twice (hash, then store), are measurable costs
    on the batch path.
    """
    state = event.model_dump(mode="json", exclude=_ENVELOPE)
    data = {key: value for key, value in state.items() if key not in META_FIELDS}
    times = None
    if event.occurred_at.tzinfo is UTC and event.timestamp.tzinfo is UTC:
        # pydantic spells a UTC time exactly as iso() does, and it just did the work.
        times = (state["occurred_at"], state["timestamp"])
    digest = event.content_hash(previous_hash, data, times)
    object.__setattr__(event, "hash", digest)
    state["hash"] = digest
    if event.class_version > 1:
        state["class_version"] = event.class_version
    return orjson.dumps(state)


_ENVELOPE = {"originator_id", "originator_version"}


def _check_amount(amount: Any) -> None:
    if amount is None:
        return
    value = amount if isinstance(amount, Decimal) else Decimal(str(amount))
    if not value.is_finite():
        raise ValidationFailed("amount must be a finite number", field="amount")
    if value < 0:
        raise ValidationFailed("amount cannot be negative", field="amount")


def _json_ready(changes: dict[str, Any]) -> dict[str, Any]:
    """Values exactly as the stored event will hold them (pydantic's JSON mode: a decimal is a
    string, also inside attributes), so a deal decided in memory equals the deal read back."""
    return {key: to_jsonable_python(value) for key, value in changes.items()}


# -- snapshots ------------------------------------------------------------------------------------


class DealSnapshot(DomainEvent):
    """The whole state of a deal at one version, so long histories load fast."""

    topic: str = "engine.domain.deal:Deal"
    state: dict[str, Any]

    @classmethod
    def take(cls, deal: Deal) -> DealSnapshot:
        state = {k: v for k, v in deal.__dict__.items() if k not in ("id", "pending", "sealed")}
        return cls(
            originator_id=deal.id,
            originator_version=deal.version,
            timestamp=deal.modified_at or deal.created_at,  # type: ignore[arg-type]
            state=_snapshot_ready(state),
        )

    def mutate(self, _: Deal | None) -> Deal:
        deal = Deal(self.originator_id)
        restored = dict(self.state)
        for key in (
            "opened_at",
            "created_at",
            "modified_at",
            "stage_entered_at",
            "closed_at",
            "last_activity_at",
            "last_occurred_at",
        ):
            if restored.get(key) is not None:
                restored[key] = datetime.fromisoformat(restored[key])
        if restored.get("amount") is not None:
            restored["amount"] = Decimal(restored["amount"])
        if restored.get("expected_close") is not None:
            restored["expected_close"] = date.fromisoformat(restored["expected_close"])
        deal.__dict__.update(restored)
        deal.version = self.originator_version
        return deal


Deal.Snapshot = DealSnapshot  # type: ignore[attr-defined]


def _snapshot_ready(state: dict[str, Any]) -> dict[str, Any]:
    ready: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, datetime):
            ready[key] = value.isoformat()
        elif isinstance(value, (Decimal, date)):
            ready[key] = str(value) if isinstance(value, Decimal) else value.isoformat()
        else:
            ready[key] = copy.deepcopy(value)
    return ready
