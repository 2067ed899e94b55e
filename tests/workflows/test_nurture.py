"""Nurture sequences on the real dev server: enrollment by rule and by hand, every touch
recorded once, each stop condition, continue-as-new."""

from __future__ import annotations

import asyncio

import pytest

from tests.workflows.conftest import TICK_DAYS, Stack, pipeline_body, sequence_body, wait_for
from workflows import ids

pytestmark = pytest.mark.temporal


def _open_into_qualification(stack: Stack, deal_id: str, **fields: object) -> None:
    stack.send(
        deal_id,
        {
            "type": "opened",
            "pipeline_id": "test",
            "name": f"Deal {deal_id}",
            "account": "Acme",
            "owner": "Moses",
            "attributes": {"contact_email": "buyer@acme.test"},
            **fields,
        },
    )
    stack.send(deal_id, {"type": "stage_changed", "to_stage": "qualification"})


async def test_sequence_runs_to_completion(stack: Stack) -> None:
    stack.put_pipeline("test", pipeline_body())
    stack.put_sequence("welcome", sequence_body([0, TICK_DAYS, TICK_DAYS]))
    await stack.start()
    _open_into_qualification(stack, "d1")

    def finished() -> bool:
        return "nurture_stopped" in stack.types("d1")

    await wait_for(finished, timeout=30)
    automation = stack.automation("d1")
    assert [t for t, _ in automation] == [
        "nurture_enrolled",
        "nurture_touch_sent",
        "nurture_touch_sent",
        "nurture_touch_sent",
        "nurture_stopped",
    ]
    assert automation[0][1] == {"sequence_id": "welcome", "sequence_version": 1}
    assert [d["step"] for t, d in automation if t == "nurture_touch_sent"] == [0, 1, 2]
    assert automation[1][1]["subject"] == "Step 0 for Deal d1 at Acme"
    assert automation[1][1]["to"] == "buyer@acme.test"
    assert automation[-1][1] == {"sequence_id": "welcome", "reason": "completed"}
    messages = stack.services.automation.outbox.list(deal_id="d1", kind="nurture")
    assert [m["subject"] for m in messages] == [f"Step {i} for Deal d1 at Acme" for i in range(3)]
    assert all(m["status"] == "sent" and m["delivery"] == "outbox" for m in messages)
    assert messages[0]["body"] == "Hello Deal d1, touch 0."
    # Touch event ids and message ids are the same deterministic ids.
    history = stack.history("d1")
    enrolled_version = next(e["version"] for e in history if e["type"] == "nurture_enrolled")
    workflow_id = stack.prefix + ids.nurture_workflow_id("d1", "welcome", enrolled_version)
    assert {m["id"] for m in messages} == {ids.touch_id(workflow_id, i) for i in range(3)}
    assert stack.app.deal("d1").nurture == {}


TRIGGERS = {
    "stage_changed": {"type": "stage_changed", "to_stage": "proposal"},
    "won": {"type": "won"},
    "lost": {"type": "lost", "reason": "budget"},
    "reply": {"type": "activity_logged", "activity": "reply"},
    "unenrolled": None,
}


async def test_sequence_stops_on_each_condition(stack: Stack) -> None:
    """One deal per stop condition, side by side: each stops after its first touch."""
    stack.put_pipeline("test", pipeline_body())
    stack.put_sequence("welcome", sequence_body([0, 2 * TICK_DAYS, 2 * TICK_DAYS]))
    await stack.start()
    for trigger in TRIGGERS:
        _open_into_qualification(stack, trigger)
    for trigger in TRIGGERS:
        await wait_for(lambda t=trigger: "nurture_touch_sent" in stack.types(t))
    for trigger, event in TRIGGERS.items():
        if event is not None:
            stack.send(trigger, event)
        else:
            outcome = stack.app.record_automation(
                trigger,
                "nurture_stopped",
                {"sequence_id": "welcome", "reason": "unenrolled"},
                event_id="by-hand",
                actor="tester",
            )
            assert outcome.status == "recorded"
    for trigger in TRIGGERS:
        await wait_for(lambda t=trigger: "nurture_stopped" in stack.types(t))
    await asyncio.sleep(3 * TICK_DAYS * 86400)  # past the next step's due time
    for trigger in TRIGGERS:
        automation = stack.automation(trigger)
        touches = [d for t, d in automation if t == "nurture_touch_sent"]
        stops = [d for t, d in automation if t == "nurture_stopped"]
        assert [d["step"] for d in touches] == [0], trigger
        assert stops == [{"sequence_id": "welcome", "reason": trigger}]
        assert len(stack.services.automation.outbox.list(deal_id=trigger)) == 1


async def test_stop_on_subset_ignores_other_conditions(stack: Stack) -> None:
    stack.put_pipeline("test", pipeline_body())
    stack.put_sequence("welcome", sequence_body([0, 2 * TICK_DAYS], stop_on=["won"]))
    await stack.start()
    _open_into_qualification(stack, "d1")
    await wait_for(lambda: "nurture_touch_sent" in stack.types("d1"))
    stack.send("d1", {"type": "activity_logged", "activity": "reply"})
    await wait_for(lambda: "nurture_stopped" in stack.types("d1"))
    assert [d for t, d in stack.automation("d1") if t == "nurture_stopped"] == [
        {"sequence_id": "welcome", "reason": "completed"}
    ]
    assert len([t for t, _ in stack.automation("d1") if t == "nurture_touch_sent"]) == 2


async def test_enrollment_filters_and_manual_enrollment(stack: Stack) -> None:
    stack.put_pipeline("test", pipeline_body())
    body = sequence_body([0])
    body["enroll"]["industry"] = "retail"
    stack.put_sequence("retail", body)
    stack.put_sequence("manual", sequence_body([0], enroll=False))
    await stack.start()
    _open_into_qualification(stack, "other", industry="banking")
    _open_into_qualification(stack, "shop", industry="retail")
    await wait_for(lambda: "nurture_stopped" in stack.types("shop"))
    assert "nurture_enrolled" not in stack.types("other")
    outcome = stack.app.record_automation(
        "other",
        "nurture_enrolled",
        {"sequence_id": "manual", "sequence_version": 1},
        event_id="manual-1",
        actor="tester",
    )
    assert outcome.status == "recorded"
    await wait_for(lambda: "nurture_stopped" in stack.types("other"))
    assert [t for t, _ in stack.automation("other")] == [
        "nurture_enrolled",
        "nurture_touch_sent",
        "nurture_stopped",
    ]


async def test_long_sequence_continues_as_new(stack: Stack) -> None:
    stack.put_pipeline("test", pipeline_body())
    stack.put_sequence("long", sequence_body([0, 0, 0, 0, 0, 0, 0]))
    stack.bridge_options["nurture_steps_per_run"] = 2
    await stack.start()
    _open_into_qualification(stack, "d1")
    await wait_for(lambda: "nurture_stopped" in stack.types("d1"), timeout=30)
    touches = [d["step"] for t, d in stack.automation("d1") if t == "nurture_touch_sent"]
    assert touches == list(range(7))
    version = next(e["version"] for e in stack.history("d1") if e["type"] == "nurture_enrolled")
    handle = stack.client.get_workflow_handle(
        stack.prefix + ids.nurture_workflow_id("d1", "long", version)
    )
    runs = [r async for r in stack.client.list_workflows(f"WorkflowId = '{handle.id}'")]
    assert len(runs) == 4  # 7 steps, 2 per run
