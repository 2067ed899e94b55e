"""The bridge's effects on Temporal: starts, signals, cancels, and stays handed to escalation
windows. Each is a coroutine made while deciding a batch and run after the decisions
(``Bridge._run_effects``); each is harmless to repeat when a batch is redelivered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from workflows import ids
from workflows.bridge_state import BridgeBatch, BridgeStats
from workflows.escalation_window import EscalationWindow
from workflows.models import EscalationInput, StayBatch

# A workflow id is used once, ever: a redelivered start finds the first workflow (running or
# closed) and fails with WorkflowAlreadyStartedError instead of starting a second one.
REUSE_POLICY = WorkflowIDReusePolicy.REJECT_DUPLICATE
CONFLICT_POLICY = WorkflowIDConflictPolicy.FAIL
# Stays per signal to an EscalationWindow (a window holds at most
# ids.ESCALATION_WINDOW_POSITIONS): keeps each signal's payload well under Temporal's limits.
STAYS_PER_SIGNAL = 250


class BridgeEffects:
    """Part of :class:`workflows.bridge.Bridge`."""

    client: Client
    task_queue: str
    concurrency: int
    stats: BridgeStats

    async def _run_effects(self, batch: BridgeBatch) -> None:
        """Each deal's effects in log order; different deals concurrently."""
        gate = asyncio.Semaphore(self.concurrency)

        async def one_deal(effects: list[Callable[[], Awaitable[None]]]) -> None:
            async with gate:
                for effect in effects:
                    await effect()

        # The stays first (the gate is FIFO): a few signals that escalations wait for, which
        # must not queue behind a burst of nurture starts.
        await asyncio.gather(
            *(
                self._hand_over(window_id, stays[first : first + STAYS_PER_SIGNAL], gate)
                for window_id, stays in batch.stays.items()
                for first in range(0, len(stays), STAYS_PER_SIGNAL)
            ),
            *(one_deal(effects) for effects in batch.effects.values()),
        )

    async def _hand_over(
        self, window_id: str, stays: list[EscalationInput], gate: asyncio.Semaphore
    ) -> None:
        """Stays to their window: one signal-with-start (a new run if the window already
        completed: its stays are idempotent). A redelivered stay is ignored by a running window."""
        async with gate:
            await self.client.start_workflow(
                EscalationWindow.run,
                StayBatch(),
                id=window_id,
                task_queue=ids.escalation_task_queue(self.task_queue),
                start_signal="stays",
                start_signal_args=[StayBatch(stays=stays)],
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            )
        self.stats.stays += len(stays)
        self.stats.handoff_times.append(time.monotonic())

    def _start(self, run: Any, argument: Any, workflow_id: str) -> Callable[[], Awaitable[None]]:
        async def start() -> None:
            try:
                await self.client.start_workflow(
                    run,
                    argument,
                    id=workflow_id,
                    task_queue=self.task_queue,
                    id_reuse_policy=REUSE_POLICY,
                    id_conflict_policy=CONFLICT_POLICY,
                )
            except WorkflowAlreadyStartedError:
                self.stats.already_started += 1
                return
            self.stats.started += 1
            self.stats.start_times.append(time.monotonic())
            self.stats.handoff_times.append(time.monotonic())

        return start

    def _signal(self, workflow_id: str, name: str, argument: Any) -> Callable[[], Awaitable[None]]:
        async def signal() -> None:
            try:
                await self.client.get_workflow_handle(workflow_id).signal(name, argument)
                self.stats.signals += 1
            except RPCError as error:
                if error.status != RPCStatusCode.NOT_FOUND:
                    raise

        return signal

    def _cancel(self, workflow_id: str) -> Callable[[], Awaitable[None]]:
        async def cancel() -> None:
            try:
                await self.client.get_workflow_handle(workflow_id).cancel()
                self.stats.cancels += 1
            except RPCError as error:
                if error.status != RPCStatusCode.NOT_FOUND:
                    raise

        return cancel
