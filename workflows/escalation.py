"""StaleDealEscalation: one stay of one deal in a stage with ``max_days_in_stage``.

Earlier releases started one of these per stay; the bridge now hands stays to
``EscalationWindow`` (workflows/escalation_window.py) instead. This type stays registered so
that the ones already running on a cluster complete, and its replay must not change.

At the limit the owner is notified, ``manager_after_days`` later the owner's manager, and
``flag_after_days`` after the limit the deal is flagged stale, and, when the stage sets
``close_as_lost_after_days``, that long after the limit it is recorded lost with the reason
``stale`` (through the same write path as a client's ``lost``); each level fires once. The
bridge cancels the workflow when the deal leaves the stay (stage change, win, loss) and, when
the stage says ``activity_extends_limit``, signals new activity, which restarts the clock.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.models import ActivitySignal, EscalateInput, EscalateResult, EscalationInput
    from workflows.schedule import escalation_due, escalation_levels

ESCALATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
)


@workflow.defn(name="StaleDealEscalation")
class StaleDealEscalation:
    def __init__(self) -> None:
        self.last_activity_at: datetime | None = None
        self.clock_moved = False
        self.done: list[str] = []

    @workflow.signal(name="activity")
    def activity(self, signal: ActivitySignal) -> None:
        if self.last_activity_at is None or signal.at > self.last_activity_at:
            self.last_activity_at = signal.at
            self.clock_moved = True

    @workflow.query(name="levels")
    def levels(self) -> list[str]:
        return list(self.done)

    @workflow.run
    async def run(self, stay: EscalationInput) -> str:
        if stay.last_activity_at is not None and (
            self.last_activity_at is None or stay.last_activity_at > self.last_activity_at
        ):
            self.last_activity_at = stay.last_activity_at
        self.done = list(stay.done)
        levels = escalation_levels(stay)
        for level, offset in levels:
            if level in self.done:
                continue
            while True:
                wait = self._due(stay, offset) - workflow.now()
                if wait <= timedelta(0):
                    break
                self.clock_moved = False
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(lambda: self.clock_moved, timeout=wait)
                if workflow.info().is_continue_as_new_suggested():
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    workflow.continue_as_new(
                        stay.model_copy(
                            update={"done": self.done, "last_activity_at": self.last_activity_at}
                        )
                    )
            result = await workflow.execute_local_activity(
                "escalate",
                EscalateInput(
                    deal_id=stay.deal_id,
                    stage=stay.stage,
                    stage_entries=stay.stage_entries,
                    level=level,
                ),
                result_type=EscalateResult,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=ESCALATE_RETRY,
                local_retry_threshold=timedelta(seconds=10),
            )
            if not result.done:
                return result.reason or "superseded"
            self.done.append(level)
        return levels[-1][0]

    def _due(self, stay: EscalationInput, offset_days: float) -> datetime:
        return escalation_due(stay, offset_days, self.last_activity_at)
