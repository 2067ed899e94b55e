"""What the scoring model reads from a deal: its fields, its facts, its activity count and its
time in stage, at one moment (training: the moment it closed; scoring: now or ``as_of``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.domain.deal_state import DealState

CATEGORICAL = (
    "industry",
    "owner",
    "lead_source",
    "decision_maker_role",
    "country",
    "stage",
    "product_series",
    "regional_office",
)
NUMERIC = ("log_amount", "facts", "activities", "days_in_stage", "days_open", "unqualified")
# Each activity type logged in the current stage is a number of its own, "activity:<type>"
# (the types a model knows are those its training deals had; see model.numeric_names).
ACTIVITY_PREFIX = "activity:"
MISSING = "(none)"  # a categorical field without a value is a category of its own
DAY_SECONDS = 86_400.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The parts of a deal's state the features need (cheap to keep per deal and instant)."""

    fields: tuple[str, ...]  # CATEGORICAL values, MISSING when absent
    amount: float | None
    facts: int
    activities: int
    in_stage: tuple[tuple[str, int], ...]  # activities logged in the current stage, by type
    stage_entered_at: datetime | None
    opened_at: datetime | None
    unqualified: bool


def snapshot(deal: DealState) -> Snapshot:
    attributes = deal.attributes or {}
    values = {
        "industry": deal.industry,
        "owner": deal.owner,
        "lead_source": deal.lead_source,
        "decision_maker_role": deal.decision_maker_role,
        "country": deal.country,
        "stage": deal.stage,
        "product_series": attributes.get("product_series"),
        "regional_office": attributes.get("regional_office"),
    }
    return Snapshot(
        fields=tuple(_text(values[name]) for name in CATEGORICAL),
        amount=None if deal.amount is None else float(deal.amount),
        facts=sum(1 for held in deal.facts.values() if held),
        activities=deal.activity_count,
        in_stage=tuple(sorted(deal.activities_in_stage.items())),
        stage_entered_at=deal.stage_entered_at,
        opened_at=deal.opened_at,
        unqualified=deal.unqualified,
    )


def features(state: Snapshot, at: datetime) -> dict[str, Any]:
    """The model's inputs (JSON-ready: a deal's answer shows them, so a score can be redone)."""
    row: dict[str, Any] = dict(zip(CATEGORICAL, state.fields, strict=True))
    row["log_amount"] = round(math.log1p(max(state.amount or 0.0, 0.0)), 9)
    row["facts"] = state.facts
    row["activities"] = state.activities
    row["days_in_stage"] = _days(state.stage_entered_at, at)
    row["days_open"] = _days(state.opened_at, at)
    row["unqualified"] = int(state.unqualified)
    for activity, count in state.in_stage:
        row[ACTIVITY_PREFIX + activity] = count
    return row


def _days(since: datetime | None, at: datetime) -> float:
    if since is None:
        return 0.0
    return round(max((at - since).total_seconds(), 0.0) / DAY_SECONDS, 6)


def _text(value: Any) -> str:
    return MISSING if value is None or value == "" else str(value)
