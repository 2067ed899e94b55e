"""Plain SQL for dealflow's own tables (tokens, outbox, read models) on either backend.

Shares the event store's connection pool. Statements are written with ``%s`` placeholders and
rows come back as mappings (``row["column"]``) on both PostgreSQL and SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from eventsourcing.persistence import ApplicationRecorder
from eventsourcing.postgres import PostgresApplicationRecorder


class Cursor:
    """A thin cursor that speaks ``%s`` to both databases."""

    def __init__(self, raw: Any, dialect: str) -> None:
        self._raw = raw
        self.dialect = dialect

    def _sql(self, sql: str) -> str:
        return sql.replace("%s", "?") if self.dialect == "sqlite" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        self._raw.execute(self._sql(sql), tuple(params))
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Cursor:
        self._raw.executemany(self._sql(sql), [tuple(r) for r in rows])
        return self

    def fetchall(self) -> list[Any]:
        return list(self._raw.fetchall())

    def fetchone(self) -> Any:
        return self._raw.fetchone()

    @property
    def rowcount(self) -> int:
        # eventsourcing wraps sqlite3's cursor; the row count lives on the wrapped one.
        return int(getattr(self._raw, "sqlite_cursor", self._raw).rowcount)


class Database:
    def __init__(self, recorder: ApplicationRecorder) -> None:
        self.recorder = recorder
        self.dialect = "postgres" if isinstance(recorder, PostgresApplicationRecorder) else "sqlite"
        self.datastore = recorder.datastore  # type: ignore[attr-defined]
        self.events_table = recorder.events_table_name  # type: ignore[attr-defined]

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgres"

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A read-write transaction, committed when the block ends without an exception."""
        with self.datastore.transaction(commit=True) as raw:
            yield Cursor(raw, self.dialect)

    @contextmanager
    def reading(self) -> Iterator[Cursor]:
        """A read-only transaction (one consistent snapshot on PostgreSQL)."""
        with self.datastore.transaction(commit=False) as raw:
            yield Cursor(raw, self.dialect)

    def execute_script(self, statements: Sequence[str]) -> None:
        with self.transaction() as cur:
            for statement in statements:
                cur.execute(statement)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.reading() as cur:
            return cur.execute(sql, params).fetchall()

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self.reading() as cur:
            return cur.execute(sql, params).fetchone()
