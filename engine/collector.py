"""The garbage collector's pace for dealflow's processes.

``tune_gc`` (called by the CLI and by ``build_services``, so every process that writes or
projects events gets it): CPython collects its youngest generation every 700 net container
allocations. A 5,000-event batch keeps its commands, events and deals alive until it commits,
so each of those collections found nothing to free and walked everything allocated since the
last, promoting it, until the oldest generation (the deal cache, the pydantic schemas) was
walked again: 24-33 µs of a writer's ~100 µs of CPU per event went to the collector (``bench
ingest`` under load, measured with ``gc.callbacks``). Almost every object dealflow allocates is
freed by reference counting; the collector only has cycles to find, and those wait a little
longer now.

``paused_for`` goes further for large batches: even at one young collection per 20,000
allocations, a batch's objects were walked once or twice each (and promoted, so that a full
collection walked the whole heap again), all for nothing, since they live exactly as long as
the batch. While a batch of ``PAUSE_FROM`` commands or more is validated, decided and stored,
the collector does not run; when it ends its objects are freed by reference counting, and the
collector resumes with whatever cycles it left.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

# The first generation's threshold: one young collection per ~20,000 net allocations (about
# 150 events of a batch) instead of 700 (about 5). The older generations keep their ratios.
YOUNG_THRESHOLD = 20_000
# Batches smaller than this run with the collector as usual: a single event's few hundred
# objects cost it nothing, and pausing is process-wide.
PAUSE_FROM = 256
# A pause is process-wide: while batches overlap in several threads the collector stays off.
# Should they overlap for this long, the young generations are collected anyway (cycles made
# meanwhile must not pile up without bound in a busy server).
LONGEST_PAUSE = 5.0


def tune_gc() -> None:
    """Raise the young generation's threshold (never lower it, if something else raised it)."""
    young, middle, old = gc.get_threshold()
    if young < YOUNG_THRESHOLD:
        gc.set_threshold(YOUNG_THRESHOLD, middle, old)


class _Pauses:
    """How many batches are running with the collector paused, and whether it was on before."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.resume = False  # whether the collector was enabled when the first pause began
        self.since = 0.0

    def enter(self) -> None:
        with self.lock:
            if self.running == 0:
                self.resume = gc.isenabled()
                self.since = time.monotonic()
                gc.disable()
            elif time.monotonic() - self.since > LONGEST_PAUSE:
                gc.collect(1)
                self.since = time.monotonic()
            self.running += 1

    def leave(self) -> None:
        with self.lock:
            self.running -= 1
            if self.running == 0 and self.resume:
                gc.enable()


_pauses = _Pauses()


@contextmanager
def paused_for(size: int) -> Iterator[None]:
    """Run a batch of ``size`` commands with the collector paused, if it is that large."""
    if size < PAUSE_FROM:
        yield
        return
    _pauses.enter()
    try:
        yield
    finally:
        _pauses.leave()
