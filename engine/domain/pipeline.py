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


class FieldCriterion(_Strict):
    id: Slug
    kind: Literal["field"]
    field: str
    op: Literal["set", "eq", "gt", "gte", "lt", "lte"]
    value: str | int | float | Decimal | bool | None = None
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
        if self.op == "set" and self.value is not None:
            raise ValueError("op 'set' takes no value")
        if self.op != "set" and self.value is None:
            raise ValueError(f"op {self.op!r} needs a value")
        if self.op in ("gt", "gte", "lt", "lte") and isinstance(self.value, bool):
            raise ValueError(f"op {self.op!r} cannot compare with a boolean")
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


class Escalation(_Strict):
    """How a stale deal escalates, counted from the moment it exceeded ``max_days_in_stage``."""

    manager_after_days: float = Field(default=2, gt=0)
    flag_after_days: float = Field(default=4, gt=0)
    # When true, a logged activity restarts the stage clock for escalation purposes.
    activity_extends_limit: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Escalation:
        if self.flag_after_days < self.manager_after_days:
            raise ValueError("flag_after_days must not come before manager_after_days")
        return self


class Stage(_Strict):
    id: Slug
    name: str = Field(min_length=1, max_length=200)
    probability: float = Field(ge=0, le=1)
    max_days_in_stage: float | None = Field(default=None, gt=0)
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

    @model_validator(mode="after")
    def _consistent(self) -> PipelineDefinition:
        ids = [stage.id for stage in self.stages]
        duplicates = sorted({s for s in ids if ids.count(s) > 1})
        if duplicates:
            raise ValueError(f"duplicate stage ids: {', '.join(duplicates)}")
        if self.qualified_after is not None and self.qualified_after not in ids:
            raise ValueError(f"qualified_after {self.qualified_after!r} is not a stage")
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
    if criterion.op == "set":
        return value is not None and value != ""
    if value is None:
        return False
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
