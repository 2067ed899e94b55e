"""Pipeline definitions: ordered stages, their probabilities and their exit criteria.

A definition is a value object validated by pydantic exactly as the HTTP contract writes it.
Criteria are evaluated against a deal by :func:`evaluate_criteria`; the Deal aggregate asks
for that in its command methods only, never when replaying events.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SLUG = r"^[a-z0-9][a-z0-9_\-]{0,63}$"
Slug = Annotated[str, Field(pattern=SLUG)]

# Deal fields a `field` criterion may test. `attributes.<key>` reaches into free-form attributes.
CRITERION_FIELDS = frozenset(
    {
        "name",
        "amount",
        "currency",
        "owner",
        "account",
        "industry",
        "lead_source",
        "decision_maker_role",
        "expected_close",
        "expected_close_date",  # the same field as expected_close (the name issue 12 uses)
        "country",
    }
)
ATTRIBUTE_FIELD = re.compile(r"^attributes\.[A-Za-z0-9_\-]{1,64}$")


class _Strict(BaseModel):
    # strict: definitions are typed data, so `false` or "9" is not an hour (no coercion).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FactCriterion(_Strict):
    id: Slug
    kind: Literal["fact"]
    description: str | None = None

    @property
    def fact(self) -> str:
        return self.id


Scalar = str | int | float | Decimal | bool
# Operators taking no value, one value, a list of values, and a [low, high] pair.
NO_VALUE_OPS = frozenset({"set", "exists"})
LIST_OPS = frozenset({"in", "not_in"})
ORDER_OPS = frozenset({"gt", "gte", "lt", "lte", "between"})


class FieldCriterion(_Strict):
    id: Slug
    kind: Literal["field"]
    field: str
    op: Literal["set", "exists", "eq", "gt", "gte", "lt", "lte", "in", "not_in", "between"]
    value: Scalar | list[Scalar] | None = None
    description: str | None = None

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str) -> str:
        if value not in CRITERION_FIELDS and not ATTRIBUTE_FIELD.match(value):
            known = ", ".join(sorted(CRITERION_FIELDS))
            raise ValueError(
                f"unknown deal field {value!r}; use one of {known} or attributes.<key>"
            )
        return value

    @model_validator(mode="after")
    def _value_matches_op(self) -> FieldCriterion:
        op, value = self.op, self.value
        if op in NO_VALUE_OPS:
            if value is not None:
                raise ValueError(f"op {op!r} takes no value")
            return self
        if value is None:
            raise ValueError(f"op {op!r} needs a value")
        if op in LIST_OPS:
            if not isinstance(value, list) or not value:
                raise ValueError(f"op {op!r} needs a non-empty list of values")
            return self
        if op == "between":
            if not isinstance(value, list) or len(value) != 2:
                raise ValueError("op 'between' needs a list of two values: [low, high]")
            if any(isinstance(item, bool) for item in value):
                raise ValueError("op 'between' cannot compare with a boolean")
            numbers = [isinstance(item, (int, float, Decimal)) for item in value]
            pair = _comparable(value[0], value[1]) if numbers[0] == numbers[1] else None
            if pair is None or pair[0] > pair[1]:
                raise ValueError("op 'between' needs low <= high, both of one kind")
            return self
        if isinstance(value, list):
            raise ValueError(f"op {op!r} takes one value, not a list")
        if op in ORDER_OPS and isinstance(value, bool):
            raise ValueError(f"op {op!r} cannot compare with a boolean")
        return self


class ActivityCriterion(_Strict):
    id: Slug
    kind: Literal["activity"]
    activity: Slug
    min_count: int = Field(default=1, ge=1)
    description: str | None = None


ExitCriterion = Annotated[
    FactCriterion | FieldCriterion | ActivityCriterion, Field(discriminator="kind")
]


class ScoringRule(_Strict):
    """A point rule: ``points`` (signed) when the criterion ``when`` holds for the deal."""

    id: Slug
    points: int = Field(ge=-100, le=100)
    when: ExitCriterion


class Scoring(_Strict):
    """How a pipeline's deals are scored: by the model learned from its closed deals once at
    least ``min_closed_deals`` are closed, else by the point rules (``base`` plus the points of
    every rule that holds, kept within 0-100)."""

    min_closed_deals: int = Field(default=50, ge=2)
    base: int = Field(default=50, ge=0, le=100)
    rules: list[ScoringRule] = Field(default_factory=list, max_length=100)


CRON = r"^\S+\s+\S+\s+\S+\s+\S+\s+\S+$"


# The longest day count a definition takes: 100,000 days (about 270 years; "never", in
# practice). Day counts become timedeltas added to business times, and 64-bit microsecond
# integers (projections, SQL): even four escalation levels at this limit stay far inside both.
# 1e270 days used to be accepted and then overflow into a 500 on every read that judged
# staleness (found by schemathesis, issue 9).
MAX_DAYS = 100_000


class Review(_Strict):
    """The pipeline review (issue 12): when the digest goes out and to whom."""

    cron: str = Field(default="0 8 * * 1", pattern=CRON)  # weekly, Monday 08:00 UTC
    to: str | None = Field(default=None, max_length=320)
    channel: Literal["email", "webhook", "task"] = "email"
    # An amount, written as the contract writes money (a JSON number or a numeric string).
    monthly_target: Decimal | None = Field(default=None, ge=0, allow_inf_nan=False, strict=False)
    # "near its limit": this close to it
    near_limit_days: float = Field(default=2, ge=0, le=MAX_DAYS)
    top: int = Field(default=5, ge=1, le=50)  # top-scored open deals listed


class Escalation(_Strict):
    """How a stale deal escalates, counted from the moment it exceeded ``max_days_in_stage``."""

    manager_after_days: float = Field(default=2, gt=0, le=MAX_DAYS)
    flag_after_days: float = Field(default=4, gt=0, le=MAX_DAYS)
    # When true, a logged activity restarts the stage clock for escalation purposes.
    activity_extends_limit: bool = False
    # Optional last level (issue 12): the deal is recorded lost with the reason "stale". Off
    # unless configured: closing deals is a decision a pipeline owner makes explicitly.
    close_as_lost_after_days: float | None = Field(default=None, gt=0, le=MAX_DAYS)

    @model_validator(mode="after")
    def _ordered(self) -> Escalation:
        if self.flag_after_days < self.manager_after_days:
            raise ValueError("flag_after_days must not come before manager_after_days")
        if (
            self.close_as_lost_after_days is not None
            and self.close_as_lost_after_days < self.flag_after_days
        ):
            raise ValueError("close_as_lost_after_days must not come before flag_after_days")
        return self


# Where a stage's open deals count in the forecast (pipeline when a stage names none).
ForecastCategory = Literal["pipeline", "best_case", "commit", "omitted"]


class Stage(_Strict):
    id: Slug
    name: str = Field(min_length=1, max_length=200)
    probability: float = Field(ge=0, le=1)
    forecast_category: ForecastCategory | None = None
    max_days_in_stage: float | None = Field(default=None, gt=0, le=MAX_DAYS)
    exit_criteria: list[ExitCriterion] = Field(default_factory=list)
    escalation: Escalation | None = None

    @model_validator(mode="after")
    def _unique_criteria(self) -> Stage:
        seen: set[str] = set()
        for criterion in self.exit_criteria:
            if criterion.id in seen:
                raise ValueError(
                    f"duplicate exit criterion id {criterion.id!r} in stage {self.id!r}"
                )
            seen.add(criterion.id)
        return self

    @property
    def effective_escalation(self) -> Escalation:
        return self.escalation or Escalation()


class PipelineDefinition(_Strict):
    name: str = Field(min_length=1, max_length=200)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    qualified_after: str | None = None
    stages: list[Stage] = Field(min_length=1, max_length=50)
    # Extension: where won deals continue (cross-sell and upsell), e.g. "post-purchase".
    after_won: str | None = Field(default=None, pattern=SLUG)
    # Extension: field criteria every opened deal is checked against; a deal failing one is
    # recorded but marked unqualified, and cannot leave its stage until an update makes it pass.
    qualification: list[FieldCriterion] = Field(default_factory=list, max_length=50)
    # Extension: lead scoring (engine.scoring); None means the defaults of Scoring.
    scoring: Scoring | None = None
    # Extension: the scheduled pipeline review; None means the defaults of Review.
    review: Review | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PipelineDefinition:
        ids = [stage.id for stage in self.stages]
        duplicates = sorted({s for s in ids if ids.count(s) > 1})
        if duplicates:
            raise ValueError(f"duplicate stage ids: {', '.join(duplicates)}")
        if self.qualified_after is not None and self.qualified_after not in ids:
            raise ValueError(f"qualified_after {self.qualified_after!r} is not a stage")
        rule_ids = [criterion.id for criterion in self.qualification]
        repeated = sorted({r for r in rule_ids if rule_ids.count(r) > 1})
        if repeated:
            raise ValueError(f"duplicate qualification criterion ids: {', '.join(repeated)}")
        return self

    # -- lookups ---------------------------------------------------------------------------
    @property
    def stage_ids(self) -> list[str]:
        return [stage.id for stage in self.stages]

    @property
    def first_stage(self) -> str:
        return self.stages[0].id

    @property
    def qualified_stage(self) -> str:
        return self.qualified_after or self.first_stage

    @cached_property
    def _positions(self) -> dict[str, int]:
        # A definition never changes once validated, and every command asks these questions.
        return {stage.id: position for position, stage in enumerate(self.stages)}

    def has_stage(self, stage_id: str) -> bool:
        return stage_id in self._positions

    def stage(self, stage_id: str) -> Stage:
        return self.stages[self._positions[stage_id]]

    def index(self, stage_id: str) -> int:
        return self._positions[stage_id]


class DealFacts(Protocol):
    """What criteria read from a deal (the Deal aggregate satisfies this)."""

    @property
    def facts(self) -> Mapping[str, bool]: ...

    @property
    def activities_in_stage(self) -> Mapping[str, int]: ...

    def field_value(self, name: str) -> Any: ...


def _comparable(left: Any, right: Any) -> tuple[Any, Any] | None:
    """Bring a deal field and a criterion value to one comparable type, or None."""
    if isinstance(right, bool) or isinstance(left, bool):
        # Booleans compare only with booleans (bool is an int in Python, but True is not 1 here).
        return (left, right) if isinstance(left, bool) and isinstance(right, bool) else None
    if isinstance(left, Decimal) or isinstance(right, (int, float, Decimal)):
        try:
            return Decimal(str(left)), Decimal(str(right))
        except (InvalidOperation, ValueError):
            return None
    if isinstance(left, (date, datetime)):
        return left.isoformat(), str(right)
    return str(left), str(right)


def criterion_holds(
    criterion: FactCriterion | FieldCriterion | ActivityCriterion, deal: DealFacts
) -> bool:
    if isinstance(criterion, FactCriterion):
        return deal.facts.get(criterion.id) is True
    if isinstance(criterion, ActivityCriterion):
        return deal.activities_in_stage.get(criterion.activity, 0) >= criterion.min_count
    value = deal.field_value(criterion.field)
    if criterion.op in NO_VALUE_OPS:
        return value is not None and value != ""
    if value is None:
        # An unknown value satisfies no comparison, `not_in` included: it is not shown to be out.
        return False
    if isinstance(criterion.value, list):
        if criterion.op == "between":
            low, high = (_comparable(value, bound) for bound in criterion.value)
            return low is not None and high is not None and low[1] <= low[0] <= high[1]
        found = any(_equal(value, item) for item in criterion.value)
        return found if criterion.op == "in" else not found
    pair = _comparable(value, criterion.value)
    if pair is None:
        return False
    left, right = pair
    if criterion.op == "eq":
        return bool(left == right)
    if criterion.op == "gt":
        return bool(left > right)
    if criterion.op == "gte":
        return bool(left >= right)
    if criterion.op == "lt":
        return bool(left < right)
    return bool(left <= right)


def _equal(value: Any, item: Any) -> bool:
    pair = _comparable(value, item)
    return pair is not None and bool(pair[0] == pair[1])


def unmet_qualification(definition: PipelineDefinition, deal: DealFacts) -> list[str]:
    """The ids of the pipeline's qualification criteria the deal fails, in definition order."""
    return [c.id for c in definition.qualification if not criterion_holds(c, deal)]


def evaluate_criteria(
    definition: PipelineDefinition, stage_ids: list[str], deal: DealFacts
) -> list[dict[str, Any]]:
    """Every exit criterion of the given stages, in pipeline order, with whether it holds."""
    results: list[dict[str, Any]] = []
    for stage_id in stage_ids:
        for criterion in definition.stage(stage_id).exit_criteria:
            results.append(
                {
                    "stage": stage_id,
                    "criterion": criterion.id,
                    "held": criterion_holds(criterion, deal),
                }
            )
    return results
