"""Synthetic deal streams for benches and tests: plausible sales histories, written as the
contract's event bodies so they go through the real batch path (``DealflowApp.ingest``).

Deals open, collect facts and activities, move forward (sometimes skipping a stage, sometimes
backward), get updated, are won or lost, and some are reopened. Within a *wave* of deals the
events are interleaved by business time, as a busy CRM would send them.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.application import Command

BENCH_PIPELINE_ID = "bench"
BENCH_PIPELINE: dict[str, Any] = {
    "name": "Bench pipeline",
    "currency": "USD",
    "qualified_after": "qualify",
    "stages": [
        {"id": "lead", "name": "Lead", "probability": 0.05, "max_days_in_stage": 10},
        {"id": "qualify", "name": "Qualify", "probability": 0.1, "max_days_in_stage": 15},
        {"id": "demo", "name": "Demo", "probability": 0.3},
        {"id": "proposal", "name": "Proposal", "probability": 0.5, "max_days_in_stage": 20},
        {"id": "closing", "name": "Closing", "probability": 0.8, "max_days_in_stage": 12},
    ],
}

INDUSTRIES = ["software", "retail", "medical", "finance", "telecom", "energy", None]
SOURCES = ["web", "referral", "event", "outbound", None]
ROLES = ["cto", "cfo", "vp-sales", "procurement", None]
OWNERS = [f"owner-{i:02d}" for i in range(20)]


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def deal_script(
    rng: random.Random, deal_id: str, start: datetime, stages: list[str], pipeline_id: str
) -> list[dict[str, Any]]:
    """One deal's events, in order, each with its ``occurred_at``."""
    clock = start
    events: list[dict[str, Any]] = []
    seq = 0

    def add(body: dict[str, Any]) -> None:
        nonlocal clock, seq
        seq += 1
        events.append({"event_id": f"{deal_id}#{seq}", "occurred_at": _iso(clock), **body})
        clock += timedelta(hours=rng.uniform(1, 24 * 6))

    opened: dict[str, Any] = {
        "type": "opened",
        "pipeline_id": pipeline_id,
        "name": f"Deal {deal_id}",
        "owner": rng.choice(OWNERS),
        "account": f"acct-{rng.randrange(2000)}",
    }
    if rng.random() < 0.9:
        opened["amount"] = f"{rng.randrange(500, 80_000)}.{rng.randrange(100):02d}"
    for field, values in (
        ("industry", INDUSTRIES),
        ("lead_source", SOURCES),
        ("decision_maker_role", ROLES),
    ):
        value = rng.choice(values)
        if value is not None:
            opened[field] = value
    if rng.random() < 0.1:
        opened["stage"] = stages[1]
    add(opened)
    index = stages.index(opened.get("stage", stages[0]))
    status = "open"
    for _ in range(rng.randrange(3, 14)):
        roll = rng.random()
        if status != "open":
            if roll < 0.15:
                index = rng.randrange(len(stages))
                add({"type": "reopened", "to_stage": stages[index]})
                status = "open"
                continue
            break
        if roll < 0.15:
            add(
                {
                    "type": "fact_recorded",
                    "fact": rng.choice(["need", "budget", "authority"]),
                    "value": True,
                }
            )
        elif roll < 0.3:
            add(
                {
                    "type": "activity_logged",
                    "activity": rng.choice(["email", "call", "demo", "meeting"]),
                }
            )
        elif roll < 0.37:
            add({"type": "updated", "amount": f"{rng.randrange(500, 90_000)}.00"})
        elif roll < 0.42 and index > 0:
            index = rng.randrange(index)
            add({"type": "stage_changed", "to_stage": stages[index]})
        elif roll < 0.75 and index < len(stages) - 1:
            index = min(index + (2 if rng.random() < 0.1 else 1), len(stages) - 1)
            add({"type": "stage_changed", "to_stage": stages[index]})
        elif roll < 0.87:
            add(
                {"type": "won"}
                | ({"amount": f"{rng.randrange(500, 90_000)}.50"} if rng.random() < 0.3 else {})
            )
            status = "won"
        else:
            add({"type": "lost", "reason": rng.choice(["price", "timing", "competitor"])})
            status = "lost"
    return events


def stream(
    deals: int,
    *,
    seed: int = 7,
    pipeline_id: str = BENCH_PIPELINE_ID,
    stages: list[str] | None = None,
    start: datetime = datetime(2023, 1, 1, tzinfo=UTC),
    wave: int = 500,
    prefix: str = "deal",
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(deal_id, body)`` pairs; per deal in order, interleaved by time within each wave."""
    rng = random.Random(seed)
    stage_ids = stages or [s["id"] for s in BENCH_PIPELINE["stages"]]
    for first in range(0, deals, wave):
        heap: list[tuple[str, int, str, dict[str, Any]]] = []
        for number in range(first, min(first + wave, deals)):
            deal_id = f"{prefix}-{number}"
            opened_at = start + timedelta(minutes=number * 7 + rng.randrange(0, 60))
            for order, body in enumerate(
                deal_script(rng, deal_id, opened_at, stage_ids, pipeline_id)
            ):
                heapq.heappush(heap, (body["occurred_at"], order, deal_id, body))
        while heap:
            _, _, deal_id, body = heapq.heappop(heap)
            yield deal_id, body


def to_command(deal_id: str, body: dict[str, Any], actor: str = "synthetic") -> Command:
    return Command.from_body(deal_id, body, actor)
