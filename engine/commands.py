"""Incoming deal events as the HTTP contract writes them, validated by pydantic.

One model per event ``type``; :data:`IncomingEvent` is their discriminated union. The API and
the importers both parse into these, so every path into the store is validated the same way.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

DEAL_ID_PATTERN = r"^[A-Za-z0-9\-_.:]{1,200}$"
DealId = Annotated[str, Field(pattern=DEAL_ID_PATTERN)]
# Control characters are refused: PostgreSQL text cannot hold NUL, and both stores must agree.
EventId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
MAX_ATTRIBUTE_DEPTH = 32
SlugStr = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")]
Text = Annotated[str, Field(max_length=2000)]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]


def _to_aware_datetime(value: Any) -> Any:
    """ISO 8601 with an offset, or a bare date meaning midnight UTC; naive times are refused."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=UTC)
    elif isinstance(value, str):
        text = value.strip()
        if len(text) == 10:
            try:
                return datetime.combine(date.fromisoformat(text), time(0), tzinfo=UTC)
            except ValueError:
                return value  # let pydantic explain
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return value
    else:
        return value
    if moment.tzinfo is None:
        raise ValueError("a time needs an offset, e.g. 2017-03-01T00:00:00Z")
    try:
        return moment.astimezone(UTC)
    except OverflowError as error:
        raise ValueError("time out of range") from error


BusinessTime = Annotated[datetime, BeforeValidator(_to_aware_datetime)]
Money = Annotated[Decimal, Field(ge=0, max_digits=20, decimal_places=6, allow_inf_nan=False)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    event_id: EventId
    occurred_at: BusinessTime | None = None
    expected_version: int | None = Field(default=None, ge=0)


class _DealFields(BaseModel):
    name: ShortText | None = None
    amount: Money | None = None
    currency: Currency | None = None
    owner: ShortText | None = None
    account: ShortText | None = None
    industry: ShortText | None = None
    lead_source: ShortText | None = None
    decision_maker_role: ShortText | None = None
    expected_close: date | None = None
    attributes: dict[str, Any] | None = None
    # ISO 3166-1 alpha-2, upper case (qualification rules compare it exactly).
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = None
    # Another name for expected_close (issue 12 spells it so); it is stored as expected_close.
    expected_close_date: date | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _one_close_date(self) -> Any:
        if "expected_close_date" in self.model_fields_set:
            if "expected_close" in self.model_fields_set:
                raise ValueError("give expected_close or expected_close_date, not both")
            object.__setattr__(self, "expected_close", self.expected_close_date)
            self.model_fields_set.add("expected_close")
            self.model_fields_set.discard("expected_close_date")
        return self

    @field_validator("attributes")
    @classmethod
    def _small_attributes(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(value) > 100:
            raise ValueError("at most 100 attributes")
        if value is not None and _depth(value) > MAX_ATTRIBUTE_DEPTH:
            raise ValueError(f"attributes nested deeper than {MAX_ATTRIBUTE_DEPTH} levels")
        return value


def _depth(value: Any, level: int = 0) -> int:
    """How deeply a JSON value nests, giving up as soon as it is too deep."""
    if level > MAX_ATTRIBUTE_DEPTH or not isinstance(value, (dict, list)):
        return level
    items = value.values() if isinstance(value, dict) else value
    return max((_depth(item, level + 1) for item in items), default=level + 1)


class OpenedIn(_Event, _DealFields):
    type: Literal["opened"]
    pipeline_id: SlugStr
    name: ShortText
    stage: SlugStr | None = None


class FactRecordedIn(_Event):
    type: Literal["fact_recorded"]
    fact: SlugStr
    value: bool
    note: Text | None = None


class UpdatedIn(_Event, _DealFields):
    type: Literal["updated"]

    def changes(self) -> dict[str, Any]:
        """Only the fields the sender set (an explicit null clears a field)."""
        return {
            k: getattr(self, k)
            for k in _DealFields.model_fields
            if k in self.model_fields_set and k != "expected_close_date"
        }


class ActivityLoggedIn(_Event):
    type: Literal["activity_logged"]
    activity: SlugStr
    summary: Text | None = None


class StageChangedIn(_Event):
    type: Literal["stage_changed"]
    to_stage: SlugStr


class WonIn(_Event):
    type: Literal["won"]
    amount: Money | None = None


class LostIn(_Event):
    type: Literal["lost"]
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


class ReopenedIn(_Event):
    type: Literal["reopened"]
    to_stage: SlugStr


IncomingEvent = Annotated[
    OpenedIn
    | FactRecordedIn
    | UpdatedIn
    | ActivityLoggedIn
    | StageChangedIn
    | WonIn
    | LostIn
    | ReopenedIn,
    Field(discriminator="type"),
]
incoming_event = TypeAdapter(IncomingEvent)
