"""EscalationWindow: the stale-deal escalations of every stay entered in one stretch of the log.

The bridge hands each stay in a stage with ``max_days_in_stage`` to the window of the log
position that opened the stay (``ids.escalation_window_id``), with one signal-with-start per
window and bridge batch, on a task queue of their own (``ids.escalation_task_queue``). The window
sleeps until ``LEAD`` before the earliest level due among its stays; when it wakes, *every* level
due within ``HORIZON`` goes to one ``escalate_due`` activity, which waits for each due time on the
wall clock and then, for all the levels due by then, reads the deals in one query and records
the escalations in one ingest call. A thousand deals falling due together are a handful of
workflow tasks and activities, not three thousand, and the latency of a timer and a workflow
task on a loaded cluster (seconds, measured) is spent before the due time, not after (issue 11).

Each level fires at most once per stay: the activity re-reads the deal, answers ``superseded``
for a stay that is over (the deal moved, was won or lost), ``extended`` when activity logged in
the stay pushed the level's due time past now (stages with ``activity_extends_limit``; the
window then sleeps until the new due time), and records with the level's deterministic event id,
so a repeated activity or a redelivered stay is an idempotent replay. Nothing is cancelled when a
deal leaves its stage: at due time the activity finds the stay over and drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.escalation import ESCALATE_RETRY
    from workflows.ids import stay_key
    from workflows.models import (
        DueEscalation,
        DueEscalations,
        DueResults,
        EscalationInput,
        Level,
        StayBatch,
    )
    from workflows.schedule import counted_from, escalation_due, escalation_levels

# Levels per activity (a window holds at most ids.ESCALATION_WINDOW_POSITIONS stays).
STEPS_PER_ACTIVITY = 1000
# How long before a level is due the window wakes and hands it to the activity, which waits out
# the rest on the wall clock (it never records before the due time); the levels due within
# HORIZON go along, so that levels close together (owner, manager, flag) are one activity.
LEAD = timedelta(seconds=10)
HORIZON = 2 * LEAD


@workflow.defn(name="EscalationWindow")
class EscalationWindow:
    def __init__(self) -> None:
        self.stays: dict[str, EscalationInput] = {}  # pending, in arrival order
        self.finished: set[str] = set()  # stays over: a redelivered one is not taken again
        self.busy: set[str] = set()  # stays whose levels an activity is handling
        self.changed = False  # stays arrived or an activity ended: look again
        self.failure: BaseException | None = None  # a bug in handling results: fail the task

    @workflow.signal(name="stays")
    def add(self, batch: StayBatch) -> None:
        self.finished.update(batch.finished)
        for stay in batch.stays:
            key = stay_key(stay.deal_id, stay.stage_entries)
            if key not in self.finished and key not in self.stays:
                self.stays[key] = stay
                self.changed = True

    @workflow.query(name="pending")
    def pending(self) -> dict[str, list[str]]:
        """Each pending stay with the levels it has fired."""
        return {key: list(stay.done) for key, stay in self.stays.items()}

    @workflow.run
    async def run(self, carried: StayBatch) -> int:
        self.add(carried)
        tasks: set[asyncio.Task[None]] = set()
        while self.stays:
            now = workflow.now()
            # Levels due soon go to activities, which run while the window takes new stays
            # (a stay arriving during a long wait must not wait for it).
            chunks: list[list[DueEscalation]] = [[]]
            for key, stay in self.stays.items():
                if key in self.busy:
                    continue
                steps = [step for step in self._steps(stay) if step.due <= now + HORIZON]
                if len(chunks[-1]) + len(steps) > STEPS_PER_ACTIVITY:
                    chunks.append([])
                chunks[-1].extend(steps)  # a stay's levels stay together, in order
            for chunk in chunks:
                if chunk:
                    self.busy.update(stay_key(step.deal_id, step.stage_entries) for step in chunk)
                    task = asyncio.create_task(self._escalate(chunk))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            # The earliest level not in an activity is due later than HORIZON: wake LEAD before.
            wake = min(
                (
                    steps[0].due
                    for key, stay in self.stays.items()
                    if key not in self.busy and (steps := self._steps(stay))
                ),
                default=None,
            )
            self.changed = False
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self.changed,
                    timeout=None if wake is None else max(wake - LEAD - now, timedelta(seconds=1)),
                )
            if self.failure is not None:
                raise self.failure
            if not self.busy and workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    StayBatch(stays=list(self.stays.values()), finished=sorted(self.finished))
                )
        return len(self.finished)

    def _steps(self, stay: EscalationInput) -> list[DueEscalation]:
        """The stay's levels still to fire, in order; a level is never due before the one
        before it (levels fire in order, as the per-stay workflow fired them)."""
        start = counted_from(stay, stay.last_activity_at) if stay.activity_extends_limit else None
        steps: list[DueEscalation] = []
        for level, offset in escalation_levels(stay):
            if level in stay.done:
                continue
            due = escalation_due(stay, offset, stay.last_activity_at)
            if steps and steps[-1].due > due:
                due = steps[-1].due
            steps.append(
                DueEscalation(
                    deal_id=stay.deal_id,
                    stage=stay.stage,
                    stage_entries=stay.stage_entries,
                    level=level,
                    due=due,
                    counted_from=start,
                )
            )
        return steps

    async def _escalate(self, steps: list[DueEscalation]) -> None:
        try:
            await self._escalate_steps(steps)
        except BaseException as error:  # noqa: BLE001 - re-raised by run(): the task fails
            self.failure = error
        finally:
            self.busy.difference_update(stay_key(s.deal_id, s.stage_entries) for s in steps)
            self.changed = True

    async def _escalate_steps(self, steps: list[DueEscalation]) -> None:
        outcome = await workflow.execute_local_activity(
            "escalate_due",
            DueEscalations(steps=steps),
            result_type=DueResults,
            start_to_close_timeout=timedelta(seconds=60) + HORIZON,
            retry_policy=ESCALATE_RETRY,
            local_retry_threshold=timedelta(seconds=10),
        )
        for step, result in zip(steps, outcome.results, strict=True):
            key = stay_key(step.deal_id, step.stage_entries)
            stay = self.stays.get(key)
            if stay is None:
                continue
            if result.done:
                if step.level not in stay.done:
                    stay.done.append(step.level)
                if _last(stay) == step.level:
                    self._finish(key)
            elif result.reason == "extended" and result.last_activity_at is not None:
                stay.last_activity_at = _later(stay.last_activity_at, result.last_activity_at)
            else:
                self._finish(key)  # superseded: the deal left the stay

    def _finish(self, key: str) -> None:
        del self.stays[key]
        self.finished.add(key)


def _last(stay: EscalationInput) -> Level:
    return escalation_levels(stay)[-1][0]


def _later(known: datetime | None, found: datetime) -> datetime:
    return found if known is None or found > known else known
