"""A worker killed in the middle of a sequence (SIGKILL, no goodbye) and started again skips no
step and sends nothing twice; a retried touch activity finds its earlier effects."""

from __future__ import annotations

import asyncio
import signal
import subprocess

import pytest

from tests.workflows.conftest import (
    TICK_DAYS,
    CountingSender,
    Stack,
    pipeline_body,
    sequence_body,
    wait_for,
    worker_process,
)
from workflows.activities import AutomationActivities
from workflows.channels import Channels, deliver
from workflows.models import Step, TouchInput
from workflows.outbox import Message, Outbox

pytestmark = pytest.mark.temporal


def _worker_process(stack: Stack) -> subprocess.Popen[bytes]:
    return worker_process(stack.services.app.settings, stack.client, stack.task_queue)


def _steps(stack: Stack, deal_id: str) -> list[int]:
    return [d["step"] for t, d in stack.automation(deal_id) if t == "nurture_touch_sent"]


async def test_killed_worker_resumes_without_gaps_or_repeats(stack: Stack) -> None:
    tick = TICK_DAYS / 2
    stack.put_pipeline("test", pipeline_body())
    stack.put_sequence("welcome", sequence_body([0, tick, tick, tick, tick]))
    await stack.start(run_worker=False)  # the bridge runs here, the worker in a child process
    worker = _worker_process(stack)
    try:
        stack.send(
            "d1", {"type": "opened", "pipeline_id": "test", "name": "D1", "stage": "qualification"}
        )
        await wait_for(lambda: len(_steps(stack, "d1")) >= 2, timeout=30)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        down_at = len(_steps(stack, "d1"))
        await asyncio.sleep(2.5 * tick * 86400)  # at least one step falls due while no worker runs
        assert len(_steps(stack, "d1")) == down_at
        worker = _worker_process(stack)
        await wait_for(lambda: "nurture_stopped" in stack.types("d1"), timeout=40)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0  # a clean stop on SIGTERM
    assert _steps(stack, "d1") == [0, 1, 2, 3, 4]
    messages = stack.services.automation.outbox.list(deal_id="d1")
    assert len(messages) == 5 and len({m["id"] for m in messages}) == 5
    assert [d for t, d in stack.automation("d1") if t == "nurture_stopped"] == [
        {"sequence_id": "welcome", "reason": "completed"}
    ]


async def test_retried_touch_never_sends_or_records_twice(stack: Stack) -> None:
    stack.put_pipeline("test", pipeline_body())
    stack.send(
        "d1",
        {
            "type": "opened",
            "pipeline_id": "test",
            "name": "D1",
            "stage": "qualification",
            "attributes": {"contact_email": "a@b.test"},
        },
    )
    outcome = stack.app.record_automation(
        "d1",
        "nurture_enrolled",
        {"sequence_id": "s", "sequence_version": 1},
        event_id="enroll",
        actor="tester",
    )
    sender = CountingSender()
    channels = Channels(smtp=sender)  # type: ignore[arg-type]
    outbox = Outbox(stack.app.db)
    activities = AutomationActivities(stack.app, outbox, channels)
    touch = TouchInput(
        deal_id="d1",
        sequence_id="s",
        enrolled_version=outcome.version or 0,
        workflow_id="wf",
        step_index=0,
        step=Step(after_days=0, channel="email", subject="Hi {name}"),
        stop_on=["won"],
    )
    # A crash after delivery, before the history event: the retry must not send again.
    deliver(
        outbox, channels, Message("touch:wf:0", "d1", "nurture", "email", "a@b.test", "Hi D1", "")
    )
    stack.send("d1", {"type": "updated", "name": "Renamed"})  # the retry renders differently now
    first = activities.send_touch(touch)
    second = activities.send_touch(touch)  # a retry after everything went through
    assert first.sent and second.sent
    assert sender.sent == ["touch:wf:0"]
    touches = [d for t, d in stack.automation("d1") if t == "nurture_touch_sent"]
    assert touches == [
        {"sequence_id": "s", "step": 0, "channel": "email", "to": "a@b.test", "subject": "Hi D1"}
    ]
