"""A full rebuild of the read models on PostgreSQL: rows folded by deal in several processes,
summaries computed from the rows in SQL.

The fold of one deal depends only on that deal's own events. So a rebuild cuts the deals into
ranges of their ids and folds each range on its own, in any order and in any process:

- each range's events are read in (deal, version) order through the events table's primary key,
  so a deal arrives whole: its rows are final when written (plain binary COPY, no UPDATE of a
  row written earlier, no read of the rows already stored);
- a worker process folds ranges one after another, rows only (``DealFold(summaries=False)``),
  writing each range's rows in its own transaction and keeping only the range in memory
  (memory stays flat as the log grows: a range holds about ``RANGE_EVENTS`` events);
- every summary table is a sum over deals (the pipelines table a maximum, the versions table a
  minimum), so once the rows are in, PostgreSQL computes each one with a single
  ``INSERT ... SELECT ... GROUP BY`` over them (``bulk_sums.py``); those statements and the
  secondary indexes (dropped for the load) run on ``workers`` connections at once;
- the tracking record is written last. The result equals what the incremental runner builds,
  row for row (tested).

Only events up to the log position taken at the start are folded; the runner carries on from
there. If anything fails the read models are reset, so the runner rebuilds them the slow way.
"""

from __future__ import annotations

import gc
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
import psycopg
from eventsourcing.persistence import Tracking
from psycopg.adapt import Dumper, Loader
from psycopg.pq import Format

from projections.readmodel.bulk_sums import summary_jobs
from projections.readmodel.copying import copy_new_rows
from projections.readmodel.fold import DealFold
from projections.readmodel.records import DEAL_TOPICS, EventRecord, to_us
from projections.readmodel.schema import HISTORY_TABLE, STAYS_TABLE, secondary_indexes

RANGE_EVENTS = 40_000  # events per range of deal ids (what a worker holds at once)


def _size_order(index: str) -> int:
    """The indexes of the biggest table first (history, then stays, then current deals)."""
    return 0 if index.startswith(HISTORY_TABLE) else 1 if index.startswith(STAYS_TABLE) else 2


@dataclass
class RebuildStats:
    events: int
    deals: int
    ranges: int
    workers: int
    fold_s: float  # reading, folding and copying the rows (the worker processes)
    summary_s: float  # the summary tables and the secondary indexes (PostgreSQL)
    index_s: float  # what was left of the indexes afterwards (normally nothing)


