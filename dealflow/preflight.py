"""Mistakes an operator makes get one clear line, not a traceback.

Before a command builds its services it checks what it is about to use: the store
(``DATABASE_URL``), the port it will listen on, the Temporal server (``TEMPORAL_ADDRESS``). Each
check raises :class:`SetupError` with what is wrong and what to do; ``dealflow`` prints it and
exits with code 2.
"""

from __future__ import annotations

import errno
import socket
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import ValidationError

from engine.persistence.settings import StoreSettings
from engine.settings import Settings

CONNECT_TIMEOUT_S = 5


class SetupError(Exception):
    """A configuration mistake: the message says what is wrong and what to do."""


def describe_store(settings: StoreSettings) -> str:
    """Which store a process uses, without the password."""
    if not settings.is_postgres:
        return f"embedded SQLite at {settings.sqlite_path}"
    parts = urlsplit(str(settings.database_url))
    host = parts.hostname or "localhost"
    port = parts.port or 5432
    return f"PostgreSQL database {parts.path.lstrip('/') or '(default)'!r} at {host}:{port}"


def check_settings() -> None:
    """Every setting in the environment has a valid value (engine.settings.Settings)."""
    try:
        Settings.load()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()
        )
        raise SetupError(f"invalid setting: {problems}") from error


def check_store(settings: StoreSettings) -> None:
    """The store in ``DATABASE_URL`` answers (SQLite needs nothing: its directory is made)."""
    if not settings.is_postgres:
        return
    url = str(settings.database_url)
    if "://" in url and not url.startswith(("postgresql://", "postgres://")):
        raise SetupError(
            "DATABASE_URL must be a postgresql:// URL "
            "(unset it to use the embedded SQLite store under DEALFLOW_HOME)"
        )
    try:
        params = conninfo_to_dict(url)
        port = int(params.get("port") or 5432)
    except (psycopg.ProgrammingError, ValueError) as error:
        raise SetupError(
            f"DATABASE_URL is malformed ({_first_line(error)}); "
            "expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
        ) from error
    host = params.get("host") or "localhost"
    database = params.get("dbname") or params.get("user") or "?"
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as error:
        text = str(error)
        if "does not exist" in text and "database" in text:
            raise SetupError(
                f"database {database!r} does not exist on {host}:{port}; create it "
                f"(createdb -h {host} -p {port} {database}) or point DATABASE_URL at an existing one"
            ) from error
        raise SetupError(unreachable_store(settings, error)) from error


def unreachable_store(settings: StoreSettings, error: BaseException, when: str = "") -> str:
    """One line for a PostgreSQL that cannot be reached: what is wrong and what to do.

    Used by the preflight, and for the store going away later while a process is still
    starting (after the preflight passed): the operator's next step is the same."""
    address = "the address in DATABASE_URL"
    if settings.is_postgres:
        try:
            params = conninfo_to_dict(str(settings.database_url))
            address = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
        except (psycopg.ProgrammingError, ValueError):
            pass
    texts = _cause_texts(error)
    lowered = " ".join(texts).lower()
    prefix = f"PostgreSQL became unreachable {when}: " if when else ""
    for state, said in (
        ("starting up", "is starting up"),
        ("shutting down", "is shutting down"),
        ("recovery mode", "is in recovery"),
        ("not yet accepting connections", "is still starting (not yet accepting connections)"),
        ("not accepting connections", "does not accept connections (a standby?)"),
    ):
        if state in lowered:
            return (
                f"{prefix}PostgreSQL at {address} {said}; start again once it accepts "
                "connections (a supervisor restarting this process will do)"
            )
    if "refused" in lowered or "no such file" in lowered:
        return (
            f"{prefix}nothing accepts connections at {address} (DATABASE_URL); start PostgreSQL "
            "there or fix DATABASE_URL"
        )
    if "timeout" in lowered or "timed out" in lowered:
        return (
            f"{prefix}PostgreSQL at {address} did not answer "
            f"{'in time' if when else f'within {CONNECT_TIMEOUT_S} s'}; "
            "check the host, the network and DATABASE_URL"
        )
    detail = texts[-1].splitlines()[0] if texts else type(error).__name__
    return f"{prefix}cannot connect to PostgreSQL at {address}: {detail}"


def _cause_texts(error: BaseException) -> list[str]:
    """The texts of ``error`` and its causes, outermost first: eventsourcing and the outage
    gate wrap psycopg's error, whose text names the actual problem."""
    texts: list[str] = []
    cause: BaseException | None = error
    while cause is not None and len(texts) < 10:
        if str(cause).strip():
            texts.append(str(cause).strip())
        cause = cause.__cause__ or cause.__context__
    return texts


def check_port(host: str, port: int, command: str) -> None:
    """Nothing else listens on ``host:port`` (a clear line instead of uvicorn's traceback)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise SetupError(
                    f"port {port} on {host} is already in use; stop what listens there or "
                    f"pass another port, e.g. `dealflow {command} --port {port + 1}`"
                ) from error
            if error.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
                raise SetupError(f"cannot listen on {host}:{port}: {error.strerror}") from error
            raise


def check_temporal(address: str, explicit: bool = True) -> None:
    """Something accepts connections at ``TEMPORAL_ADDRESS`` (host:port)."""
    host, _, port_text = address.rpartition(":")
    where = "TEMPORAL_ADDRESS" if explicit else "the default Temporal address"
    if not host or not port_text.isdigit():
        raise SetupError(
            f"TEMPORAL_ADDRESS must be HOST:PORT, e.g. localhost:7233 (got {address!r})"
        )
    try:
        with socket.create_connection(
            (host.strip("[]"), int(port_text)), timeout=CONNECT_TIMEOUT_S
        ):
            return
    except OSError as error:
        raise SetupError(
            f"no Temporal server answers at {address} ({where}: {error.strerror or error}); "
            "start one (`temporal server start-dev`), fix TEMPORAL_ADDRESS, or run `dealflow dev`, "
            "which starts its own"
        ) from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
