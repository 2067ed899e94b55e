"""Escalations falling due together share their reads (one query for their deals, the directory
once) and their writes (group commit); a retried or doubled escalation is still a replay."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.workflows.conftest import Stack, pipeline_body
from workflows.activities import AutomationActivities
from workflows.channels import Channels
from workflows.models import EscalateInput
from workflows.outbox import Message, Outbox

pytestmark = pytest.mark.temporal


class _CountingSender:
    name = "smtp"

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, message: Message) -> None:
        self.sent.append(message.id)


def test_a_burst_of_doubled_escalations_records_and_sends_each_once(stack: Stack) -> None:
    stack.put_pipeline("test", pipeline_body(max_days=1))
    stack.put_directory([{"id": "olive", "email": "olive@x.test", "manager": "max"}])
    deals = [f"d{i}" for i in range(24)]
    for deal_id in deals:
        stack.send(
            deal_id,
            {
                "type": "opened",
                "pipeline_id": "test",
                "name": deal_id,
                "stage": "qualification",
                "owner": "olive",
            },
        )
    sender = _CountingSender()
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
