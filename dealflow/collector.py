"""The garbage collector's pace for dealflow's processes (``tune_gc``, called by the CLI and by
``build_services``, so every process that writes or projects events gets it).

CPython collects its youngest generation every 700 net container allocations. A 5,000-event
batch keeps its commands, events and deals alive until it commits, so each of those
collections found nothing to free and walked everything allocated since the last, promoting
it, until the oldest generation (the deal cache, the pydantic schemas) was walked again: 24-33
µs of a writer's ~100 µs of CPU per event went to the collector (``bench ingest`` under load,
measured with ``gc.callbacks``). Almost every object dealflow allocates is freed by reference
counting; the collector only has cycles to find, and those wait a little longer now.
"""

from __future__ import annotations

import gc

# The first generation's threshold: one young collection per ~20,000 net allocations (about
# 150 events of a batch) instead of 700 (about 5). The older generations keep their ratios.
YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    """Raise the young generation's threshold (never lower it, if something else raised it)."""
    young, middle, old = gc.get_threshold()
    if young < YOUNG_THRESHOLD:
        gc.set_threshold(YOUNG_THRESHOLD, middle, old)
