"""eventsourcing's application recorders, extended so an event's idempotency key is stored in
the very transaction that stores the event.

The write path (``DealflowApp.ingest``) calls ``recorder.insert_events(stored_events,
idempotency=[IdempotencyRecord, ...])`` directly; both recorders write the records inside
``_insert_events``, which eventsourcing calls within the transaction that inserts the events.
A duplicate key therefore aborts the whole transaction (IntegrityError): there is never an
event without its key, nor a key without its event.

On PostgreSQL, batches of ``COPY_THRESHOLD`` events or more are written with binary ``COPY``
inside eventsourcing's table lock, with notification ids drawn after the lock is taken, so
readers tailing the log never skip a row. Both recorders also read many deals' events in one
query (``select_events_for_many``) and a batch's idempotency keys in one query.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor
from eventsourcing.utils import retry
from psycopg import Cursor, adapt, postgres, pq
from psycopg._copy_base import BinaryFormatter
from psycopg.rows import DictRow

IDEMPOTENCY_TABLE = "dealflow_idempotency"

# Batches at least this large are written with COPY; smaller ones take eventsourcing's own
# (pipelined) INSERT, which needs fewer round trips.
COPY_THRESHOLD = 64
# ... unless they carry more bytes than this. In pipeline mode psycopg sends every statement
# before reading any result; with megabytes in flight both sides' socket buffers fill and
# client and server wait on each other forever, holding the events table lock (a 6 MB event,
# or 40 events of 250 kB, stopped every writer). COPY streams rows without waiting on
# results, so it cannot deadlock at any size.
PIPELINE_MAX_BYTES = 64 * 1024


class CopyData(NamedTuple):
    """A batch's rows in PostgreSQL's binary COPY format (signature, rows, trailer)."""

    keys: bytes
    events: bytes


def copy_data(
    stored_events: Sequence[StoredEvent], records: Sequence[IdempotencyRecord]
) -> CopyData:
    """Format the keys and the events (without notification ids: the COPY draws them) with
    psycopg's own binary formatter, so that sending them is one write each."""
    return CopyData(
        keys=_binary_rows(("text", "text", "text", "int8"), records),
        events=_binary_rows(
            ("uuid", "int8", "text", "bytea"),
            [(e.originator_id, e.originator_version, e.topic, e.state) for e in stored_events],
        ),
    )


def _binary_rows(types: tuple[str, ...], rows: Sequence[Sequence[Any]]) -> bytes:
    # psycopg's formatter (C-accelerated) without a connection: the built-in types' dumpers
    # need none. It lives in a private module; psycopg is pinned below 4.
    transformer = adapt.Transformer()
    transformer.set_dumper_types([postgres.types[name].oid for name in types], pq.Format.BINARY)
    formatter = BinaryFormatter(transformer)
    chunks = [formatter.write_row(row) for row in rows]
    chunks.append(formatter.end())
    return b"".join(chunks)


class IdempotencyRecord(NamedTuple):
    event_id: str
    request_hash: str
    deal_id: str
    version: int


POSTGRES_IDEMPOTENCY_DDL = (
    f"CREATE TABLE IF NOT EXISTS {IDEMPOTENCY_TABLE} ("
    " event_id text PRIMARY KEY,"
    " request_hash text NOT NULL,"
    " deal_id text NOT NULL,"
    " version bigint NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT now())"
)
SQLITE_IDEMPOTENCY_DDL = (
    f"CREATE TABLE IF NOT EXISTS {IDEMPOTENCY_TABLE} ("
    " event_id TEXT PRIMARY KEY,"
    " request_hash TEXT NOT NULL,"
    " deal_id TEXT NOT NULL,"
    " version INTEGER NOT NULL,"
    " created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
)


