"""Which Deal method handles which command: one table, keyed by the command's model.

``opened`` is not in the table: it creates a deal instead of acting on one (:func:`open_deal`).
A handler gets the deal, the event's envelope, the pipeline the deal is judged against, and the
command; rules (exit criteria, closed deals...) live in the Deal methods themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.commands import (
    ActivityLoggedIn,
    Escalation,
    FactRecordedIn,
    LostIn,
    NurtureEnrollment,
    NurtureStop,
    NurtureTouch,
    OpenedIn,
    ReopenedIn,
    StageChangedIn,
    StaleFlag,
    UpdatedIn,
    WonIn,
)
from engine.domain.deal import Deal, EventMeta, PipelineRef

DealMethod = Callable[[Deal, EventMeta, PipelineRef, Any], None]

DEAL_METHODS: dict[type[Any], DealMethod] = {
    # What senders write.
    FactRecordedIn: lambda deal, meta, ref, c: deal.record_fact(
        meta, ref.version, fact=c.fact, value=c.value, note=c.note
    ),
    UpdatedIn: lambda deal, meta, ref, c: deal.update(
        meta, ref.version, c.changes(), ref.definition
    ),
    ActivityLoggedIn: lambda deal, meta, ref, c: deal.log_activity(
        meta, ref.version, activity=c.activity, summary=c.summary
    ),
    StageChangedIn: lambda deal, meta, ref, c: deal.change_stage(meta, ref, to_stage=c.to_stage),
    WonIn: lambda deal, meta, ref, c: deal.win(meta, ref, amount=c.amount),
    LostIn: lambda deal, meta, ref, c: deal.lose(meta, ref.version, reason=c.reason),
    ReopenedIn: lambda deal, meta, ref, c: deal.reopen(meta, ref, to_stage=c.to_stage),
    # What dealflow's own automation writes.
    NurtureEnrollment: lambda deal, meta, ref, c: deal.enroll_nurture(
        meta, ref.version, sequence_id=c.sequence_id, sequence_version=c.sequence_version
    ),
    NurtureTouch: lambda deal, meta, ref, c: deal.record_touch(
        meta,
        ref.version,
        sequence_id=c.sequence_id,
        step=c.step,
        channel=c.channel,
        to=c.to,
        subject=c.subject,
    ),
    NurtureStop: lambda deal, meta, ref, c: deal.stop_nurture(
        meta, ref.version, sequence_id=c.sequence_id, reason=c.reason
    ),
    Escalation: lambda deal, meta, ref, c: deal.escalate(
        meta, ref.version, stage=c.stage, level=c.level, to=c.to
    ),
    StaleFlag: lambda deal, meta, ref, c: deal.flag_stale(meta, ref.version, stage=c.stage),
}


def open_deal(deal_id: str, payload: OpenedIn, ref: PipelineRef, meta: EventMeta) -> Deal:
    """``opened`` creates the deal instead of acting on one."""
    fields = payload.model_dump(
        exclude={
            "type",
            "event_id",
            "occurred_at",
            "expected_version",
            "pipeline_id",
            "name",
            "stage",
            "currency",
        },
        exclude_none=True,
    )
    return Deal.open(
        deal_id,
        ref,
        meta,
        name=payload.name,
        stage=payload.stage,
        currency=payload.currency,
        **fields,
    )
