"""eventsourcing's application recorders, extended so an event's idempotency key is stored in
the very transaction that stores the event.

``Application.save(..., idempotency=[IdempotencyRecord, ...])`` passes the records down here;
both recorders write them inside ``_insert_events``, which eventsourcing calls within the
transaction that inserts the stored events. A duplicate key therefore aborts the whole
transaction (IntegrityError) and there is never an event without its key or a key without
its event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor
from psycopg import Cursor
from psycopg.rows import DictRow

IDEMPOTENCY_TABLE = "dealflow_idempotency"


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

    def select_events_for_many(
        self, originator_ids: Sequence[UUID], gt: dict[UUID, int] | None = None
    ) -> list[StoredEvent]:
        """Events of many aggregates in one query (the batch path loads every deal at once)."""
        if not originator_ids:
            return []
        floors = gt or {}
        table = f"{self.datastore.schema}.{self.events_table_name}"
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                f"SELECT e.originator_id, e.originator_version, e.topic, e.state FROM {table} e"
                " JOIN unnest(%s::uuid[], %s::bigint[]) AS w(id, floor)"
                " ON e.originator_id = w.id AND e.originator_version > w.floor"
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
