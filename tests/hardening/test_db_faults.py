"""Database faults while ingesting: connections killed, the events table locked, SQLite busy.

Whatever happens, a batch is recorded fully or answered with an error, never partly; every
event the API answered "recorded" is in the store; resending a failed batch with the same
event_ids completes it with no duplicates (exactly-once by event_id). Timings and outcomes are
printed (run with ``-s``) so the lead can see what the app actually does.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine.persistence.settings import StoreSettings
from engine.services import Services
from tests.hardening.conftest import AUTH, TestClient, live_client

DEALS = [f"fault-{i}" for i in range(8)]


def _open_deals(client: TestClient) -> None:
    response = client.post(
        "/v1/events",
        json={
            "events": [
                {
                    "deal_id": d,
                    "type": "opened",
                    "event_id": f"open-{d}",
                    "pipeline_id": "default",
                    "name": d,
                }
                for d in DEALS
            ]
        },
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    assert {r["status"] for r in response.json()["results"]} == {"recorded"}


def _batch(n: int, size: int) -> list[dict[str, Any]]:
    """``size`` activities spread over the deals; 100-event batches take the COPY path."""
    return [
        {
            "deal_id": DEALS[i % len(DEALS)],
            "type": "activity_logged",
            "event_id": f"b{n}-e{i}",
            "activity": "call",
        }
        for i in range(size)
    ]


def _post(client: TestClient, events: list[dict[str, Any]]) -> tuple[int | None, Any]:
    try:
        response = client.post("/v1/events", json={"events": events}, headers=AUTH)
    except Exception as error:  # noqa: BLE001 - a transport-level failure is an error answer too
        return None, repr(error)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text


def _stored_event_ids(services: Services) -> collections.Counter[str]:
    """Every deal event in the store, by event_id (a Counter: >1 means a duplicate)."""
    found: collections.Counter[str] = collections.Counter()
    for deal in DEALS:
        for event in services.app.history(deal)["events"]:
            found[event["event_id"]] += 1
    return found


def _check_exactly_once(
    client: TestClient, services: Services, sent: list[tuple[list[dict[str, Any]], int | None, Any]]
) -> dict[str, Any]:
    """The invariants, then resend every batch that failed and check again."""
    stored = _stored_event_ids(services)
    failed = []
    for events, status, body in sent:
        ids = [e["event_id"] for e in events]
        present = [i for i in ids if stored[i]]
        if status == 200:
            statuses = {r["status"] for r in body["results"]}
            assert statuses <= {"recorded", "duplicate"}, body
            assert len(present) == len(ids), "answered recorded but missing from the store"
        else:
            assert present in ([], ids), f"batch partly recorded: {len(present)}/{len(ids)}"
            failed.append(events)
    for events in failed:
        status, body = _post(client, events)
        assert status == 200, body
        assert {r["status"] for r in body["results"]} <= {"recorded", "duplicate"}, body
    stored = _stored_event_ids(services)
    every = [e["event_id"] for events, _, _ in sent for e in events]
    assert all(stored[i] == 1 for i in every), [i for i in every if stored[i] != 1][:10]
    assert sum(stored.values()) == len(every) + len(DEALS), "events nobody sent are in the store"
    return {"batches": len(sent), "failed_then_resent": len(failed)}


def _terminate_others(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


@pytest.mark.postgres
@pytest.mark.slow
def test_killed_connections_never_leave_a_partial_batch(pg_url: str, tmp_path: Path) -> None:
    with live_client(StoreSettings(database_url=pg_url, home=tmp_path)) as (client, services):
        _open_deals(client)
        sent: list[tuple[list[dict[str, Any]], int | None, Any]] = []
        stop = threading.Event()
        took: list[float] = []

        def sender() -> None:
            n = 0
            while not stop.is_set():
                events = _batch(n, 100 if n % 2 else 20)
                started = time.monotonic()
                sent.append((events, *_post(client, events)))
                took.append(round(time.monotonic() - started, 2))
                n += 1

        thread = threading.Thread(target=sender)
        thread.start()
        killed = 0
        try:
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                time.sleep(0.03)
                killed += _terminate_others(pg_url)
        finally:
            stop.set()
            thread.join(30)
        assert not thread.is_alive()
        answers = [status for _, status, _ in sent]
        errors = [str(body)[:200] for _, status, body in sent if status != 200]
        print(f"\nkilled {killed} backends; answers {answers}, took {took} s; errors {errors}")
        report = _check_exactly_once(client, services, sent)
        print(report)
        assert sent and killed > 0


@pytest.mark.postgres
@pytest.mark.slow
def test_events_table_locked_by_another_connection(pg_url: str, tmp_path: Path) -> None:
    """ACCESS EXCLUSIVE on dealflow_events for 2 s: the ingest waits (or fails cleanly)."""
    with live_client(StoreSettings(database_url=pg_url, home=tmp_path)) as (client, services):
        _open_deals(client)
        sent: list[tuple[list[dict[str, Any]], int | None, Any]] = []
        timings: list[float] = []
        locked = threading.Event()

        def holder() -> None:
            with psycopg.connect(pg_url) as conn:
                conn.execute("LOCK TABLE dealflow_events IN ACCESS EXCLUSIVE MODE")
                locked.set()
                time.sleep(2)
                conn.rollback()

        lock_thread = threading.Thread(target=holder)
        lock_thread.start()
        assert locked.wait(10)

        def send(n: int, size: int) -> None:
            events = _batch(n, size)
            started = time.monotonic()
            sent.append((events, *_post(client, events)))
            timings.append(time.monotonic() - started)

        senders = [threading.Thread(target=send, args=(n, size)) for n, size in ((0, 20), (1, 100))]
        for thread in senders:
            thread.start()
        for thread in [*senders, lock_thread]:
            thread.join(60)
        report = _check_exactly_once(client, services, sent)
        answers = [status for _, status, _ in sent]
        print(
            f"\nlocked 2 s: answers {answers}, waited {[round(t, 2) for t in timings]} s; {report}"
        )
        assert all(t < 15 for t in timings)


SQLITE_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


@pytest.mark.slow
def test_sqlite_write_lock_held_by_another_process(sqlite_settings: StoreSettings) -> None:
    """Another process holds BEGIN IMMEDIATE for 2 s: the ingest waits (or fails cleanly)."""
    with live_client(sqlite_settings) as (client, services):
        _open_deals(client)
        holder = subprocess.Popen(
            [sys.executable, "-c", SQLITE_HOLDER, str(sqlite_settings.sqlite_path), "2"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            sent = []
            timings = []
            for n, size in ((0, 20), (1, 100)):
                events = _batch(n, size)
                started = time.monotonic()
                sent.append((events, *_post(client, events)))
                timings.append(time.monotonic() - started)
        finally:
            holder.wait(30)
        report = _check_exactly_once(client, services, sent)
        answers = [status for _, status, _ in sent]
        print(
            f"\nsqlite locked 2 s: answers {answers}, waited {[round(t, 2) for t in timings]} s; {report}"
        )
        assert all(t < 15 for t in timings)


@pytest.mark.postgres
def test_requests_after_the_server_dropped_idle_connections(pg_url: str, tmp_path: Path) -> None:
    with live_client(StoreSettings(database_url=pg_url, home=tmp_path)) as (client, services):
        _open_deals(client)
        assert client.get(f"/v1/deals/{DEALS[0]}", headers=AUTH).status_code == 200
        assert _terminate_others(pg_url) > 0  # the app is idle: only pooled connections die
        answers = []
        for n in range(3):
            status, body = _post(client, _batch(n, 10))
            answers.append(status)
            if status != 200:
                # At the very least the contract's JSON error body (e.g. 503 store_unavailable).
                assert isinstance(body, dict) and "error" in body, body
        assert answers == [200, 200, 200]
        read = client.get(f"/v1/deals/{DEALS[0]}", headers=AUTH)
        assert read.status_code == 200, read.text
