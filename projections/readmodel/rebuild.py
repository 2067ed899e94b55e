"""A full rebuild of the read models on PostgreSQL, folded by deal in several processes.

The fold of one deal depends only on that deal's own events, and every summary table is a sum
over deals (the pipelines table a maximum, the versions table a minimum). So a rebuild can cut
the deals into ranges of their ids and fold each range on its own, in any order and in any
process:

- each range's events are read in (deal, version) order through the events table's primary key,
  so a deal arrives whole: its rows are final when written (plain COPY, no UPDATE of a row
  written earlier, no read of the rows already stored);
- a worker process folds ranges one after another, writing each range's rows in its own
  transaction and keeping only the range in memory (memory stays flat as the log grows: a range
  holds about ``RANGE_EVENTS`` events);
- the summary deltas of every range are added up in memory (their size is the number of keys:
  pipelines x stages x days, not deals) and the parent writes them, with the tracking record, at
  the end. The result equals what the incremental runner builds, row for row (tested).

Only events up to the log position taken at the start are folded; the runner carries on from
there. If anything fails the read models are reset, so the runner rebuilds them the slow way.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
import psycopg
from eventsourcing.persistence import Tracking

from projections.readmodel.copying import copy_new_rows, copy_summaries
from projections.readmodel.fold import DealFold
from projections.readmodel.records import DEAL_TOPICS, EventRecord, to_us
from projections.readmodel.rows import ChangeSet
from projections.readmodel.timeline import add_delta

RANGE_EVENTS = 40_000  # events per range of deal ids (what a worker holds at once)
# The summary parts of a ChangeSet (added up across ranges).
_SUMMED = (
    "stats",
    "keys",
    "visits",
    "won_buckets",
    "t_stats",
    "t_keys",
    "t_visits",
    "t_won",
    "open_entered",
)


@dataclass
class RebuildStats:
    events: int
    deals: int
    ranges: int
    workers: int
    fold_s: float
    summary_s: float
    index_s: float


def merge_summaries(into: ChangeSet, other: ChangeSet) -> None:
    """Add ``other``'s summary deltas to ``into`` (rows are not merged: they are written)."""
    for name in _SUMMED:
        target = getattr(into, name)
        for key, value in getattr(other, name).items():
            add_delta(target, key, value)
    for pipeline, at in other.pipeline_times.items():
        if into.pipeline_times.get(pipeline, at - 1) < at:
            into.pipeline_times[pipeline] = at
    for key, at in other.versions.items():
        if into.versions.get(key, at + 1) > at:
            into.versions[key] = at
    into.skipped += other.skipped


def _bounds(ranges: int) -> list[tuple[UUID | None, UUID | None]]:
    cuts = [UUID(int=(i << 128) // ranges) for i in range(1, ranges)]
    lows: list[UUID | None] = [None, *cuts]
    highs: list[UUID | None] = [*cuts, None]
    return list(zip(lows, highs, strict=True))


def _records(cursor: Any) -> Any:
    for deal, version, topic, state, position in cursor:
        type_ = DEAL_TOPICS.get(topic)
        if type_ is None:
            continue
        data = orjson.loads(state)
        yield EventRecord(
            type=type_,
            deal=deal,
            version=version,
            occurred_at=to_us(datetime.fromisoformat(data["occurred_at"])),
            position=position,
            pipeline_version=data.get("pipeline_version"),
            data=data,
        )


def _fold_ranges(
    url: str, table: str, ranges: list[tuple[UUID | None, UUID | None]], until: int
) -> tuple[ChangeSet, int, int]:
    """One worker: fold and write each range of deals; return the summed summary deltas."""
    total = ChangeSet()
    events = deals = 0
    topics = list(DEAL_TOPICS)
    with psycopg.connect(url) as conn:
        for low, high in ranges:
            where, params = ["notification_id <= %s", "topic = ANY(%s)"], [until, topics]
            if low is not None:
                where.append("originator_id >= %s")
                params.append(low)
            if high is not None:
                where.append("originator_id < %s")
                params.append(high)
            fold = DealFold({})
            with conn.cursor(name="rebuild_range") as cursor:
                cursor.itersize = 5000
                cursor.execute(
                    "SELECT originator_id, originator_version, topic, state, notification_id"
                    f" FROM {table} WHERE {' AND '.join(where)}"
                    " ORDER BY originator_id, originator_version",
                    params,
                )
                for record in _records(cursor):
                    fold.apply(record)
                    events += 1
            changes = fold.apply_all(())  # the summary of the deals' final state
            deals += len(changes.current)
            with conn.cursor() as curs:
                curs.execute("SET LOCAL synchronous_commit TO OFF")
                copy_new_rows(curs, changes)
            conn.commit()
            merge_summaries(total, changes)  # the rows are written: only the sums go on
    return total, events, deals


def _work(args: tuple[str, str, list[tuple[UUID | None, UUID | None]], int]) -> Any:
    return _fold_ranges(*args)


def supports(app: Any) -> bool:
    """Whether the parallel rebuild can read this application's log: PostgreSQL, and events
    stored as plain JSON (the workers decode it directly, without the application's mapper)."""
    mapper = app.mapper
    return bool(app.settings.database_url) and not (mapper.cipher or mapper.compressor)


def parallel_rebuild(
    app: Any,
    view: Any,
    *,
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
) -> RebuildStats:
    """Rebuild ``view`` (a PostgresDealsView) from the log up to its head with ``workers``
    processes. The projection must not be running meanwhile."""
    if not supports(app):
        raise ValueError("the parallel rebuild reads stored JSON: no cipher or compressor")
    url = str(app.settings.database_url)
    table = app.recorder.events_table_name
    until = app.max_position()
    ranges = _bounds(max(workers * 2, -(-until // RANGE_EVENTS)))
    started = time.perf_counter()
    view.reset(bulk=True)
    try:
        jobs = [(url, table, ranges[w::workers], until) for w in range(workers)]
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers) as pool:
            results = pool.map(_work, jobs)
        fold_s = time.perf_counter() - started
        total = ChangeSet()
        events = deals = 0
        for changes, n_events, n_deals in results:
            merge_summaries(total, changes)
            events += n_events
            deals += n_deals
        with view.datastore.transaction(commit=True) as curs:
            copy_summaries(curs, total)
            view._insert_tracking(curs, Tracking(view.tracking_name, until))
        summary_s = time.perf_counter() - started - fold_s
        if progress is not None:
            progress(until)
    except BaseException:
        view.reset()
        view.finish_rebuild()
        raise
    index_started = time.perf_counter()
    view.finish_rebuild()
    return RebuildStats(
        events=events,
        deals=deals,
        ranges=len(ranges),
        workers=workers,
        fold_s=round(fold_s, 3),
        summary_s=round(summary_s, 3),
        index_s=round(time.perf_counter() - index_started, 3),
    )
