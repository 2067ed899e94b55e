"""WebhookDelivery: one subscription's deliveries, following the log from its cursor.

Each round fetches the next batch of matching events (an activity that long-polls when
nothing is new), delivers it deal by deal (the events of one deal one at a time, in log
order; different deals in parallel), and only then moves the stored cursor past the batch.
The next fetch stores the cursor it is given (past the delivered batch), so a crash anywhere
redelivers at most the batch in flight: at least once, never a skip. Retries back off
exponentially. A 410 from the receiver pauses the subscription and ends the run; so do a
pause, a delete or a replay (which starts a new run).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.webhook_models import (
        DeliverInput,
        DeliverResult,
        Delivery,
        FetchInput,
        FetchResult,
        WebhookRun,
    )

BOOKKEEPING_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
ROUNDS_PER_RUN = 200


@workflow.defn(name="WebhookDelivery")
class WebhookDelivery:
    def __init__(self) -> None:
        self.cursor: int | None = None
        self.delivered = 0

    @workflow.query(name="progress")
    def progress(self) -> dict[str, int | None]:
        return {"cursor": self.cursor, "delivered": self.delivered}

    @workflow.run
    async def run(self, job: WebhookRun) -> str:
        self.cursor = job.cursor
        for _ in range(ROUNDS_PER_RUN):
            batch = await workflow.execute_activity(
                "webhook_fetch",
                FetchInput(
                    subscription_id=job.subscription_id,
                    run=job.run,
                    after=self.cursor,
                    limit=job.batch_size,
                ),
                result_type=FetchResult,
                start_to_close_timeout=timedelta(seconds=60),
                heartbeat_timeout=timedelta(seconds=20),
                retry_policy=BOOKKEEPING_RETRY,
            )
            if batch.stopped:
                return "stopped"
            self.cursor = batch.after
            if batch.deliveries:
                results = await asyncio.gather(
                    *(self._deliver(job, group, batch) for group in _by_deal(batch.deliveries))
                )
                self.delivered += sum(r.delivered for r in results)
                if any(r.gone or r.stopped for r in results):
                    return "paused" if any(r.gone for r in results) else "stopped"
            self.cursor = batch.next_after
            if workflow.info().is_continue_as_new_suggested():
                break
        workflow.continue_as_new(job.model_copy(update={"cursor": self.cursor}))

    async def _deliver(
        self, job: WebhookRun, group: list[Delivery], batch: FetchResult
    ) -> DeliverResult:
        timeout = batch.timeout_seconds
        return await workflow.execute_activity(
            "webhook_deliver",
            DeliverInput(subscription_id=job.subscription_id, run=job.run, deliveries=group),
            result_type=DeliverResult,
            # One POST at a time, each bounded by the subscription's timeout; the heartbeat
            # after each one lets a lost worker's delivery resume elsewhere within seconds.
            start_to_close_timeout=timedelta(seconds=timeout * len(group) + 60),
            heartbeat_timeout=timedelta(seconds=timeout + 5),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=max(1.0, batch.retry_max_seconds)),
            ),
        )


def _by_deal(deliveries: list[Delivery]) -> list[list[Delivery]]:
    groups: dict[str, list[Delivery]] = {}
    for delivery in deliveries:
        groups.setdefault(delivery.deal_key, []).append(delivery)
    return list(groups.values())
