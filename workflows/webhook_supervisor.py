"""Keeps one WebhookDelivery workflow running per active subscription.

The API only writes the subscription table; this loop (in the worker process, beside the
bridge) reads it and makes Temporal match: a workflow per (subscription, run) is started
(starting one that already runs is a no-op), a workflow whose run was superseded or whose
subscription was deleted is cancelled. Every so often it re-asserts every start, which brings
back a workflow that ended without its subscription being paused (terminated by hand, say).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError

from engine.application import DealflowApp
from workflows.subscriptions import PAUSED, SubscriptionStore
from workflows.webhook_models import WebhookRun
from workflows.webhook_workflow import WebhookDelivery

log = logging.getLogger("dealflow.webhooks")


def workflow_id(prefix: str, subscription_id: str, run: int) -> str:
    return f"{prefix}webhook/{subscription_id}/{run}"


class WebhookSupervisor:
    def __init__(
        self,
        app: DealflowApp,
        client: Client,
        task_queue: str,
        *,
        workflow_id_prefix: str = "",
        poll_interval: float = 0.25,
        reassert_every: float = 10.0,
        batch_size: int = 200,
    ) -> None:
        self.store = SubscriptionStore(app.db)
        self.client = client
        self.task_queue = task_queue
        self.prefix = workflow_id_prefix
        self.poll_interval = poll_interval
        self.reassert_every = reassert_every
        self.batch_size = batch_size
        self.running: dict[str, int] = {}  # subscription -> the run started for it
        self._stop = asyncio.Event()
        self._last_reassert = 0.0

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.tick()
            except Exception as error:  # noqa: BLE001 - Temporal or the store away for a moment
                # A supervisor that dies takes the whole worker down with it (AutomationProcess
                # .wait); it must outlive outages and try again on the next tick.
                log.warning("webhook supervisor: %s", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.poll_interval)

    async def tick(self) -> None:
        rows = await asyncio.to_thread(self.store.runs)
        reassert = time.monotonic() - self._last_reassert >= self.reassert_every
        if reassert:
            self._last_reassert = time.monotonic()
        wanted = {sid: run for sid, run, status in rows if status != PAUSED}
        for subscription_id, run in list(self.running.items()):
            if wanted.get(subscription_id) != run:
                await self._cancel(subscription_id, run)
                del self.running[subscription_id]
        for subscription_id, run in wanted.items():
            if self.running.get(subscription_id) == run and not reassert:
                continue
            await self.client.start_workflow(
                WebhookDelivery.run,
                WebhookRun(subscription_id=subscription_id, run=run, batch_size=self.batch_size),
                id=workflow_id(self.prefix, subscription_id, run),
                task_queue=self.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            )
            self.running[subscription_id] = run

    async def _cancel(self, subscription_id: str, run: int) -> None:
        handle = self.client.get_workflow_handle(workflow_id(self.prefix, subscription_id, run))
        with contextlib.suppress(RPCError):
            await handle.cancel()