class DealflowPostgresRecorder(PostgresApplicationRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from psycopg.sql import SQL

        self.sql_create_statements.append(SQL(POSTGRES_IDEMPOTENCY_DDL))  # type: ignore[arg-type]

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if not self._takes_copy(stored_events):
            kwargs.pop("copy_data", None)
            return self._pipeline_events(stored_events, **kwargs)
        return self._copy_events(stored_events, **kwargs)

    def _pipeline_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Any:
        """eventsourcing's pipelined INSERT, raising the statement that failed.

        eventsourcing's own version loses it when the failure's result arrives before its
        ``pipeline.sync()`` (a busy client reads it while sending the INSERT): the block then
        ends without a sync, the pipeline's exit reports the skipped statements as
        ``PipelineAborted`` (an OperationalError), and a duplicate key became ten retries and a
        503 instead of the IntegrityError that tells the write path to decide again.
        """
        if self.datastore.enable_db_functions:
            return super().insert_events(stored_events, **kwargs)
        failure: psycopg.Error | None = None
        ids: Sequence[int] | None = None
        with self.datastore.get_connection() as conn:
            try:
                with conn.pipeline() as pipeline, conn.transaction():
                    try:
                        with conn.cursor() as curs:
                            self._insert_events(curs, stored_events, **kwargs)
                        # A cursor of its own for the executemany(), as eventsourcing does.
                        with conn.cursor() as curs:
                            self._insert_stored_events(curs, stored_events, **kwargs)
                            pipeline.sync()
                            ids = self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
                    except psycopg.Error as error:
                        failure = error  # kept: what follows it only reports being skipped
            except psycopg.errors.PipelineAborted:
                if failure is None:
                    raise
            if failure is not None:
                # The pool must not get this connection back: psycopg counts statements of the
                # aborted pipeline as prepared although their PREPARE was skipped, and a later
                # use failed with 'prepared statement "_pg3_5" does not exist' (a 500, seen
                # under load with concurrent resends). A closed connection is dropped by the
                # pool; the next request opens a fresh one. Failures here are conflicts: rare.
                conn.close()
                raise failure
        return ids

    def prepare_copy(
        self, stored_events: Sequence[StoredEvent], records: Sequence[IdempotencyRecord]
    ) -> CopyData | None:
        """The COPY data :meth:`insert_events` would send for this batch, built ahead (a
        writer thread then only sends bytes); None when the batch takes the INSERT path."""
        if not self._takes_copy(stored_events):
            return None
        return copy_data(stored_events, records)

    def _takes_copy(self, stored_events: Sequence[StoredEvent]) -> bool:
        small = sum(len(e.state) for e in stored_events) <= PIPELINE_MAX_BYTES
        return not (len(stored_events) < COPY_THRESHOLD and small)

    def _copy_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> list[int]:
        """The batch fast path: one transaction, binary COPY instead of an INSERT of composites.

        Ordering guarantee kept from eventsourcing: the table lock is taken first, and only then
        are notification ids drawn from the sequence, so ids increase in commit order and a
        reader tailing the log never skips a row that commits later with a lower id. They are
        drawn by the COPY itself (the column's default, row by row in order): every writer
        draws ids only while holding the lock, so a batch's ids are one block ending at the
        sequence's current value.
        """
        table = f"{self.datastore.schema}.{self.events_table_name}"
        records: Sequence[IdempotencyRecord] = kwargs.get("idempotency") or ()
        data: CopyData = kwargs.get("copy_data") or copy_data(stored_events, records)
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            if records:
                with curs.copy(
                    f"COPY {IDEMPOTENCY_TABLE} (event_id, request_hash, deal_id, version)"
                    " FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.write(data.keys)
            self._lock_table(curs)
            with curs.copy(
                f"COPY {table} (originator_id, originator_version, topic, state)"
                " FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(data.events)
            curs.execute(
                "SELECT currval(pg_get_serial_sequence(%s, 'notification_id')) AS last", (table,)
            )
            row = curs.fetchone()
            assert row is not None
            last = int(row["last"])
            self._notify_channel(curs)
        return list(range(last - len(stored_events) + 1, last + 1))

    def _insert_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> None:
        records: Sequence[IdempotencyRecord] = kwargs.get("idempotency") or ()
        if records:
            curs.execute(
                f"INSERT INTO {IDEMPOTENCY_TABLE} (event_id, request_hash, deal_id, version)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[])",
                (
                    [r.event_id for r in records],
                    [r.request_hash for r in records],
                    [r.deal_id for r in records],
                    [r.version for r in records],
                ),
            )

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_idempotency(self, event_ids: Sequence[str]) -> list[IdempotencyRecord]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                f"SELECT event_id, request_hash, deal_id, version FROM {IDEMPOTENCY_TABLE}"
                " WHERE event_id = ANY(%s::text[])",
                (list(event_ids),),
            )
            return [
                IdempotencyRecord(r["event_id"], r["request_hash"], r["deal_id"], int(r["version"]))
                for r in curs.fetchall()
            ]

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_events_for_many(
        self, originator_ids: Sequence[UUID], gt: dict[UUID, int] | None = None
    ) -> list[StoredEvent]:
        """Events of many aggregates in one query (the batch path loads every deal at once)."""
        if not originator_ids:
            return []
        floors = gt or {}
        table = f"{self.datastore.schema}.{self.events_table_name}"
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            # One primary-key range per deal (a nested loop), whatever the statistics say: as a
            # plain join, a table not analyzed yet was hash-joined by a scan of every event
            # (530 ms for a board's 100 deals among 4.75M events). OFFSET 0 keeps the planner
            # from flattening the per-deal subquery back into that join.
            curs.execute(
                "SELECT e.originator_id, e.originator_version, e.topic, e.state"
                " FROM unnest(%s::uuid[], %s::bigint[]) AS w(id, floor) CROSS JOIN LATERAL"
                f" (SELECT x.originator_id, x.originator_version, x.topic, x.state FROM {table} x"
                "  WHERE x.originator_id = w.id AND x.originator_version > w.floor OFFSET 0) e"
                " ORDER BY e.originator_id, e.originator_version",
                (list(originator_ids), [floors.get(i, 0) for i in originator_ids]),
            )
            return [
                StoredEvent(
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
                for row in curs.fetchall()
            ]


class DealflowSQLiteRecorder(SQLiteApplicationRecorder):
    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), SQLITE_IDEMPOTENCY_DDL]

    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> Sequence[int] | None:
        records: Sequence[IdempotencyRecord] = kwargs.get("idempotency") or ()
        if records:
            c.executemany(
                f"INSERT INTO {IDEMPOTENCY_TABLE} (event_id, request_hash, deal_id, version)"
                " VALUES (?, ?, ?, ?)",
                [tuple(r) for r in records],
            )
        return super()._insert_events(c, stored_events, **kwargs)

    def select_idempotency(self, event_ids: Sequence[str]) -> list[IdempotencyRecord]:
        found: list[IdempotencyRecord] = []
        with self.datastore.transaction(commit=False) as c:
            for start in range(0, len(event_ids), 900):
                chunk = event_ids[start : start + 900]
                marks = ",".join("?" for _ in chunk)
                c.execute(
                    f"SELECT event_id, request_hash, deal_id, version FROM {IDEMPOTENCY_TABLE}"
                    f" WHERE event_id IN ({marks})",
                    list(chunk),
                )
                found.extend(IdempotencyRecord(r[0], r[1], r[2], int(r[3])) for r in c.fetchall())
        return found

    def select_events_for_many(
        self, originator_ids: Sequence[UUID], gt: dict[UUID, int] | None = None
    ) -> list[StoredEvent]:
        if not originator_ids:
            return []
        floors = gt or {}
        events: list[StoredEvent] = []
        with self.datastore.transaction(commit=False) as c:
            for start in range(0, len(originator_ids), 500):
                chunk = originator_ids[start : start + 500]
                marks = ",".join("?" for _ in chunk)
                c.execute(
                    f"SELECT originator_id, originator_version, topic, state FROM {self.events_table_name}"
                    f" WHERE originator_id IN ({marks}) ORDER BY originator_id, originator_version",
                    [i.hex for i in chunk],
                )
                for row in c.fetchall():
                    oid = UUID(row[0])
                    if row[1] > floors.get(oid, 0):
                        events.append(StoredEvent(oid, row[1], row[2], bytes(row[3])))
        return events
