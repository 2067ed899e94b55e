"""Day-long timers on the dev server's per-workflow time skipping (start_time_skipping_v2):
a 3-day and a 7-day wait, moved into a weekday send window, run in seconds of real time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from tests.workflows.conftest import Stack, pipeline_body, sequence_body, wait_for
from workflows import ids

pytestmark = pytest.mark.temporal


async def test_day_long_sequence_with_send_window(
    stack: Stack, temporal_env: WorkflowEnvironment
) -> None:
    window = {
        "timezone": "Europe/Paris",
        "weekdays": [1, 2, 3, 4, 5],
        "start_hour": 9,
        "end_hour": 17,
    }
    stack.put_pipeline(
        "test",
        pipeline_body(max_days=2, escalation={"manager_after_days": 2, "flag_after_days": 4}),
    )
    stack.put_sequence("slow", sequence_body([0, 3, 7], send_window=window))
    # The bridge starts workflows through the time-skipping client; the worker is an ordinary one.
    await stack.start(run_bridge=False)
    await stack.start(run_worker=False, client=temporal_env.client)
    stack.send(
        "d1",
        {
            "type": "opened",
            "pipeline_id": "test",
            "name": "Slow",
            "stage": "qualification",
            "owner": "Moses",
        },
    )

    await wait_for(
        lambda: "nurture_stopped" in stack.types("d1") and "flagged_stale" in stack.types("d1"),
        timeout=60,
    )
    assert [d["step"] for t, d in stack.automation("d1") if t == "nurture_touch_sent"] == [0, 1, 2]
    assert [
        d.get("level") for t, d in stack.automation("d1") if t in ("escalated", "flagged_stale")
    ] == ["owner", "manager", None]

    enrolled = next(e["version"] for e in stack.history("d1") if e["type"] == "nurture_enrolled")
    handle = stack.client.get_workflow_handle(
        stack.prefix + ids.nurture_workflow_id("d1", "slow", enrolled)
    )
    history = await handle.fetch_history()
    scheduled = [
        e.event_time.ToDatetime(tzinfo=UTC)
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    touches = scheduled[1:4]  # after load_sequence
    paris = ZoneInfo("Europe/Paris")
    for moment in touches:
        local = moment.astimezone(paris)
        assert local.isoweekday() <= 5 and 9 <= local.hour < 17, local
    assert touches[1] - touches[0] >= timedelta(days=3)
    assert touches[2] - touches[1] >= timedelta(days=7)
    assert touches[2] - touches[0] < timedelta(days=14)
    assert datetime.now(UTC) - touches[0] < timedelta(
        days=4
    )  # the virtual clock ran ahead, not the real one
