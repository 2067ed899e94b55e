"""Read shapes of the contract (deal state, history) and the application's reads that use them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from engine.application.loading import DealLoading
from engine.domain.deal import Deal, DealEvent, deal_uuid
from engine.domain.events import iso, utcnow
from engine.domain.pipeline import PipelineDefinition
from engine.next_steps import StepsLookup, next_steps, sequence_steps
from engine.persistence.db import Database


class DealReads(DealLoading):
    """A deal's state and history as the contract shows them. Part of :class:`DealflowApp`."""

    db: Database

    def deal_state(self, deal: Deal, *, at: datetime | None = None) -> dict[str, Any]:
        ref = self.pipeline_ref(deal.pipeline_id)
        return deal_view(deal, ref.definition, at or utcnow(), sequence_steps(self))

    def recorded_state(self, deal: Deal) -> dict[str, Any]:
        """The deal as its latest event left it, judged under the pipeline version that event
        was recorded with, at the moment it was recorded: nothing later can change this."""
        assert deal.modified_at is not None, "a deal has at least its opening event"
        definition = self.pipeline_ref(deal.pipeline_id, deal.pipeline_version).definition
        return deal_view(deal, definition, deal.modified_at, sequence_steps(self))

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
