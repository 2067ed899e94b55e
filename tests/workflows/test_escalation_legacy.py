"""The upgrade: per-stay ``StaleDealEscalation`` workflows, started by earlier releases, still run
to the end. The worker keeps their type and their ``escalate`` activity, the bridge still cancels
one whose deal leaves the stage, and their histories replay against today's code."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.workflows.conftest import TICK_DAYS, Stack, pipeline_body, wait_for
from workflows import ids
from workflows.bridge_state import TRACKING, create_tables, workflow_status
from workflows.escalation import StaleDealEscalation
from workflows.models import EscalationInput
from workflows.worker import WORKFLOWS

pytestmark = pytest.mark.temporal

ESCALATION = {"manager_after_days": TICK_DAYS, "flag_after_days": 2 * TICK_DAYS}


async def test_per_stay_workflows_of_an_earlier_release_complete(stack: Stack) -> None:
    stack.put_pipeline("test", pipeline_body(max_days=TICK_DAYS, escalation=ESCALATION))
    stack.put_directory([{"id": "olive", "email": "olive@x.test", "manager": "max"}])
    stack.open_in_stage(["kept", "moved"])
    # Before the upgrade the bridge had passed these events and started one workflow per stay.
    head = stack.app.recorder.max_notification_id() or 0
    create_tables(stack.app)
    with stack.app.db.transaction() as cur:
        cur.execute(f"INSERT INTO {TRACKING} (name, position) VALUES (%s, %s)", ("workflows", head))
    handles = {}
    for deal_id in ("kept", "moved"):
        opened = stack.history(deal_id)[0]
        handles[deal_id] = await stack.client.start_workflow(
            StaleDealEscalation.run,
            EscalationInput(
                deal_id=deal_id,
                stage="qualification",
                stage_entries=1,
                entered_at=datetime.fromisoformat(opened["occurred_at"].replace("Z", "+00:00")),
                max_days=TICK_DAYS,
                **ESCALATION,
            ),
            id=stack.prefix + ids.escalation_workflow_id(deal_id, 1),
            task_queue=stack.task_queue,
        )
    await stack.start()  # today's worker and bridge
    await wait_for(lambda: "escalated" in stack.types("moved"))
    stack.send("moved", {"type": "stage_changed", "to_stage": "proposal"})
    for _ in range(100):
        if (
            await workflow_status(stack.client, handles["moved"].id)
            != WorkflowExecutionStatus.RUNNING
        ):
            break
        await asyncio.sleep(0.1)
    assert (
        await workflow_status(stack.client, handles["moved"].id) == WorkflowExecutionStatus.CANCELED
    )

    await wait_for(lambda: "flagged_stale" in stack.types("kept"), timeout=30)
    assert await handles["kept"].result() == "flagged"
    await asyncio.sleep(2.5 * TICK_DAYS * 86400)
    levels = {
        deal_id: [d.get("level", "flag") for t, d in stack.automation(deal_id)]
        for deal_id in ("kept", "moved")
    }
    assert levels == {"kept": ["owner", "manager", "flag"], "moved": ["owner"]}
    sent = stack.services.automation.outbox.list(kind="escalation")
    assert sorted(m["id"] for m in sent) == [
        ids.escalation_event_id("kept", 1, "manager"),
        ids.escalation_event_id("kept", 1, "owner"),
        ids.escalation_event_id("moved", 1, "owner"),
    ]
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    for handle in handles.values():
        result = await replayer.replay_workflow(
            await handle.fetch_history(), raise_on_replay_failure=False
        )
        assert result.replay_failure is None, (handle.id, result.replay_failure)
