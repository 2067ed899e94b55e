"""Where dealflow keeps its data: PostgreSQL when DATABASE_URL is set, else SQLite files.

Translates dealflow's environment (DATABASE_URL, DEALFLOW_HOME) into eventsourcing's
(PERSISTENCE_MODULE, POSTGRES_*, SQLITE_DBNAME) for one application.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from eventsourcing.utils import get_topic

from engine.settings import Settings


@dataclass(frozen=True)
class StoreSettings:
    database_url: str | None
    home: Path
    # PostgreSQL connections per process (the API runs handlers in threads).
    pool_size: int = 4
    max_overflow: int = 8
    # Outage handling (seconds): how long to wait for a pooled connection, the longest a
    # statement may run (0 = no limit), and how long a session may sit idle inside a
    # transaction before the server ends it (and releases the events table lock).
    connect_timeout: int = 2
    statement_timeout: float = 60.0
    idle_in_transaction_timeout: int = 60

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> StoreSettings:
        settings = Settings.load(environ)
        return cls(
            database_url=settings.database_url,
            home=settings.home,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            connect_timeout=settings.db_connect_timeout,
            statement_timeout=settings.db_statement_timeout,
            idle_in_transaction_timeout=settings.db_idle_in_transaction_timeout,
        )

    @property
    def is_postgres(self) -> bool:
        return bool(self.database_url)

    @property
    def backend(self) -> str:
        return "postgres" if self.is_postgres else "sqlite"

    @property
    def sqlite_path(self) -> Path:
        return self.home / "dealflow.sqlite3"

    def eventsourcing_env(self) -> dict[str, str]:
        from engine.persistence import pgfactory
        from engine.persistence.mapper import PydanticMapper
        from engine.persistence.recorders import (
            DealflowPostgresRecorder,
            DealflowSQLiteRecorder,
        )

        env = {"MAPPER_TOPIC": get_topic(PydanticMapper)}
        if self.is_postgres:
            url = urlparse(str(self.database_url))
            env.update(
                PERSISTENCE_MODULE=get_topic(pgfactory.DealflowPostgresFactory),
                APPLICATION_RECORDER_TOPIC=get_topic(DealflowPostgresRecorder),
                POSTGRES_DBNAME=(url.path or "/postgres").lstrip("/") or "postgres",
                POSTGRES_HOST=url.hostname or "127.0.0.1",
                POSTGRES_PORT=str(url.port or 5432),
                POSTGRES_USER=unquote(url.username or "postgres"),
                POSTGRES_PASSWORD=unquote(url.password or ""),
                POSTGRES_POOL_SIZE=str(self.pool_size),
                POSTGRES_MAX_OVERFLOW=str(self.max_overflow),
                # The wait for a pooled connection; an outage fails within this (outage.py).
                POSTGRES_CONNECT_TIMEOUT=str(self.connect_timeout),
                POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT=str(self.idle_in_transaction_timeout),
                **{
                    pgfactory.STATEMENT_TIMEOUT: str(self.statement_timeout),
                    pgfactory.SOCKET_CONNECT_TIMEOUT: str(max(2, self.connect_timeout)),
                },
                POSTGRES_LOCK_TIMEOUT="10",
                # Check a pooled connection before handing it out: after a server restart or
                # failover the pool would otherwise serve dead connections.
                POSTGRES_PRE_PING="y",
            )
        else:
            self.home.mkdir(parents=True, exist_ok=True)
            env.update(
                PERSISTENCE_MODULE="eventsourcing.sqlite",
                APPLICATION_RECORDER_TOPIC=get_topic(DealflowSQLiteRecorder),
                SQLITE_DBNAME=str(self.sqlite_path),
                SQLITE_LOCK_TIMEOUT="30",
            )
        return env


@contextmanager
def schema_lock(settings: StoreSettings) -> Iterator[None]:
    """Serialise table creation across processes starting at once on one PostgreSQL database.

    ``CREATE ... IF NOT EXISTS`` is not safe against itself running concurrently (catalog
    races: "tuple concurrently updated"); replicas that start together take turns here.
    """
    if not settings.is_postgres:
        yield
        return
    import psycopg

    with psycopg.connect(str(settings.database_url), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))


# An arbitrary constant: "dealflow" spelt on a phone keypad.
SCHEMA_LOCK_KEY = 33253569
