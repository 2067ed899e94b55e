"""Commands as pydantic models: incoming deal events as the HTTP contract writes them, and the
five commands dealflow's own automation sends (at the end).

One model per event ``type``; :data:`IncomingEvent` is their discriminated union. The API and
the importers both parse into these, so every path into the store is validated the same way.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from engine.limits import limits
from engine.storable import NotStorable, json_size_over

DEAL_ID_PATTERN = r"^[A-Za-z0-9\-_.:]{1,200}$"
# Characters an identifier may not hold: C0 and C1 controls, DEL, and the invisible
# bidirectional marks and overrides (U+202E shows "abc" as "cba": two keys that look alike).
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _strict_identifier(value: Any) -> Any:
    """An ``event_id`` is refused rather than silently changed: with surrounding spaces
    ("pad " and "pad" used to collide as idempotency_key_reused), not in Unicode NFC (NFC and
    NFD spellings of one text would be two keys), or holding control or bidi characters."""
    if not isinstance(value, str):
        return value
    if value != value.strip():
        raise ValueError("event_id must not start or end with whitespace")
    if unicodedata.normalize("NFC", value) != value:
        raise ValueError("event_id must be in Unicode normalization form NFC")
    found = _INVISIBLE.search(value)
    if found is not None:
        raise ValueError(
            f"event_id must not hold control or bidi characters (U+{ord(found.group()):04X})"
        )
    return value


EventId = Annotated[str, BeforeValidator(_strict_identifier), Field(min_length=1, max_length=200)]
MAX_ATTRIBUTE_DEPTH = 32
SlugStr = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")]
Text = Annotated[str, Field(max_length=2000)]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]


def _to_aware_datetime(value: Any) -> Any:
    """ISO 8601 with an offset, or a bare date meaning midnight UTC; naive times are refused.

    Numbers (epoch seconds or milliseconds?) are refused on purpose: the unit is a guess, and a
    wrong guess moves business time by a factor of 1000 without any error."""
    if type(value) is str and value[-1:] == "Z" and len(value) > 10 and not value[0].isspace():
        # Most senders spell times in UTC with a Z: parsed as it is, with no copies of the text
        # and no conversion; anything else (or a failure) takes the long way below.
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if moment.tzinfo is UTC:
                return moment
    return _to_aware_datetime_long(value)


def _to_aware_datetime_long(value: Any) -> Any:
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        raise ValueError("a time is an ISO 8601 string, e.g. 2017-03-01T00:00:00Z, not a number")
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=UTC)
    elif isinstance(value, str):
        text = value.strip()
        if len(text) == 10:
            try:
                return datetime.combine(date.fromisoformat(text), time(0), tzinfo=UTC)
            except ValueError as error:
                # Not left to pydantic: it would read "1700000000" as epoch seconds.
                raise ValueError("a date is YYYY-MM-DD, a time ISO 8601 with an offset") from error
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as error:
            raise ValueError(
                "a time is an ISO 8601 string with an offset, e.g. 2017-03-01T00:00:00Z"
            ) from error
    else:
        return value
    if moment.tzinfo is None:
        raise ValueError("a time needs an offset, e.g. 2017-03-01T00:00:00Z")
    try:
        return moment.astimezone(UTC)
    except OverflowError as error:
        raise ValueError("time out of range") from error


BusinessTime = Annotated[datetime, BeforeValidator(_to_aware_datetime)]

_PLAIN_DECIMAL = re.compile(r"(0|[1-9][0-9]*)(\.[0-9]+)?")


def _strict_amount(value: Any) -> Any:
    """An amount is a JSON number or a plain decimal string: no spaces, underscores, signs,
    exponents, and no negative zero (Python's Decimal would take all of those)."""
    if isinstance(value, bool):
        raise ValueError("an amount is a number, not a boolean")
    if isinstance(value, str):
        if not _PLAIN_DECIMAL.fullmatch(value):
            raise ValueError('an amount is a plain decimal such as 1200 or "1200.50"')
        return Decimal(value)
    if isinstance(value, (int, Decimal, float)) and Decimal(str(value)).is_signed():
        raise ValueError("an amount cannot be negative (not even -0)")
    return value


# An amount as a string, exactly as Money takes it: a plain decimal with at most 14 digits
# before the point and 6 after it (20 digits, 6 decimal places).
AMOUNT_PATTERN = r"^(?:0|[1-9][0-9]{0,13})(?:\.[0-9]{1,6})?$"

Money = Annotated[
    Decimal,
    BeforeValidator(_strict_amount),
    Field(ge=0, max_digits=20, decimal_places=6, allow_inf_nan=False),
    # The documented schema (pydantic's own names max_digits and ge, which JSON Schema lacks).
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "exclusiveMaximum": 10**14},
                {"type": "string", "pattern": AMOUNT_PATTERN},
            ],
            "description": "a decimal: a JSON number or a plain decimal string, >= 0, at most "
            "14 digits before the point and 6 after it",
        }
    ),
]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    event_id: EventId
    occurred_at: BusinessTime | None = None
    expected_version: int | None = Field(default=None, ge=0, le=2**63 - 1)

    @field_validator("occurred_at")
    @classmethod
    def _not_far_ahead(cls, value: datetime | None) -> datetime | None:
        skew = limits().max_clock_skew
        if value is not None and value > datetime.now(UTC) + skew:
            raise ValueError(
                f"occurred_at is more than {skew.total_seconds():.0f} s ahead of the server's"
                " clock (DEALFLOW_MAX_CLOCK_SKEW)"
            )
        return value


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
        if value is not None:
            most = limits().max_attributes_bytes
            size = json_size_over(value, most)
            if size is not None:
                raise ValueError(
                    f"attributes are {size} bytes of JSON; at most {most}"
                    " (DEALFLOW_MAX_ATTRIBUTES_BYTES)"
                )
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


