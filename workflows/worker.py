"""The Temporal worker and the bridge, run together in one process (``dealflow worker``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import PollerBehaviorSimpleMaximum, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from engine.application import DealflowApp
from workflows import ids
from workflows.activities import AutomationActivities
from workflows.bridge import Bridge
from workflows.channels import Channels
from workflows.escalation import StaleDealEscalation
from workflows.escalation_window import EscalationWindow
from workflows.nurture import NurtureWorkflow
from workflows.outbox import Outbox
from workflows.revenue import PipelineReview, ScoringRetrain, ensure_schedules
from workflows.revenue_activities import RevenueActivities, ReviewSource
from workflows.settings import WorkerTuning
from workflows.webhook_activities import WebhookActivities
from workflows.webhook_supervisor import WebhookSupervisor
from workflows.webhook_workflow import WebhookDelivery

log = logging.getLogger("dealflow.worker")

# escalate_due calls one worker runs at once: each is a window's batch, mostly waiting for its
# due time (up to the window's lead), so a burst of windows must not queue for threads.
ESCALATION_ACTIVITIES = 64

WORKFLOWS: list[type] = [
    NurtureWorkflow,
    StaleDealEscalation,  # started by earlier releases: kept so that running ones complete
    WebhookDelivery,
    ScoringRetrain,
    PipelineReview,
]
PASSTHROUGH = (
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "zoneinfo",
    "opentelemetry",
    "workflows.models",
    "workflows.schedule",
    "workflows.ids",
    "workflows.webhook_models",
)


def _sandbox() -> SandboxedWorkflowRunner:
    # Pure modules every run shares instead of re-importing them per workflow run.
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    )


def build_escalation_worker(
    client: Client, activities: AutomationActivities, task_queue: str
) -> Worker:
    """The escalation windows, on their own task queue (``ids.escalation_task_queue``) with
    their own slots: a handful of workflows whose tasks must not wait behind a burst of others.
    Their ``escalate_due`` runs as a local activity, in this worker's activity threads."""
    return Worker(
        client,
        workflow_runner=_sandbox(),
        task_queue=ids.escalation_task_queue(task_queue),
        workflows=[EscalationWindow],
        activities=[activities.escalate_due],
        activity_executor=ThreadPoolExecutor(
            max_workers=ESCALATION_ACTIVITIES, thread_name_prefix="dealflow-escalation"
        ),
        max_concurrent_activities=ESCALATION_ACTIVITIES,
        max_concurrent_local_activities=ESCALATION_ACTIVITIES,
        max_cached_workflows=200,
        max_concurrent_workflow_tasks=32,
        workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(2),
        graceful_shutdown_timeout=timedelta(seconds=5),
    )


def build_worker(
    client: Client,
    activities: AutomationActivities,
    task_queue: str,
    *,
    max_concurrent_activities: int = 32,
    extra_activities: Sequence[Any] = (),
    tuning: WorkerTuning | None = None,
) -> Worker:
    tuning = tuning or WorkerTuning()
    return Worker(
        client,
        workflow_runner=_sandbox(),
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=[*activities.all(), *extra_activities],
        activity_executor=ThreadPoolExecutor(
            max_workers=max_concurrent_activities, thread_name_prefix="dealflow-activity"
        ),
        max_concurrent_activities=max_concurrent_activities,
        max_cached_workflows=tuning.max_cached_workflows,
        max_concurrent_workflow_tasks=tuning.max_concurrent_workflow_tasks,
        workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(tuning.workflow_pollers),
        graceful_shutdown_timeout=timedelta(seconds=5),
    )


@dataclass
class AutomationProcess:
    """A worker and a bridge over one application: start them, stop them."""

    app: DealflowApp
    client: Client
    task_queue: str
    channels: Channels = field(default_factory=Channels.from_env)
    run_worker: bool = True
    run_bridge: bool = True
    bridge_options: dict[str, Any] = field(default_factory=dict)
    max_concurrent_activities: int = 32
    tuning: WorkerTuning = field(default_factory=WorkerTuning.from_env)
    # Issue 12: the review digest's source (from the read models) and the pipelines to keep
    # retrain and review schedules for ((pipeline id, review cron) pairs); both from dealflow/.
    review_source: ReviewSource | None = None
    schedule_pipelines: Callable[[], list[tuple[str, str]]] | None = None
    worker: Worker | None = None
    escalation_worker: Worker | None = None
    bridge: Bridge | None = None
    webhooks: WebhookSupervisor | None = None
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def start(self) -> None:
        outbox = Outbox(self.app.db)
        await asyncio.to_thread(outbox.create_tables)
        if self.run_worker:
            activities = AutomationActivities(self.app, outbox, self.channels)
            revenue = RevenueActivities(self.app, outbox, self.channels, self.review_source)
            self.worker = build_worker(
                self.client,
                activities,
                self.task_queue,
                max_concurrent_activities=self.max_concurrent_activities,
                extra_activities=[*WebhookActivities(self.app).all(), *revenue.all()],
                tuning=self.tuning,
            )
            self._tasks.append(asyncio.create_task(self.worker.run(), name="dealflow-worker"))
            self.escalation_worker = build_escalation_worker(
                self.client, activities, self.task_queue
            )
            self._tasks.append(
                asyncio.create_task(self.escalation_worker.run(), name="dealflow-escalations")
            )
        prefix = str(self.bridge_options.get("workflow_id_prefix", ""))
        if self.schedule_pipelines is not None:
            pipelines = await asyncio.to_thread(self.schedule_pipelines)
            await ensure_schedules(self.client, self.task_queue, pipelines, prefix=prefix)
        if self.run_bridge:
            self.bridge = Bridge(self.app, self.client, self.task_queue, **self.bridge_options)
            await self.bridge.start()
            self._tasks.append(asyncio.create_task(self.bridge.run(), name="dealflow-bridge"))
            # Webhook subscriptions: one delivery workflow per active subscription.
            self.webhooks = WebhookSupervisor(
                self.app, self.client, self.task_queue, workflow_id_prefix=prefix
            )
            self._tasks.append(asyncio.create_task(self.webhooks.run(), name="dealflow-webhooks"))

    async def stop(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()
        if self.webhooks is not None:
            self.webhooks.stop()
        for worker in (self.worker, self.escalation_worker):
            if worker is not None:
                with contextlib.suppress(Exception):
                    await worker.shutdown()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=10)
        self._tasks.clear()

    async def __aenter__(self) -> AutomationProcess:
        await self.start()
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.stop()

    async def wait(self) -> None:
        """Until a part stops on its own (a crash): re-raise its error."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
