"""Scheduled revenue work (issue 12): retraining a pipeline's scoring model, and the pipeline
review digest. Each pipeline gets two Temporal schedules (``ensure_schedules``): the retrain
(daily by default) and the review (the pipeline's ``review.cron``, weekly by default). The
workflows only call activities (workflows.revenue_activities): the work touches the store.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.models import RetrainInput, ReviewInput, ReviewResult, ReviewRun

RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=5))
RETRAIN_EVERY = timedelta(days=1)


@workflow.defn(name="ScoringRetrain")
class ScoringRetrain:
    @workflow.run
    async def run(self, job: RetrainInput) -> dict[str, Any]:
        result: dict[str, Any] = await workflow.execute_activity(
            "train_scoring",
            job,
            start_to_close_timeout=timedelta(minutes=30),
            retry_policy=RETRY,
        )
        return result


@workflow.defn(name="PipelineReview")
class PipelineReview:
    @workflow.run
    async def run(self, job: ReviewInput) -> ReviewResult:
        # The period ends when this run started: a retried activity reviews the same period
        # and delivers the same message id (sent once).
        return await workflow.execute_activity(
            "send_review",
            ReviewRun(pipeline_id=job.pipeline_id, until=workflow.now()),
            result_type=ReviewResult,
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=RETRY,
        )


def retrain_schedule_id(prefix: str, pipeline_id: str) -> str:
    return f"{prefix}dealflow-scoring-retrain:{pipeline_id}"


def review_schedule_id(prefix: str, pipeline_id: str) -> str:
    return f"{prefix}dealflow-review:{pipeline_id}"


async def ensure_schedules(
    client: Any,
    task_queue: str,
    pipelines: Iterable[tuple[str, str]],
    *,
    prefix: str = "",
) -> list[str]:
    """Create (or bring up to date) each pipeline's retrain and review schedules;
    ``pipelines`` are (pipeline id, review cron) pairs. Returns the schedule ids."""
    from temporalio.client import (
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleAlreadyRunningError,
        ScheduleIntervalSpec,
        ScheduleSpec,
        ScheduleUpdate,
        ScheduleUpdateInput,
    )

    ids: list[str] = []
    for pipeline_id, cron in pipelines:
        plans = [
            (
                retrain_schedule_id(prefix, pipeline_id),
                ScheduleActionStartWorkflow(
                    ScoringRetrain.run,
                    RetrainInput(pipeline_id=pipeline_id),
                    id=f"{prefix}scoring-retrain:{pipeline_id}",
                    task_queue=task_queue,
                ),
                ScheduleSpec(intervals=[ScheduleIntervalSpec(every=RETRAIN_EVERY)]),
            ),
            (
                review_schedule_id(prefix, pipeline_id),
                ScheduleActionStartWorkflow(
                    PipelineReview.run,
                    ReviewInput(pipeline_id=pipeline_id),
                    id=f"{prefix}pipeline-review:{pipeline_id}",
                    task_queue=task_queue,
                ),
                ScheduleSpec(cron_expressions=[cron]),
            ),
        ]
        for schedule_id, action, spec in plans:
            schedule = Schedule(action=action, spec=spec)
            try:
                await client.create_schedule(schedule_id, schedule)
            except ScheduleAlreadyRunningError:

                def replace(_: ScheduleUpdateInput, new: Schedule = schedule) -> ScheduleUpdate:
                    return ScheduleUpdate(schedule=new)

                await client.get_schedule_handle(schedule_id).update(replace)
            ids.append(schedule_id)
    return ids
