"""Group commit for activities: concurrent writes from many activity threads share one transaction.

A store commit costs a disk flush (milliseconds) and the event store takes its writes one at a
time, so a burst of escalations all due at once would queue behind each other's commits. The
first thread to arrive flushes whatever is queued; those arriving meanwhile queue up for the
next flush. Each caller gets its own item's result (or the batch's exception).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from engine.application import Command, DealflowApp, Outcome, automation_command
from engine.application.automation import refused
from engine.domain.errors import DomainError

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Slot(Generic[T]):
    item: T
    done: bool = False
    result: Any = None
    error: BaseException | None = None


class Batcher(Generic[T, R]):
    def __init__(self, flush: Callable[[list[T]], Sequence[R]], max_items: int = 256) -> None:
        self._flush = flush
        self._max = max_items
        self._cond = threading.Condition()
        self._queue: list[_Slot[T]] = []
        self._flushing = False

    def submit(self, item: T) -> R:
        slot = _Slot(item)
        with self._cond:
            self._queue.append(slot)
        while True:
            with self._cond:
                while not slot.done and self._flushing:
                    self._cond.wait()
                if slot.done:
                    if slot.error is not None:
                        raise slot.error
                    return slot.result  # type: ignore[no-any-return]
                self._flushing = True
                batch, self._queue = self._queue[: self._max], self._queue[self._max :]
            try:
                results = self._flush([s.item for s in batch])
                for s, result in zip(batch, results, strict=True):
                    s.result = result
            except BaseException as error:  # every waiter of the batch learns about it
                for s in batch:
                    s.error = error
            finally:
                with self._cond:
                    for s in batch:
                        s.done = True
                    self._flushing = False
                    self._cond.notify_all()


class AutomationRecorder:
    """``app.record_automation`` with group commit (same commands, same idempotency keys)."""

    def __init__(self, app: DealflowApp, max_items: int = 256) -> None:
        self.app = app
        self._batcher: Batcher[Command, Outcome] = Batcher(
            lambda commands: app.ingest(commands, allow_automation=True), max_items
        )

    def submit(self, command: Command) -> Outcome:
        """A command already built (a client-type event dealflow records, e.g. ``lost``)."""
        return self._batcher.submit(command)

    def record(
        self, deal_id: str, type_: str, data: dict[str, Any], *, event_id: str, actor: str
    ) -> Outcome:
        try:
            command = automation_command(deal_id, type_, data, event_id=event_id, actor=actor)
        except DomainError as error:
            return refused(deal_id, event_id, error)
        return self._batcher.submit(command)
