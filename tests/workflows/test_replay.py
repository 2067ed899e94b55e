"""Determinism: histories recorded on the dev server replay cleanly against today's workflow code."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.workflows.conftest import TICK_DAYS, Stack, pipeline_body, sequence_body, wait_for
from workflows import ids
from workflows.escalation import StaleDealEscalation
from workflows.escalation_window import EscalationWindow
from workflows.nurture import NurtureWorkflow
from workflows.worker import WORKFLOWS

pytestmark = pytest.mark.temporal


async def test_recorded_histories_replay(stack: Stack) -> None:
    stack.put_pipeline(
        "test",
        pipeline_body(
            max_days=TICK_DAYS / 2,
            escalation={
                "manager_after_days": TICK_DAYS / 4,
                "flag_after_days": TICK_DAYS / 2,
                "activity_extends_limit": True,
            },
        ),
    )
    stack.put_sequence("welcome", sequence_body([0, TICK_DAYS / 4, TICK_DAYS / 4]))
    stack.put_sequence("long", {**sequence_body([0, 0, 0]), "name": "Long"})
    stack.bridge_options["nurture_steps_per_run"] = 2  # one continue-as-new in "long"
    await stack.start()
    stack.send("done", {"type": "opened", "pipeline_id": "test", "name": "Done", "stage": "lead"})
    stack.send("done", {"type": "stage_changed", "to_stage": "qualification"})
    stack.send("done", {"type": "activity_logged", "activity": "call"})
    stack.send(
        "stopped", {"type": "opened", "pipeline_id": "test", "name": "Stopped", "stage": "lead"}
    )
    stack.send("stopped", {"type": "stage_changed", "to_stage": "qualification"})
    await wait_for(
        lambda: (
            "flagged_stale" in stack.types("done")
            and stack.types("done").count("nurture_stopped") == 2
        ),
        timeout=30,
    )
    await wait_for(lambda: "nurture_touch_sent" in stack.types("stopped"))
    stack.send("stopped", {"type": "stage_changed", "to_stage": "proposal"})
    await wait_for(lambda: stack.types("stopped").count("nurture_stopped") == 2)

    histories: list[WorkflowHistory] = []
    queues = f"TaskQueue IN ('{stack.task_queue}', '{ids.escalation_task_queue(stack.task_queue)}')"
    async for execution in stack.client.list_workflows(queues):
        histories.append(
            await stack.client.get_workflow_handle(
                execution.id, run_id=execution.run_id
            ).fetch_history()
        )
    kinds = {h.workflow_id.split("/", 1)[1].split(":")[0] for h in histories}
    assert kinds == {"nurture", "escalations"} and len(histories) >= 6
    replayer = Replayer(
        workflows=[*WORKFLOWS, EscalationWindow], data_converter=pydantic_data_converter
    )
    failures = {}
    for history in histories:
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        failures[history.workflow_id] = result.replay_failure
    assert not [w for w, f in failures.items() if f is not None], failures
    assert stack.escalation_window("done", 2) in {h.workflow_id for h in histories}


async def test_replay_detects_a_changed_workflow(stack: Stack) -> None:
    """The check is real: a workflow that now does something else fails replay."""
    stack.put_pipeline("test", pipeline_body())
    stack.put_sequence("welcome", sequence_body([0]))
    await stack.start()
    stack.send(
        "d1", {"type": "opened", "pipeline_id": "test", "name": "D", "stage": "qualification"}
    )
    await wait_for(lambda: "nurture_stopped" in stack.types("d1"))
    version = next(e["version"] for e in stack.history("d1") if e["type"] == "nurture_enrolled")
    handle = stack.client.get_workflow_handle(
        stack.prefix + ids.nurture_workflow_id("d1", "welcome", version)
    )
    history = await handle.fetch_history()
    replayer = Replayer(
        workflows=[_ChangedNurture, StaleDealEscalation], data_converter=pydantic_data_converter
    )
    with pytest.raises(Exception, match="(?i)nondetermin|activity"):
        await replayer.replay_workflow(history)
    assert NurtureWorkflow  # today's code replays it (previous test)


from temporalio import workflow  # noqa: E402

with workflow.unsafe.imports_passed_through():
    from workflows.models import NurtureInput  # noqa: E402


@workflow.defn(name="NurtureWorkflow", sandboxed=False)
class _ChangedNurture:
    @workflow.run
    async def run(self, enrollment: NurtureInput) -> str:
        await workflow.sleep(1)  # a timer where the recorded history has an activity
        return "changed"
