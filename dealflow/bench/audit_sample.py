"""Synthetic deal histories on the built-in pipeline, for audit benchmarks and tests.

Each deal walks the default pipeline from prospecting to won (which also opens a linked
post-purchase deal) or is lost half way, so a generated store has every event type a sender
can write, stage changes carrying their criteria, and follow-up deals without idempotency
records of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.application import Command, DealflowApp

START = datetime(2017, 3, 1, tzinfo=UTC)

# One deal's life on the default pipeline: (type, fields). Won deals take all of it.
WON_PATH: list[tuple[str, dict[str, Any]]] = [
    ("fact_recorded", {"fact": "contact_made", "value": True}),
    ("stage_changed", {"to_stage": "qualification"}),
    ("fact_recorded", {"fact": "need", "value": True}),
    ("fact_recorded", {"fact": "budget", "value": True}),
    ("fact_recorded", {"fact": "authority", "value": True}),
    ("fact_recorded", {"fact": "timeline", "value": True}),
    ("stage_changed", {"to_stage": "meeting"}),
    ("activity_logged", {"activity": "demo", "summary": "demo for the buying committee"}),
    ("stage_changed", {"to_stage": "proposal"}),
    ("updated", {"amount": "12500.00"}),
    ("activity_logged", {"activity": "proposal"}),
    ("stage_changed", {"to_stage": "negotiation"}),
    ("fact_recorded", {"fact": "verbal_commit", "value": True}),
    ("stage_changed", {"to_stage": "contract"}),
    ("fact_recorded", {"fact": "contract_signed", "value": True}),
    ("won", {}),
]
LOST_AFTER = 7


def make_command(deal_id: str, body: dict[str, Any], actor: str = "sample") -> Command:
    return Command.from_body(deal_id, body, actor)


def deal_commands(prefix: str, index: int, *, pipeline_id: str = "default") -> list[Command]:
    """One deal's commands; every third deal is lost after a few steps."""
    deal_id = f"{prefix}-{index}"
    at = START + timedelta(minutes=index)
    lost = index % 3 == 2
    bodies: list[dict[str, Any]] = [
        {
            "type": "opened",
            "pipeline_id": pipeline_id,
            "name": f"Deal {index}",
            "amount": "1000",
            "owner": f"rep-{index % 7}",
            "industry": ("saas", "retail", "health")[index % 3],
            "lead_source": "web",
        }
    ]
    path = WON_PATH[:LOST_AFTER] if lost else WON_PATH
    bodies += [{"type": kind, **fields} for kind, fields in path]
    if lost:
        bodies.append({"type": "lost", "reason": "no budget"})
    commands = []
    for step, body in enumerate(bodies):
        body = {
            **body,
            "event_id": f"{deal_id}-e{step}",
            "occurred_at": (at + timedelta(hours=step)).isoformat(),
        }
        commands.append(make_command(deal_id, body))
    return commands


def command_stream(
    events: int, prefix: str = "d", *, pipeline_id: str = "default"
) -> Iterator[Command]:
    """About ``events`` commands (whole deals), in deal order."""
    emitted = 0
    index = 0
    while emitted < events:
        for command in deal_commands(prefix, index, pipeline_id=pipeline_id):
            yield command
            emitted += 1
        index += 1


def populate(app: DealflowApp, events: int, *, prefix: str = "d", batch: int = 5000) -> int:
    """Ingest about ``events`` events in batches (a deal's commands never straddle... they may:
    a batch applies them in order, and the next batch continues from what is stored)."""
    recorded = 0
    pending: list[Command] = []
    for command in command_stream(events, prefix):
        pending.append(command)
        if len(pending) >= batch:
            recorded += _ingest(app, pending)
            pending = []
    if pending:
        recorded += _ingest(app, pending)
    return recorded


def _ingest(app: DealflowApp, commands: list[Command]) -> int:
    outcomes = app.ingest(commands)
    rejected = [o for o in outcomes if o.status == "rejected"]
    if rejected:
        first = rejected[0]
        raise RuntimeError(
            f"sample ingest rejected {len(rejected)} events; first: {first.deal_id} {first.error}"
        )
    return len(outcomes)
