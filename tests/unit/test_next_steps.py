"""Issue 12, item 3: a deal's next best steps from its state, the pipeline and its sequences."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from engine.next_steps import next_steps
from tests.unit.domain_builders import Clock, open_deal, pipeline

PIPELINE = {
    "name": "Steps",
    "stages": [
        {
            "id": "qualify",
            "name": "Qualify",
            "probability": 0.2,
            "max_days_in_stage": 10,
            "exit_criteria": [
                {"id": "budget", "kind": "fact", "description": "budget confirmed"},
                {"id": "priced", "kind": "field", "field": "amount", "op": "gte", "value": 1000},
                {"id": "demo", "kind": "activity", "activity": "demo", "min_count": 2},
            ],
        },
        {"id": "close", "name": "Close", "probability": 0.8},
    ],
    "qualification": [
        {"id": "eu", "kind": "field", "field": "country", "op": "in", "value": ["DE"]}
    ],
}
STEPS = [
    {"after_days": 0, "channel": "email", "subject": "Hello"},
    {"after_days": 3, "channel": "task", "subject": "Call"},
]


def _steps(sequence_id: str, version: int) -> list[dict[str, Any]]:
    assert (sequence_id, version) == ("welcome", 2)
    return STEPS


def test_steps_follow_the_state_in_order() -> None:
    ref = pipeline(PIPELINE)
    clock = Clock()
    deal = open_deal(ref, clock, country="FR", amount=Decimal("500"))
    opened = clock.now
    steps = next_steps(deal, ref.definition, opened + timedelta(days=4), _steps)
    assert [(s["kind"], s.get("criterion")) for s in steps] == [
        ("qualification", "eu"),
        ("exit_criterion", "budget"),
        ("exit_criterion", "priced"),
        ("exit_criterion", "demo"),
        ("stage_limit", None),
    ]
    assert steps[1]["description"] == "budget confirmed"
    assert steps[-1]["days_left"] == 6.0

    deal.update(clock.meta(), 1, {"country": "DE", "amount": Decimal("1000")}, ref.definition)
    deal.record_fact(clock.meta(), 1, fact="budget", value=True)
    deal.log_activity(clock.meta(), 1, activity="demo")
    deal.enroll_nurture(clock.meta(), 1, sequence_id="welcome", sequence_version=2)
    enrolled = clock.now
    steps = next_steps(deal, ref.definition, opened + timedelta(days=12), _steps)
    assert [s["kind"] for s in steps] == ["exit_criterion", "stage_limit", "nurture_touch"]
    assert steps[0]["criterion"] == "demo"  # one demo of two
    assert steps[1]["days_left"] == -2.0  # over the limit: negative
    assert steps[2]["step"] == 0 and steps[2]["due_at"] == enrolled.isoformat().replace(
        "+00:00", "Z"
    )

    deal.record_touch(
        clock.meta(), 1, sequence_id="welcome", step=0, channel="email", to=None, subject="Hello"
    )
    touched = clock.now
    touch = next_steps(deal, ref.definition, touched, _steps)[-1]
    assert (touch["step"], touch["channel"]) == (1, "task")
    assert touch["due_at"] == (touched + timedelta(days=3)).isoformat().replace("+00:00", "Z")
    deal.record_touch(
        clock.meta(), 1, sequence_id="welcome", step=1, channel="task", to=None, subject="Call"
    )
    # The sequence is done: no touch left; without a lookup no touch is known either.
    assert next_steps(deal, ref.definition, clock.now, _steps)[-1]["kind"] == "stage_limit"
    deal.log_activity(clock.meta(), 1, activity="demo")
    deal.change_stage(clock.meta(), ref, to_stage="close")
    assert next_steps(deal, ref.definition, clock.now, _steps) == []
