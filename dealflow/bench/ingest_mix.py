"""The event mix of ``dealflow bench ingest``: realistic deal histories (opened, facts,
activities, stage changes, updates, won or lost) as the contract's event bodies, deals
interleaved so that most of them span two consecutive batches."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

STEPS_WON: list[dict[str, Any]] = [
    {"type": "fact_recorded", "fact": "contact_made", "value": True},
    {"type": "activity_logged", "activity": "call", "summary": "intro call"},
    {"type": "stage_changed", "to_stage": "qualification"},
    {"type": "fact_recorded", "fact": "need", "value": True, "note": "pain confirmed"},
    {"type": "fact_recorded", "fact": "budget", "value": True},
    {"type": "fact_recorded", "fact": "authority", "value": True},
    {"type": "fact_recorded", "fact": "timeline", "value": True},
    {"type": "stage_changed", "to_stage": "meeting"},
    {"type": "activity_logged", "activity": "demo", "summary": "product demo"},
    {"type": "stage_changed", "to_stage": "proposal"},
    {"type": "updated", "amount": "48250.50", "expected_close": "2024-09-30"},
    {"type": "activity_logged", "activity": "proposal"},
    {"type": "stage_changed", "to_stage": "negotiation"},
    {"type": "activity_logged", "activity": "email", "summary": "redlines"},
    {"type": "fact_recorded", "fact": "verbal_commit", "value": True},
    {"type": "stage_changed", "to_stage": "contract"},
    {"type": "fact_recorded", "fact": "contract_signed", "value": True},
    {"type": "won", "amount": "47900"},
]
INDUSTRIES = ["software", "retail", "finance", "health", "manufacturing"]
SOURCES = ["webinar", "referral", "outbound", "inbound", "partner"]


def _deal_events(deal_id: str, rng: random.Random, start_day: int) -> list[dict[str, Any]]:
    """One deal's history: won (~40%), lost somewhere on the way (~60%)."""
    opened = {
        "type": "opened",
        "pipeline_id": "default",
        "name": f"Deal {deal_id}",
        "amount": f"{rng.randint(1000, 90000)}.{rng.randint(0, 99):02d}",
        "owner": rng.choice(["Moses Frase", "Ann Lee", "Raj Patel", "Eva Novak"]),
        "account": f"Account {rng.randint(1, 5000)}",
        "industry": rng.choice(INDUSTRIES),
        "lead_source": rng.choice(SOURCES),
        "decision_maker_role": rng.choice(["CFO", "CTO", "VP Sales"]),
        "attributes": {
            "region": rng.choice(["emea", "amer", "apac"]),
            "seats": rng.randint(5, 500),
        },
    }
    steps = list(STEPS_WON)
    if rng.random() < 0.6:
        cut = rng.randint(1, len(steps) - 2)
        steps = [
            *steps[:cut],
            {"type": "lost", "reason": rng.choice(["price", "timing", "competitor"])},
        ]
    events = []
    for n, body in enumerate([opened, *steps]):
        day, hour = divmod(start_day * 24 + n * 7, 24)
        events.append(
            {
                **body,
                "deal_id": deal_id,
                "event_id": f"{deal_id}-{n}",
                "occurred_at": f"2024-{1 + day // 28 % 12:02d}-{1 + day % 28:02d}T{hour:02d}:00:00Z",
            }
        )
    return events


def generate(count: int, batch: int, seed: int = 7, prefix: str = "bench") -> list[dict[str, Any]]:
    """``count`` events; deals interleaved so that most deals span two consecutive batches."""
    return [event for chunk in batches(count, batch, seed, prefix) for event in chunk]


def batches(
    count: int, batch: int, seed: int = 7, prefix: str = "bench"
) -> Iterator[list[dict[str, Any]]]:
    """The events of :func:`generate` in batches of ``batch``, built as they are consumed (a
    preload of millions of events never holds them all). ``prefix`` names the deals, so a
    preload and the measured events never share a deal."""
    rng = random.Random(seed)
    group = max(batch // 12, 1)  # deals in flight at once
    pending: list[dict[str, Any]] = []
    produced = 0
    serial = 0
    while produced < count:
        histories = []
        for _ in range(group):
            serial += 1
            histories.append(_deal_events(f"{prefix}-{serial}", rng, start_day=rng.randint(0, 200)))
        longest = max(len(h) for h in histories)
        for step in range(longest):
            for history in histories:
                if step < len(history) and produced < count:
                    pending.append(history[step])
                    produced += 1
        while len(pending) >= batch:
            yield pending[:batch]
            pending = pending[batch:]
    if pending:
        yield pending
