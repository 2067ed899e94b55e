"""The outage gate: which failures mean "the store is down", and failing fast meanwhile."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, OperationalError

from engine.persistence.outage import StoreGate, StoreUnavailable, is_connection_failure


def _wrapped(inner: Exception) -> OperationalError:
    """As eventsourcing raises it: its own class, the psycopg error as the cause."""
    try:
        raise OperationalError(str(inner)) from inner
    except OperationalError as error:
        return error


def test_connection_failures_are_told_from_statement_failures() -> None:
    assert is_connection_failure(_wrapped(psycopg.OperationalError("connection refused")))
    assert is_connection_failure(_wrapped(psycopg.errors.AdminShutdown("terminating")))
    assert not is_connection_failure(_wrapped(psycopg.errors.QueryCanceled("timeout")))
    assert not is_connection_failure(_wrapped(psycopg.errors.LockNotAvailable("lock")))
    assert not is_connection_failure(_wrapped(psycopg.errors.PipelineAborted("aborted")))
    assert not is_connection_failure(IntegrityError("duplicate key"))


def test_the_gate_fails_fast_while_down_and_probes_its_way_back() -> None:
    reachable = {"now": False}
    probes: list[float] = []

    def probe() -> None:
        probes.append(time.monotonic())
        if not reachable["now"]:
            raise psycopg.OperationalError("refused")

    gate = StoreGate(probe, probe_every=0.2)
    calls = {"n": 0}

    @contextmanager
    def connect() -> Iterator[str]:
        calls["n"] += 1
        if not reachable["now"]:
            raise _wrapped(psycopg.OperationalError("refused"))
        yield "conn"

    guarded = gate.guard(connect)
    with pytest.raises(OperationalError), guarded():
        pass
    assert gate.down_for is not None
    started = time.monotonic()
    for _ in range(50):
        with pytest.raises(StoreUnavailable), guarded():
            pass
    assert time.monotonic() - started < 0.5  # no waiting on the pool while down
    assert calls["n"] == 1  # nobody went to the pool again
    reachable["now"] = True
    time.sleep(0.25)
    with guarded() as conn:
        assert conn == "conn"
    assert gate.down_for is None and gate.outages == 1 and probes


def test_a_busy_pool_is_not_an_outage() -> None:
    from psycopg_pool import PoolTimeout

    gate = StoreGate(lambda: None, probe_every=10)

    @contextmanager
    def exhausted() -> Iterator[str]:
        try:
            raise PoolTimeout("couldn't get a connection after 2.00 sec")
        except PoolTimeout as cause:
            raise OperationalError(str(cause)) from cause
        yield "never"

    with pytest.raises(OperationalError), gate.guard(exhausted)():
        pass
    assert gate.down_for is None  # the direct probe connected: the server is up
