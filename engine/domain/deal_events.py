"""A deal's events: past-tense facts, each with the contract's ``TYPE``. ``apply`` only changes
state, never checks a rule, so a history recorded under an older pipeline definition replays
exactly as it was recorded.

Stored events name their class by topic. Events recorded before this module existed carry
``engine.domain.deal:<Class>`` topics; :mod:`engine.domain.deal` re-exports every class, so
both spellings resolve to the same class (see ``DEAL_TOPIC_MODULES``).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from engine.domain.deal_basics import LOST, OPEN, WON
from engine.domain.deal_state import DealState
from engine.domain.events import META_FIELDS, DomainEvent, chain_hash, hash_content, iso

# Modules whose topics name deal events (the first is where the classes lived before).
DEAL_TOPIC_MODULES = ("engine.domain.deal", "engine.domain.deal_events")
DEAL_TOPIC_PREFIXES = tuple(f"{module}:" for module in DEAL_TOPIC_MODULES)


def topics_of(event_class: type) -> tuple[str, ...]:
    """Every topic a stored event of this class may carry (old and current spelling)."""
    return tuple(f"{module}:{event_class.__qualname__}" for module in DEAL_TOPIC_MODULES)


class DealEvent(DomainEvent):
    TYPE: ClassVar[str] = ""
    # Types only dealflow's own automation may write (a client sending one gets 422).
    AUTOMATION: ClassVar[bool] = False
    # Fields added after events of the class were first stored. Left out of the payload (and so
    # of the hash) while they are None, so the hash of an event stored before them still checks.
    LATE_FIELDS: ClassVar[frozenset[str]] = frozenset()

    occurred_at: datetime
    event_id: str
    actor: str
    pipeline_version: int | None = None
    hash: str

    def data(self) -> dict[str, Any]:
        """The event's own payload, JSON-ready (what history shows as ``data``)."""
        return self.drop_late(self.model_dump(mode="json", exclude=META_FIELDS))  # type: ignore[arg-type]

    @classmethod
    def drop_late(cls, data: dict[str, Any]) -> dict[str, Any]:
        for name in cls.LATE_FIELDS:
            if name in data and data[name] is None:
                del data[name]
        return data

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

    # The aggregate class an opening event creates (engine.domain.deal sets it to Deal).
    aggregate_class: ClassVar[type[DealState]] = DealState

    def mutate(self, deal: Any) -> Any:
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

    def apply(self, deal: DealState) -> None:
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
    country: str | None = None
    # The pipeline's qualification verdict, decided by the command: {"qualified": bool,
    # "unmet": [criterion ids]}; None when the pipeline has no qualification rule.
    qualification: dict[str, Any] | None = None
    LATE_FIELDS: ClassVar[frozenset[str]] = frozenset({"country", "qualification"})

    def mutate(self, deal: Any) -> Any:
        assert deal is None, "a deal is opened once"
        deal = self.aggregate_class(self.originator_id)
        deal.deal_id = self.deal_id
        deal.pipeline_id = self.pipeline_id
        deal.opened_at = self.occurred_at
        deal.created_at = self.timestamp
        deal.version = 0
        return super().mutate(deal)

    def apply(self, deal: DealState) -> None:
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
        deal.country = self.country
        deal.qualification = self.qualification
        deal.enter_stage(self.stage, self.occurred_at)


class FactRecorded(DealEvent):
    TYPE = "fact_recorded"
    fact: str
    value: bool
    note: str | None = None

    def apply(self, deal: DealState) -> None:
        deal.facts[self.fact] = self.value


class Updated(DealEvent):
    TYPE = "updated"
    changes: dict[str, Any]
    # The qualification verdict after the change (see Opened); None when none was decided.
    qualification: dict[str, Any] | None = None
    LATE_FIELDS: ClassVar[frozenset[str]] = frozenset({"qualification"})

    def apply(self, deal: DealState) -> None:
        if self.qualification is not None:
            deal.qualification = self.qualification
        apply_changes(deal, self.changes)


def apply_changes(deal: DealState, changes: dict[str, Any]) -> None:
    """Set the fields an update names (its command also uses this to judge the result)."""
    for name, value in changes.items():
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

    def apply(self, deal: DealState) -> None:
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

    def apply(self, deal: DealState) -> None:
        deal.enter_stage(self.to_stage, self.occurred_at)


class Won(DealEvent):
    TYPE = "won"
    from_stage: str
    amount: Decimal | None = None
    criteria: list[dict[str, Any]] = []

    def apply(self, deal: DealState) -> None:
        deal.status = WON
        deal.closed_at = self.occurred_at
        if self.amount is not None:
            deal.amount = self.amount


class Lost(DealEvent):
    TYPE = "lost"
    from_stage: str
    reason: str

    def apply(self, deal: DealState) -> None:
        deal.status = LOST
        deal.closed_at = self.occurred_at
        deal.lost_reason = self.reason


class Reopened(DealEvent):
    TYPE = "reopened"
    from_status: str
    to_stage: str

    def apply(self, deal: DealState) -> None:
        deal.status = OPEN
        deal.closed_at = None
        deal.lost_reason = None
        deal.enter_stage(self.to_stage, self.occurred_at)


class NurtureEnrolled(DealEvent):
    TYPE = "nurture_enrolled"
    AUTOMATION = True
    sequence_id: str
    sequence_version: int

    def apply(self, deal: DealState) -> None:
        deal.nurture[self.sequence_id] = self.sequence_version
        deal.nurture_progress[self.sequence_id] = {"step": 0, "since": iso(self.occurred_at)}


class NurtureTouchSent(DealEvent):
    TYPE = "nurture_touch_sent"
    AUTOMATION = True
    sequence_id: str
    step: int
    channel: str
    to: str | None = None
    subject: str | None = None

    def apply(self, deal: DealState) -> None:
        deal.touches_sent += 1
        deal.nurture_progress[self.sequence_id] = {
            "step": self.step + 1,
            "since": iso(self.occurred_at),
        }


class NurtureStopped(DealEvent):
    TYPE = "nurture_stopped"
    AUTOMATION = True
    sequence_id: str
    reason: str

    def apply(self, deal: DealState) -> None:
        deal.nurture.pop(self.sequence_id, None)
        deal.nurture_progress.pop(self.sequence_id, None)


class Escalated(DealEvent):
    TYPE = "escalated"
    AUTOMATION = True
    stage: str
    level: str  # "owner" or "manager"
    to: str | None = None

    def apply(self, deal: DealState) -> None:
        deal.escalations.append(self.level)


class FlaggedStale(DealEvent):
    TYPE = "flagged_stale"
    AUTOMATION = True
    stage: str

    def apply(self, deal: DealState) -> None:
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
# Stored topic (either spelling, see topics_of) -> the contract's type.
TYPE_OF_TOPIC: dict[str, str] = {
    topic: t for t, cls in EVENT_TYPES.items() for topic in topics_of(cls)
}