def _bounds(ranges: int) -> list[tuple[UUID | None, UUID | None]]:
    cuts = [UUID(int=(i << 128) // ranges) for i in range(1, ranges)]
    lows: list[UUID | None] = [None, *cuts]
    highs: list[UUID | None] = [*cuts, None]
    return list(zip(lows, highs, strict=True))


def _records(cursor: Any, until: int) -> Any:
    for deal, version, topic, state, position in cursor:
        type_ = DEAL_TOPICS.get(topic)
        if type_ is None or position > until:
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


class _RawUUIDLoader(Loader):
    """A binary uuid as its 16 bytes (not a ``UUID``)."""

    format = Format.BINARY

    def load(self, data: Any) -> bytes:
        return bytes(data)


class _RawUUID:
    """Stands for the raw uuid bytes in the adapters map: a class of its own, so that ``bytes``
    keeps its bytea dumper."""


class _RawUUIDDumper(Dumper):
    """The 16 bytes of a uuid, written as they are (binary COPY looks dumpers up by type oid)."""

    format = Format.BINARY

    def dump(self, obj: Any) -> bytes:
        return obj  # type: ignore[no-any-return]


def _raw_uuids(conn: psycopg.Connection[Any]) -> None:
    """Deal ids as raw bytes on this connection, read and COPY. A ``UUID`` hashes and compares
    in Python, and the fold looks each event's deal up about five times (measured: 5.4 hashes
    an event); bytes hash in C and cache their hash. The fold only uses ids as keys."""
    dumper = type("RawUUIDDumper", (_RawUUIDDumper,), {"oid": conn.adapters.types["uuid"].oid})
    conn.adapters.register_loader("uuid", _RawUUIDLoader)
    conn.adapters.register_dumper(_RawUUID, dumper)


def _fold_ranges(
    url: str, table: str, ranges: list[tuple[UUID | None, UUID | None]], until: int
) -> tuple[int, int]:
    """One worker: fold and write the rows of each range of deals; (events, deals) folded."""
    # The cyclic collector off while folding: a range's rows are all alive until its COPY, so
    # every young collection (each 700 allocations) found nothing to free and promoted them,
    # and the older collections walked them again: 10.1 -> 6.9 us of worker CPU per event
    # (read, decode, fold; measured on a range of 39k events). What a range leaves is freed by
    # reference counting; a young collection after each range finds any cycle (memory flat).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _fold_ranges_uncollected(url, table, ranges, until)
    finally:
        if collecting:
            gc.enable()


def _fold_ranges_uncollected(
    url: str, table: str, ranges: list[tuple[UUID | None, UUID | None]], until: int
) -> tuple[int, int]:
    events = deals = 0
    with psycopg.connect(url) as conn:
        # The range's events in key order straight from the primary key: measured per range of
        # 39k events, 23 ms, against 120-180 ms for the bitmap scan + sort (spilling to disk)
        # the planner picks otherwise. So the position and topic filters are applied here
        # rather than in SQL (they made the planner AND in a scan of the whole position index).
        conn.execute("SET enable_bitmapscan TO off")
        conn.execute("SET enable_sort TO off")
        _raw_uuids(conn)
        for low, high in ranges:
            where, params = ["TRUE"], []
            if low is not None:
                where.append("originator_id >= %s")
                params.append(low)
            if high is not None:
                where.append("originator_id < %s")
                params.append(high)
            fold = DealFold({}, summaries=False)
            # Binary: the JSON arrives as raw bytes (no hex encoding and decoding of bytea).
            with conn.cursor(name="rebuild_range", binary=True) as cursor:
                cursor.itersize = 5000
                cursor.execute(
                    "SELECT originator_id, originator_version, topic, state, notification_id"
                    f" FROM {table} WHERE {' AND '.join(where)}"
                    " ORDER BY originator_id, originator_version",
                    params,
                )
                for record in _records(cursor, until):
                    fold.apply(record)
                    events += 1
            changes = fold.apply_all(())
            deals += len(changes.current)
            with conn.cursor() as curs:
                curs.execute("SET LOCAL synchronous_commit TO OFF")
                copy_new_rows(curs, changes)
            conn.commit()
            del fold, changes
            gc.collect(0)  # only what this range allocated and left alive: cheap
    return events, deals


def _work(args: tuple[str, str, list[tuple[UUID | None, UUID | None]], int]) -> Any:
    return _fold_ranges(*args)


def _run_statements(url: str, statements: list[str]) -> None:
    """One job of the set-based phase, in its own transaction."""
    with psycopg.connect(url) as conn:
        conn.execute("SET synchronous_commit TO OFF")
        conn.execute("SET maintenance_work_mem TO '256MB'")
        # The planner overestimates the groups of the grouping sets (7M for 78k at a million
        # events) and then sorts the history once per set, with text keys: 60 s against 20 s
        # hashed, under load. So each summary is planned with room for that estimate...
        conn.execute("SET work_mem TO '2GB'")
        # Compiling the expressions took seconds of a few-second statement (measured).
        conn.execute("SET jit TO off")
        for number, statement in enumerate(statements):
            if not statement.startswith("INSERT"):
                conn.execute(statement)  # type: ignore[arg-type]  # built from our own constants
                continue
            # ... but run with less: the executor sizes a hash table for the estimated groups
            # (164 MB for the 25k groups of half the business-time breakdown), and each row's
            # lookups then miss the caches all over it. A prepared plan keeps the hashed plan
            # made under 2GB; executed under 64MB the table fits the real groups (8 MB), and a
            # table that outgrows it spills to disk, still correct. The summaries took 10.0 / 9.7
            # s one after another, 8.4 / 8.2 s this way (a million events, alternating).
            name = f"summary_{number}"
            conn.execute(f"PREPARE {name} AS {statement}")  # type: ignore[arg-type]
            conn.execute(f"EXPLAIN EXECUTE {name}")  # type: ignore[arg-type]  # plans it
            conn.execute("SET work_mem TO '64MB'")
            conn.execute(f"EXECUTE {name}")  # type: ignore[arg-type]
            conn.execute("SET work_mem TO '2GB'")
            conn.execute(f"DEALLOCATE {name}")  # type: ignore[arg-type]


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
    if workers < 1:
        raise ValueError(f"the parallel rebuild needs at least one worker, not {workers}")
    url = str(app.settings.database_url)
    table = app.recorder.events_table_name
    until = app.max_position()
    ranges = _bounds(max(workers * 2, -(-until // RANGE_EVENTS)))
    started = time.perf_counter()
    view.reset(bulk=True)
    try:
        jobs = [(url, table, ranges[w::workers], until) for w in range(workers)]
        if workers == 1:  # one worker: this process (no child to spawn; the tests use it)
            results = [_work(jobs[0])]
        else:
            context = multiprocessing.get_context("spawn")
            with context.Pool(workers) as pool:
                results = pool.map(_work, jobs)
        events = sum(n for n, _ in results)
        deals = sum(d for _, d in results)
        fold_s = time.perf_counter() - started
        # The summaries and the indexes only read the row tables: all at once, the biggest
        # jobs first so that the small ones fill the gaps.
        summaries = summary_jobs()
        indexes = sorted(secondary_indexes(view.ddl), key=lambda i: _size_order(i[0]))
        set_jobs = [*summaries[:-1], *([s] for _, s in indexes)]
        set_jobs.append(summaries[-1])  # the current tables' sums: the smallest
        with ThreadPoolExecutor(max(1, workers)) as threads:
            for done in [threads.submit(_run_statements, url, job) for job in set_jobs]:
                done.result()
        summary_s = time.perf_counter() - started - fold_s
        with view.datastore.transaction(commit=True) as curs:
            view._insert_tracking(curs, Tracking(view.tracking_name, until))
        if progress is not None:
            progress(until)
    except BaseException:
        view.reset()
        view.finish_rebuild()
        raise
    index_started = time.perf_counter()
    view.finish_rebuild()  # a no-op: every index was built above (kept as the safety net)
    return RebuildStats(
        events=events,
        deals=deals,
        ranges=len(ranges),
        workers=workers,
        fold_s=round(fold_s, 3),
        summary_s=round(summary_s, 3),
        index_s=round(time.perf_counter() - index_started, 3),
    )
