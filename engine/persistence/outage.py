"""Failing fast while the database is unreachable.

Without this, every request during an outage waits for the pool's connect timeout, and
eventsourcing's recorders retry that ten times: a write or ``/readyz`` hung for 60-100 s.
The gate remembers that the store is down; while it is, callers fail at once with
:class:`StoreUnavailable` (answered as 503 ``store_unavailable`` with ``Retry-After``). It is
not an ``OperationalError`` on purpose: eventsourcing's retry loops would wait on it. At most
once per ``probe_every`` seconds a caller first tries a direct connection (a refusal takes
milliseconds, unlike a wait on the pool); when that succeeds the store is back.

Only failures of the connection count: a statement timeout, a lock timeout or a constraint
violation says nothing about whether the server is up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError, PersistenceError

# SQLSTATE classes that mean "this connection or server is gone": 08 connection exception,
# 57P01-57P05 operator intervention (admin/crash shutdown, cannot connect now, idle timeouts).
_CONNECTION_STATES = ("08", "57P")


def is_connection_failure(error: BaseException) -> bool:
    """True when ``error`` means the server could not be reached or dropped the connection."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, psycopg.errors.PipelineAborted):
            # An earlier statement of the pipeline failed (e.g. a duplicate key): not an outage.
            return False
        if isinstance(cause, (psycopg.OperationalError, psycopg.InterfaceError)):
            state = cause.sqlstate
            # No SQLSTATE: a client-side failure (refused, reset, pool timeout).
            return state is None or state.startswith(_CONNECTION_STATES)
        if isinstance(cause, psycopg.Error):
            return False
        cause = cause.__cause__
    return isinstance(error, (OperationalError, InterfaceError))


class StoreUnavailable(PersistenceError):
    """The store is known to be unreachable right now; nothing was tried or recorded."""


class StoreGate:
    """Whether the store is believed reachable, shared by every user of one connection pool."""

    def __init__(self, probe: Callable[[], None], probe_every: float = 1.0) -> None:
        self.probe = probe
        self.probe_every = probe_every
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._next_probe = 0.0
        self.last_error = ""
        self.outages = 0

    @property
    def down_for(self) -> float | None:
        """Seconds since the store was found unreachable, or None while it is reachable."""
        since = self._down_since
        return None if since is None else time.monotonic() - since

    def admit(self) -> None:
        """Raise at once while the store is down, unless a probe (one per ``probe_every``)
        finds it back."""
        with self._lock:
            if self._down_since is None:
                return
            now = time.monotonic()
            may_probe = now >= self._next_probe
            if may_probe:
                self._next_probe = now + self.probe_every
            down_for = now - self._down_since
        if may_probe:
            try:
                self.probe()
            except Exception as error:  # noqa: BLE001 - any failure to connect: still down
                self.failed(error)
            else:
                self.succeeded()
                return
        raise StoreUnavailable(
            f"the store has been unreachable for {down_for:.0f} s ({self.last_error})"
        )

    def failed(self, error: BaseException) -> None:
        with self._lock:
            if self._down_since is None:
                self._down_since = time.monotonic()
                self._next_probe = self._down_since + self.probe_every
                self.outages += 1
            self.last_error = str(error).strip().splitlines()[0][:200] if str(error) else ""

    def succeeded(self) -> None:
        if self._down_since is not None:
            with self._lock:
                self._down_since = None

    def _pool_merely_busy(self, error: BaseException) -> bool:
        """A wait for a pooled connection timed out: the server may be down, or every
        connection may just be in use. Only a failed direct connection says it is down."""
        if not _is_pool_timeout(error):
            return False
        try:
            self.probe()
        except Exception:  # noqa: BLE001 - cannot connect: really down
            return False
        return True

    def guard(
        self, get_connection: Callable[[], AbstractContextManager[Any]]
    ) -> Callable[[], AbstractContextManager[Any]]:
        """Wrap a datastore's ``get_connection`` so that it fails fast and keeps the gate."""

        @contextmanager
        def guarded() -> Iterator[Any]:
            self.admit()
            try:
                with get_connection() as conn:
                    self.succeeded()
                    yield conn
            except Exception as error:
                if is_connection_failure(error) and not self._pool_merely_busy(error):
                    self.failed(error)
                raise

        return guarded


def _is_pool_timeout(error: BaseException) -> bool:
    from psycopg_pool import PoolTimeout

    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, PoolTimeout):
            return True
        cause = cause.__cause__
    return False


def gate_of(datastore: Any) -> StoreGate | None:
    """The gate installed on a datastore (PostgreSQL only), if any."""
    gate = getattr(datastore, "dealflow_gate", None)
    return gate if isinstance(gate, StoreGate) else None
