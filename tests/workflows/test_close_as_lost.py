"""Issue 12, item 4 on the real dev server: a stage's `close_as_lost_after_days` closes a stuck
deal as lost with the reason `stale`, after the other levels, exactly once, through the same
write path as a client's `lost`; without it nothing is closed."""

from __future__ import annotations

import asyncio

import pytest

from engine.application import Command
from tests.workflows.conftest import TICK_DAYS, Stack, pipeline_body, wait_for
from workflows import ids

pytestmark = pytest.mark.temporal

ESCALATION = {
    "manager_after_days": TICK_DAYS,
    "flag_after_days": 2 * TICK_DAYS,
    "close_as_lost_after_days": 3 * TICK_DAYS,
}


def _open(stack: Stack, deal_id: str, pipeline_id: str) -> None:
    stack.send(
        deal_id,
        {"type": "opened", "pipeline_id": pipeline_id, "name": deal_id, "stage": "qualification"},
    )


async def test_a_stuck_deal_is_closed_as_lost_once_and_only_when_configured(stack: Stack) -> None:
    stack.put_pipeline("closing", pipeline_body(max_days=TICK_DAYS, escalation=ESCALATION))
    plain = {k: v for k, v in ESCALATION.items() if k != "close_as_lost_after_days"}
    stack.put_pipeline("keeping", pipeline_body(max_days=TICK_DAYS, escalation=plain))
    await stack.start()
    _open(stack, "closed", "closing")
    _open(stack, "kept", "keeping")

    await wait_for(lambda: "lost" in stack.types("closed"), timeout=30)
    history = stack.history("closed")
    types = [e["type"] for e in history]
    assert types == ["opened", "escalated", "escalated", "flagged_stale", "lost"]
    lost = history[-1]
    assert lost["data"] == {"from_stage": "qualification", "reason": "stale"}
    assert lost["actor"] == "dealflow:escalation"
    assert lost["event_id"] == ids.escalation_event_id("closed", 1, "closed_lost")
    state = stack.app.deal_state(stack.app.deal("closed"))
    assert (state["status"], state["lost_reason"]) == ("lost", "stale")
    for _ in range(100):  # the window lets the stay go right after its last level
        if not await stack.stay_watched("closed", 1):
            break
        await asyncio.sleep(0.1)
    assert not await stack.stay_watched("closed", 1)

    # The same level recorded again (a retried activity, say) is an idempotent replay.
    body = {"type": "lost", "event_id": lost["event_id"], "reason": "stale"}
    replay = stack.app.ingest([Command.from_body("closed", body, "dealflow:escalation")])[0]
    assert replay.status == "duplicate"
    assert [e["type"] for e in stack.history("closed")].count("lost") == 1

    # Without the setting, the deal is flagged and stays open.
    await wait_for(lambda: "flagged_stale" in stack.types("kept"), timeout=30)
    await asyncio.sleep(3 * TICK_DAYS * 86400)
    assert "lost" not in stack.types("kept")
    assert stack.app.deal("kept").status == "open"


def test_the_last_level_comes_after_the_flag() -> None:
    from pydantic import ValidationError

    from engine.domain.pipeline import PipelineDefinition

    body = pipeline_body(
        max_days=1, escalation={"flag_after_days": 4, "close_as_lost_after_days": 3}
    )
    with pytest.raises(ValidationError, match="close_as_lost_after_days"):
        PipelineDefinition.model_validate(body)
