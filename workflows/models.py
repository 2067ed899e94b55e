"""Definitions (sequences, the team directory) and the inputs of every workflow and activity.

Pure pydantic, no I/O: workflow code imports this module through the sandbox, and the
Temporal pydantic data converter carries these models between client, workflows and activities.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.domain.pipeline import MAX_DAYS

StopReason = Literal["stage_changed", "won", "lost", "reply"]
STOP_REASONS: tuple[StopReason, ...] = ("stage_changed", "won", "lost", "reply")
Channel = Literal["email", "task", "call", "webhook"]
Id = Annotated[str, Field(min_length=1, max_length=200)]


class _Strict(BaseModel):
    # strict: definitions are typed data, so `false` or "9" is not an hour (no coercion).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# -- definitions (the HTTP contract's shapes) ------------------------------------------------


class EnrollRule(_Strict):
    pipeline_id: Id
    on_enter_stage: Id
    lead_source: str | None = None
    industry: str | None = None

    def matches(
        self, pipeline_id: str, stage: str, lead_source: str | None, industry: str | None
    ) -> bool:
        return (
            pipeline_id == self.pipeline_id
            and stage == self.on_enter_stage
            and (self.lead_source is None or lead_source == self.lead_source)
            and (self.industry is None or industry == self.industry)
        )


class Step(_Strict):
    after_days: float = Field(ge=0, le=MAX_DAYS, allow_inf_nan=False)
    channel: Channel
    subject: str | None = Field(default=None, max_length=1000)
    body: str | None = Field(default=None, max_length=20000)


class SendWindow(_Strict):
    timezone: str = "UTC"
    weekdays: list[Annotated[int, Field(ge=1, le=7)]] = Field(default=[1, 2, 3, 4, 5], min_length=1)
    start_hour: int = Field(default=9, ge=0, le=23)
    end_hour: int = Field(default=17, ge=1, le=24)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {value!r}") from error
        return value

    @model_validator(mode="after")
    def _hours_ordered(self) -> SendWindow:
        if self.end_hour <= self.start_hour:
            raise ValueError("end_hour must be after start_hour")
        return self


class SequenceDefinition(_Strict):
    name: str = Field(min_length=1, max_length=200)
    enroll: EnrollRule | None = None
    stop_on: list[StopReason] = Field(default_factory=lambda: list(STOP_REASONS))
    steps: list[Step] = Field(min_length=1, max_length=500)
    send_window: SendWindow | None = None


class Person(_Strict):
    id: Id
    manager: str | None = None
    email: str | None = None
    name: str | None = None


class Directory(_Strict):
    people: list[Person] = Field(default_factory=list, max_length=100_000)

    @model_validator(mode="after")
    def _unique(self) -> Directory:
        ids = [p.id for p in self.people]
        if len(ids) != len(set(ids)):
            raise ValueError("person ids must be unique")
        return self

    def person(self, person_id: str | None) -> Person | None:
        return next((p for p in self.people if p.id == person_id), None) if person_id else None


# -- workflow and activity inputs ----------------------------------------------------------


class NurtureInput(BaseModel):
    """One enrollment of one deal in one sequence (carried over continue-as-new)."""

    deal_id: str
    sequence_id: str
    sequence_version: int
    enrolled_version: int  # the deal version of the nurture_enrolled event
    definition: SequenceDefinition | None = None  # loaded by the first run
    next_step: int = 0
    anchor: datetime | None = None  # when the previous touch went out (or the enrollment)
    max_steps_per_run: int = 25


class DealSignal(BaseModel):
    """Something happened to the deal that may stop a sequence."""

    reason: str  # stage_changed, won, lost, reply or unenrolled
    already_recorded: bool = False  # nurture_stopped is already in the history


class SequenceRef(BaseModel):
    sequence_id: str
    version: int


class TouchInput(BaseModel):
    deal_id: str
    sequence_id: str
    enrolled_version: int
    workflow_id: str
    step_index: int
    step: Step
    stop_on: list[str]


class TouchResult(BaseModel):
    sent: bool
    stop_reason: str | None = None  # why the enrollment is over, when it is
    stop_recorded: bool = False  # its nurture_stopped is already in the history
    message_id: str | None = None


class StopInput(BaseModel):
    deal_id: str
    sequence_id: str
    workflow_id: str
    reason: str


class EscalationInput(BaseModel):
    deal_id: str
    stage: str
    stage_entries: int
    entered_at: datetime
    max_days: float
    manager_after_days: float = 2
    flag_after_days: float = 4
    activity_extends_limit: bool = False
    last_activity_at: datetime | None = None
    done: list[str] = Field(default_factory=list)  # levels already fired (continue-as-new)
    close_as_lost_after_days: float | None = None  # the optional last level (records lost)


class ActivitySignal(BaseModel):
    at: datetime


Level = Literal["owner", "manager", "flagged", "closed_lost"]


class EscalateInput(BaseModel):
    deal_id: str
    stage: str
    stage_entries: int
    level: Level


class EscalateResult(BaseModel):
    done: bool
    reason: str | None = None
    # reason "extended": activity logged in the stay moved the level's due time past now; the
    # deal's latest activity, from which the workflow counts the stay again.
    last_activity_at: datetime | None = None


class StayBatch(BaseModel):
    """Stays handed to an ``EscalationWindow`` by one bridge batch (its signal-with-start)."""

    stays: list[EscalationInput] = Field(default_factory=list)
    finished: list[str] = Field(default_factory=list)  # continue-as-new: stays already over


class DueEscalation(EscalateInput):
    """One level of one stay that is due now, as an ``EscalationWindow`` believes it."""

    due: datetime
    # When activity extends the stage's limit: the moment the due time was counted from (the
    # stay's entry or its latest known activity); a later activity on the deal postpones it.
    counted_from: datetime | None = None


class DueEscalations(BaseModel):
    steps: list[DueEscalation]


class DueResults(BaseModel):
    results: list[EscalateResult]


# -- issue 12: scoring retrain and the pipeline review -----------------------------------------


class RetrainInput(BaseModel):
    pipeline_id: str


class ReviewInput(BaseModel):
    pipeline_id: str


class ReviewRun(BaseModel):
    pipeline_id: str
    until: datetime  # the end of the period (the workflow's start time)


class ReviewResult(BaseModel):
    message_id: str
    since: datetime
    until: datetime
    delivery: str
