"""NurtureWorkflow: one enrollment of one deal in one sequence, step by step.

Waits for each step's delay (counted from the previous touch, the first from enrollment),
moved into the sequence's send window, then sends the touch through an activity. Stops when
the bridge signals a stop condition (or the touch activity finds one in the history) and
records ``nurture_stopped`` with the reason, ``completed`` after the last step. Long sequences
continue as new every ``max_steps_per_run`` steps.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from workflows.ids import touch_id
    from workflows.models import (
        DealSignal,
        NurtureInput,
        SequenceDefinition,
        SequenceRef,
        StopInput,
        TouchInput,
        TouchResult,
    )
    from workflows.schedule import days, next_open_slot

SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=12,
)
ALWAYS_STOP = frozenset({"unenrolled", "won", "lost"})
BOOKKEEPING_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)
)


@workflow.defn(name="NurtureWorkflow")
class NurtureWorkflow:
    def __init__(self) -> None:
        self.signals: list[DealSignal] = []
        self.definition: SequenceDefinition | None = None
        self.sent: list[int] = []

    @workflow.signal(name="deal_event")
    def deal_event(self, signal: DealSignal) -> None:
        self.signals.append(signal)

    @workflow.query(name="progress")
    def progress(self) -> dict[str, object]:
        stop = self._stopping(self.definition) if self.definition else None
        return {"sent": list(self.sent), "stopped": stop.reason if stop else None}

    @workflow.run
    async def run(self, enrollment: NurtureInput) -> str:
        definition = enrollment.definition or await workflow.execute_activity(
            "load_sequence",
            SequenceRef(sequence_id=enrollment.sequence_id, version=enrollment.sequence_version),
            result_type=SequenceDefinition,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=BOOKKEEPING_RETRY,
        )
        self.definition = definition
        workflow_id = workflow.info().workflow_id
        anchor = enrollment.anchor or workflow.now()
        step_index = enrollment.next_step
        steps_this_run = 0
        while step_index < len(definition.steps) and self._stopping(definition) is None:
            step = definition.steps[step_index]
            due = next_open_slot(anchor + days(step.after_days), definition.send_window)
            wait = due - workflow.now()
            if wait > timedelta(0):
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: self._stopping(definition) is not None, timeout=wait
                    )
                if self._stopping(definition) is not None:
                    break
            try:
                result = await workflow.execute_activity(
                    "send_touch",
                    TouchInput(
                        deal_id=enrollment.deal_id,
                        sequence_id=enrollment.sequence_id,
                        enrolled_version=enrollment.enrolled_version,
                        workflow_id=workflow_id,
                        step_index=step_index,
                        step=step,
                        stop_on=list(definition.stop_on),
                    ),
                    result_type=TouchResult,
                    start_to_close_timeout=timedelta(seconds=60),
                    retry_policy=SEND_RETRY,
                )
            except ActivityError as error:
                # Retries exhausted: the outbox row shows the failure; the sequence goes on.
                workflow.logger.warning(
                    "touch %s failed for good: %s", touch_id(workflow_id, step_index), error
                )
            else:
                if not result.sent and result.stop_reason:
                    self.signals.insert(
                        0,
                        DealSignal(
                            reason=result.stop_reason, already_recorded=result.stop_recorded
                        ),
                    )
                    break
                self.sent.append(step_index)
            anchor = workflow.now()
            step_index += 1
            steps_this_run += 1
            more = step_index < len(definition.steps)
            if more and (
                steps_this_run >= enrollment.max_steps_per_run
                or workflow.info().is_continue_as_new_suggested()
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                if self._stopping(definition) is None:
                    workflow.continue_as_new(
                        enrollment.model_copy(
                            update={
                                "definition": definition,
                                "next_step": step_index,
                                "anchor": anchor,
                            }
                        )
                    )
        stop = self._stopping(definition)
        reason = stop.reason if stop is not None else "completed"
        if stop is None or not stop.already_recorded:
            await workflow.execute_activity(
                "record_nurture_stopped",
                StopInput(
                    deal_id=enrollment.deal_id,
                    sequence_id=enrollment.sequence_id,
                    workflow_id=workflow_id,
                    reason=reason,
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=BOOKKEEPING_RETRY,
            )
        return reason

    def _stopping(self, definition: SequenceDefinition) -> DealSignal | None:
        """The first signal this sequence stops on (unenrollment and a closed deal always stop it)."""
        for signal in self.signals:
            if (
                signal.already_recorded
                or signal.reason in definition.stop_on
                or signal.reason in ALWAYS_STOP
            ):
                return signal
        return None
