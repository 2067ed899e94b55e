"""Feeds the log to a projection in batches, on a background thread or in the foreground.

How events arrive is the only thing that differs between backends:

- catching up (any backend, and any time the projection is far behind): pages of stored events
  read with ``select_notifications`` and decoded straight from JSON, thousands per transaction;
- live on PostgreSQL: the recorder's subscription (LISTEN/NOTIFY), drained into batches of
  whatever has arrived and decoded straight from JSON as well;
- live on SQLite (no ``subscribe()``): polling ``select_notifications`` every ``poll`` seconds.

Every batch goes through ``DealsProjection.process_batch``: one transaction with its tracking
record, checked against the position this runner expects (so a rebuild or a second runner
makes it resume from the database's position, never apply a batch twice).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import IntegrityError, Notification, Tracking
from eventsourcing.postgres import PostgresApplicationRecorder
from opentelemetry import trace

from engine.collector import paused_for
from projections.readmodel import health
from projections.readmodel.projection import DealsProjection
from projections.readmodel.records import EventRecord, from_notification
from projections.readmodel.views import PositionMoved

log = logging.getLogger("dealflow.projections")

PAGE = 5000  # events per catch-up transaction
_tracer = trace.get_tracer("dealflow.projections")
LIVE_TO_PAGES = 20_000  # this far behind, the live subscription gives way to pages


@dataclass
class RunnerStats:
    processed: int = 0
    batches: int = 0
    started_at: float = field(default_factory=time.monotonic)
    last_batch_at: float | None = None
    last_error: str | None = None

    @property
    def events_per_s(self) -> float:
        elapsed = time.monotonic() - self.started_at
        return self.processed / elapsed if elapsed > 0 else 0.0


class BatchRunner:
    def __init__(
        self,
        app: Any,
        projection: DealsProjection,
        *,
        page: int = PAGE,
        poll: float = 0.1,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self.app = app
        self.projection = projection
        self.name = projection.name
        self.page = page
        self.poll = poll
        self.on_commit = on_commit
        self.stats = RunnerStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live = isinstance(app.recorder, PostgresApplicationRecorder)
        # True until a pass succeeds: a failure recorded by an earlier run is cleared then.
        self._failing = True

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.run_forever, name=f"projection-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- the loops ----------------------------------------------------------------------------
    def run_forever(self) -> None:
        """Catch up, then follow the log until stopped; errors are logged and retried."""
        backoff = 0.5
        while not self._stop.is_set():
            try:
                position = self.catch_up(stop=self._stop)
                self._recovered()
                if self._stop.is_set():
                    break
                if self._live:
                    self._follow_subscription(position)
                else:
                    self._stop.wait(self.poll)
                backoff = 0.5
            except Exception as error:  # noqa: BLE001 - a runner must outlive a database hiccup
                self.stats.last_error = f"{type(error).__name__}: {error}"
                log.exception("projection %s failed; retrying", self.name)
                self._failed(self.stats.last_error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _failed(self, error: str) -> None:
        """Make the failure visible to every process (readyz, metrics, dashboard)."""
        self._failing = True
        try:
            health.record_failure(self.app.db, self.name, self.projection.view.position(), error)
        except Exception:  # noqa: BLE001 - e.g. the database itself is what failed
            log.warning("could not record the failure of projection %s", self.name)

    def _recovered(self) -> None:
        if self._failing:
            health.clear(self.app.db, self.name)
            self._failing = False

    def catch_up(
        self,
        until: int | None = None,
        progress: Callable[[int], None] | None = None,
        stop: threading.Event | None = None,
    ) -> int:
        """Process pages until the log (or ``until``) is reached; returns the position.

        A reader thread fetches and decodes the next page while this one folds and writes the
        current one (the database works on its own core meanwhile)."""
        position = self.projection.view.position()
        while stop is None or not stop.is_set():
            pages = _Prefetch(self.app, position, self.page, until)
            try:
                for records, last in pages:
                    if stop is not None and stop.is_set():
                        return position
                    moved_to = self._process(records, last, position)
                    if moved_to != last:
                        position = moved_to
                        break  # resume from what the database says
                    position = last
                    if progress is not None:
                        progress(position)
                else:
                    return position
            finally:
                pages.close()
        return position

    def _process(self, records: list[EventRecord], last: int, expected: int) -> int:
        try:
            # A page's rows live exactly as long as the page (see engine.collector).
            with (
                paused_for(len(records)),
                _tracer.start_as_current_span("dealflow.projection.batch") as span,
            ):
                span.set_attribute("dealflow.events", len(records))
                span.set_attribute("dealflow.position", last)
                self.projection.process_batch(
                    records, Tracking(self.projection.view.tracking_name, last), expected
                )
        except PositionMoved as moved:
            return moved.position
        except IntegrityError:
            # Someone else tracked this batch first: resume from what is stored.
            return self.projection.view.position()
        self.stats.processed += len(records)
        self.stats.batches += 1
        self.stats.last_batch_at = time.monotonic()
        self.stats.last_error = None
        self._recovered()
        if self.on_commit is not None:
            self.on_commit(last)
        return last

    def _follow_subscription(self, position: int) -> None:
        """Live tail on PostgreSQL: drain the subscription into batches until stopped, or until
        it falls far behind (then pages are faster) or the position moves under us."""
        inbox: queue.Queue[Notification | None] = queue.Queue(maxsize=self.page * 2)
        # The recorder's own subscription, not eventsourcing's ApplicationSubscription: that one
        # validates every stored event into its pydantic model, which the fold then dumped back
        # to JSON (a full round trip per event that decides nothing, and the projection's CPU
        # competes with the writers'). Records come straight from the stored JSON instead, as
        # when catching up.
        subscription = self.app.recorder.subscribe(gt=position)

        def feed() -> None:
            try:
                for item in subscription:
                    inbox.put(item)
            except Exception as error:  # noqa: BLE001
                self.stats.last_error = f"subscription: {error}"
            finally:
                inbox.put(None)

        feeder = threading.Thread(target=feed, name=f"projection-{self.name}-feed", daemon=True)
        feeder.start()
        try:
            while not self._stop.is_set():
                try:
                    first = inbox.get(timeout=0.2)
                except queue.Empty:
                    continue
                if first is None:
                    return
                items = [first]
                while len(items) < self.page:
                    try:
                        more = inbox.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        break
                    items.append(more)
                mapper = self.app.mapper
                records = [
                    r for r in (from_notification(note, mapper) for note in items) if r is not None
                ]
                last = items[-1].id
                new_position = self._process(records, last, position)
                if new_position != last:
                    return  # moved under us: start over from the stored position
                position = new_position
                if self.app.max_position() - position > LIVE_TO_PAGES:
                    return
        finally:
            subscription.stop()
            while feeder.is_alive():
                try:
                    inbox.get_nowait()
                except queue.Empty:
                    feeder.join(0.05)


class _Prefetch:
    """Pages of decoded records from ``start`` on, read one page ahead on a thread."""

    def __init__(self, app: Any, start: int, page: int, until: int | None) -> None:
        self._queue: queue.Queue[tuple[list[EventRecord], int] | BaseException | None] = (
            queue.Queue(maxsize=2)
        )
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._read,
            args=(app, start, page, until),
            daemon=True,
            name="projection-prefetch",
        )
        self._thread.start()

    def _read(self, app: Any, position: int, page: int, until: int | None) -> None:
        try:
            while not self._closed.is_set():
                notes = app.recorder.select_notifications(
                    start=position, limit=page, inclusive_of_start=False, stop=until
                )
                if not notes:
                    break
                records = [
                    r for r in (from_notification(n, app.mapper) for n in notes) if r is not None
                ]
                position = notes[-1].id
                self._put((records, position))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            self._put(error)
        self._put(None)

    def _put(self, item: Any) -> None:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[tuple[list[EventRecord], int]]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
