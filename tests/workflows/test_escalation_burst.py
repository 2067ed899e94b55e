"""Escalations falling due together share their reads (one query for their deals, the directory
once) and their writes (group commit); a retried or doubled escalation is still a replay."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest

from engine.domain.events import utcnow
from tests.workflows.conftest import CountingSender, Stack, pipeline_body
from workflows.activities import AutomationActivities
from workflows.channels import Channels
from workflows.models import DueEscalation, DueEscalations, EscalateInput
from workflows.outbox import Outbox

pytestmark = pytest.mark.temporal


def test_a_burst_of_doubled_escalations_records_and_sends_each_once(stack: Stack) -> None:
    stack.put_pipeline("test", pipeline_body(max_days=1))
    stack.put_directory([{"id": "olive", "email": "olive@x.test", "manager": "max"}])
    deals = [f"d{i}" for i in range(24)]
    stack.open_in_stage(deals)
    sender = CountingSender()
    activities = AutomationActivities(
        stack.app,
        Outbox(stack.app.db),
        Channels(smtp=sender),  # type: ignore[arg-type]
    )
    steps = [
        EscalateInput(deal_id=deal_id, stage="qualification", stage_entries=1, level=level)
        for deal_id in deals
        for level in ("owner", "flagged")
    ]
    # Every step twice and at once: a retry racing its first attempt, in one burst.
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(activities.escalate, steps + steps))
    assert all(result.done for result in results)
    assert sorted(sender.sent) == sorted(f"escalation:{d}:1:owner" for d in deals)
    for deal_id in deals:
        automated = stack.automation(deal_id)
        assert sorted(t for t, _ in automated) == ["escalated", "flagged_stale"], automated
        assert [d["to"] for t, d in automated if t == "escalated"] == ["olive@x.test"]
    again = activities.escalate(steps[0])  # a retry after everything went through
    assert again.done and len(sender.sent) == len(deals)


def test_a_window_batch_waits_for_each_due_time_and_records_each_level_once(
    stack: Stack,
) -> None:
    """``escalate_due`` (what an EscalationWindow runs): never before a level's due time, each
    level once even when every step comes twice, and nothing for a stay that is over."""
    stack.put_pipeline("test", pipeline_body(max_days=1))
    stack.put_directory(
        [
            {"id": "olive", "email": "olive@x.test", "manager": "max"},
            {"id": "max", "email": "max@x.test"},
        ]
    )
    deals = [f"w{i}" for i in range(12)]
    stack.open_in_stage(deals)
    stack.send("w11", {"type": "stage_changed", "to_stage": "proposal"})  # its stay is over
    sender = CountingSender()
    activities = AutomationActivities(
        stack.app,
        Outbox(stack.app.db),
        Channels(smtp=sender),  # type: ignore[arg-type]
    )
    start = utcnow()
    due = {"owner": start + timedelta(seconds=0.6), "manager": start + timedelta(seconds=1.2)}
    steps = [
        DueEscalation(deal_id=deal_id, stage="qualification", stage_entries=1, level=level, due=at)
        for deal_id in deals
        for level, at in due.items()
    ]
    results = activities.escalate_due(DueEscalations(steps=steps + steps)).results
    assert len(results) == 2 * len(steps)
    for step, result in zip(steps + steps, results, strict=True):
        if step.deal_id == "w11":
            assert (result.done, result.reason) == (False, "superseded")
        else:
            assert result.done, (step, result)
    for deal_id in deals[:-1]:
        escalated = [e for e in stack.history(deal_id) if e["type"] == "escalated"]
        assert [e["data"]["level"] for e in escalated] == ["owner", "manager"]
        for event in escalated:
            recorded = datetime.fromisoformat(event["recorded_at"].replace("Z", "+00:00"))
            assert recorded >= due[event["data"]["level"]]  # never before its due time
    assert stack.automation("w11") == []
    expected = sorted(f"escalation:{d}:1:{level}" for d in deals[:-1] for level in due)
    assert sorted(sender.sent) == expected
    again = activities.escalate_due(DueEscalations(steps=steps)).results  # a retried activity
    assert [r.done for r in again] == [r.done for r in results[: len(steps)]]
    assert sorted(sender.sent) == expected
