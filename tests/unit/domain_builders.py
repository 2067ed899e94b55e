"""Builders for pure-domain tests (no tests here): a Deal driven directly through its command methods."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.domain.deal import Deal, EventMeta, PipelineRef
from engine.domain.defaults import DEFAULT_PIPELINE
from engine.domain.pipeline import PipelineDefinition

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
_ids = itertools.count(1)


def pipeline(
    body: dict[str, Any] | None = None, pipeline_id: str = "p", version: int = 1
) -> PipelineRef:
    return PipelineRef(
        pipeline_id, version, PipelineDefinition.model_validate(body or DEFAULT_PIPELINE)
    )


class Clock:
    """Business time that moves forward one hour per event."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def meta(self, *, at: datetime | None = None) -> EventMeta:
        if at is None:
            self.now += timedelta(hours=1)
            at = self.now
        return EventMeta(
            occurred_at=at,
            event_id=f"e-{next(_ids)}",
            actor="tester",
            recorded_at=datetime.now(UTC),
        )


def open_deal(ref: PipelineRef, clock: Clock, deal_id: str = "d1", **fields: Any) -> Deal:
    fields.setdefault("name", "Deal")
    return Deal.open(deal_id, ref, clock.meta(), **fields)


def one_stage(criteria: list[dict[str, Any]], *, more: int = 1) -> dict[str, Any]:
    """A pipeline whose first stage has the given exit criteria, followed by ``more`` free stages."""
    stages = [{"id": "s0", "name": "S0", "probability": 0.1, "exit_criteria": criteria}]
    stages += [{"id": f"s{i}", "name": f"S{i}", "probability": 0.5} for i in range(1, more + 1)]
    return {"name": "Test", "currency": "EUR", "stages": stages}
