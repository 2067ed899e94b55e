"""Issue 12 on the real dev server: each pipeline's schedules (scoring retrain, pipeline review)
are created by the worker; a review run sends the digest through the channels as text and
HTML, each run covering the period since the previous one; a retrain run records a model."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dealflow.revenue import review_source, schedule_pipelines
from engine.scoring.service import latest_model
from tests.workflows.conftest import Stack, wait_for
from workflows.revenue import retrain_schedule_id, review_schedule_id
from workflows.worker import AutomationProcess

pytestmark = pytest.mark.temporal

PIPELINE: dict[str, Any] = {
    "name": "Reviewed",
    "currency": "EUR",
    "stages": [
        {"id": "lead", "name": "Lead", "probability": 0.1, "max_days_in_stage": 30},
        {"id": "deal", "name": "Deal", "probability": 0.6, "forecast_category": "commit"},
    ],
    "scoring": {"min_closed_deals": 6},
    "review": {"cron": "0 8 * * 1", "to": "team@example.test", "monthly_target": "5000"},
}


def _reviews(stack: Stack) -> list[dict[str, Any]]:
    return stack.services.automation.outbox.list(kind="review")


async def test_review_and_retrain_schedules(stack: Stack) -> None:
    stack.put_pipeline("rev", PIPELINE)
    for i in range(8):
        industry = "software" if i % 2 else "retail"
        stack.send(
            f"d{i}",
            {
                "type": "opened",
                "pipeline_id": "rev",
                "name": f"Deal {i}",
                "owner": "Ann",
                "industry": industry,
                "amount": "1000",
            },
        )
    for i in range(6):
        stack.send(f"d{i}", {"type": "won"} if i % 2 else {"type": "lost", "reason": "price"})
    stack.send("d6", {"type": "stage_changed", "to_stage": "deal"})
    stack.services.projections.catch_up()

    process = AutomationProcess(
        stack.app,
        stack.client,
        stack.task_queue,
        channels=stack.channels,
        run_bridge=False,
        bridge_options=dict(stack.bridge_options),
        review_source=review_source,
        schedule_pipelines=lambda: schedule_pipelines(stack.app),
    )
    stack.extra.append(process)
    await process.start()
    review = stack.client.get_schedule_handle(review_schedule_id(stack.prefix, "rev"))
    retrain = stack.client.get_schedule_handle(retrain_schedule_id(stack.prefix, "rev"))
    try:
        described = await review.describe()
        # The server keeps a cron expression as a calendar: Mondays, 08:00.
        (calendar,) = described.schedule.spec.calendars
        assert [(r.start, r.end) for r in calendar.day_of_week] == [(1, 1)]
        assert [r.start for r in calendar.hour] == [8] and [r.start for r in calendar.minute] == [0]

        await review.trigger()
        first = (await wait_for(lambda: _reviews(stack), timeout=30))[0]
        assert first["to"] == "team@example.test" and first["channel"] == "email"
        assert first["deal_id"] == "pipeline:rev" and first["status"] == "sent"
        body = first["body"]
        assert body.startswith("Pipeline review: Reviewed (rev)")
        assert "Closed: 3 won (3,000.00 EUR), 3 lost" in body
        assert "New deals: 8 (8,000.00 EUR)" in body
        assert "Moved forward: 1" in body
        assert "<h1>Pipeline review: Reviewed (rev)" in first["html"]
        assert "<h2>Closed: 3 won" in first["html"]

        # The next run covers only what happened since the first one.
        stack.send("d9", {"type": "opened", "pipeline_id": "rev", "name": "Late", "amount": "7"})
        stack.services.projections.catch_up()
        await asyncio.sleep(1.1)  # a distinct period end (message ids are per period)
        await review.trigger()
        both = await wait_for(lambda: len(_reviews(stack)) == 2 and _reviews(stack), timeout=30)
        second = next(m for m in both if m["id"] != first["id"])
        assert "New deals: 1 (7.00 EUR)" in second["body"]
        assert "Closed: 0 won (0.00 EUR), 0 lost" in second["body"]

        await retrain.trigger()
        model = await wait_for(lambda: latest_model(stack.app, "rev"), timeout=60)
        assert model[1]["trained_on"]["deals"] == 6 and model[1]["trained_on"]["won"] == 3
    finally:
        for handle in (review, retrain):
            await handle.delete()