def _storable_event(value: Any) -> Any:
    """Refuse, before anything else, an event the stores cannot hold or that is too large."""
    if isinstance(value, dict):
        most = limits().max_event_bytes
        try:
            size = json_size_over(value, most)
        except NotStorable as error:
            raise ValueError(str(error)) from error
        if size is not None:
            raise ValueError(
                f"the event is {size} bytes of JSON; at most {most} (DEALFLOW_MAX_EVENT_BYTES)"
            )
    return value


IncomingEvent = Annotated[
    Annotated[
        OpenedIn
        | FactRecordedIn
        | UpdatedIn
        | ActivityLoggedIn
        | StageChangedIn
        | WonIn
        | LostIn
        | ReopenedIn,
        Field(discriminator="type"),
    ],
    BeforeValidator(_storable_event),
]
incoming_event = TypeAdapter(IncomingEvent)


# -- dealflow's own automation (nurture, escalation): never accepted from a sender ------------


class _Automation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    TYPE: ClassVar[str]


class NurtureEnrollment(_Automation):
    TYPE = "nurture_enrolled"
    sequence_id: str
    sequence_version: int


class NurtureTouch(_Automation):
    TYPE = "nurture_touch_sent"
    sequence_id: str
    step: int
    channel: str
    to: str | None = None
    subject: str | None = None


class NurtureStop(_Automation):
    TYPE = "nurture_stopped"
    sequence_id: str
    reason: str


class Escalation(_Automation):
    TYPE = "escalated"
    stage: str
    level: str  # "owner" or "manager"
    to: str | None = None


class StaleFlag(_Automation):
    TYPE = "flagged_stale"
    stage: str


AutomationCommand = NurtureEnrollment | NurtureTouch | NurtureStop | Escalation | StaleFlag
AUTOMATION_MODELS: dict[str, type[_Automation]] = {
    cls.TYPE: cls for cls in (NurtureEnrollment, NurtureTouch, NurtureStop, Escalation, StaleFlag)
}
