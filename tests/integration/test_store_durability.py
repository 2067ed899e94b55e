"""The store on both backends: idempotency across restarts, atomicity of events and keys, and
concurrent writers that never lose an update."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from engine.application import Command, DealflowApp, Outcome
from engine.domain.deal import deal_uuid
from engine.persistence.recorders import IDEMPOTENCY_TABLE
from engine.persistence.settings import StoreSettings
from tests.helpers import command, send

OPEN: dict[str, Any] = {
    "type": "opened",
    "pipeline_id": "default",
    "name": "Acme",
    "occurred_at": "2024-01-01",
}


def _keys(app: DealflowApp) -> set[str]:
    return {r["event_id"] for r in app.db.fetchall(f"SELECT event_id FROM {IDEMPOTENCY_TABLE}")}


def test_idempotency_survives_restart(store_settings: StoreSettings) -> None:
    first = DealflowApp(store_settings)
    fact = {"type": "fact_recorded", "event_id": "f-1", "fact": "need", "value": True}
    try:
        first.ingest([command("d1", {**OPEN, "event_id": "o-1"})])
        recorded = first.ingest([command("d1", fact)])[0]
    finally:
        first.close()
    second = DealflowApp(store_settings)
    try:
        again = second.ingest([command("d1", fact)])[0]
        assert (again.status, again.version) == ("duplicate", recorded.version)
        reused = second.ingest([command("d1", {**fact, "value": False})])[0]
        assert reused.error is not None and reused.error.code == "idempotency_key_reused"
        assert second.deal("d1").version == 2
    finally:
        second.close()


def test_integrity_error_mid_save_leaves_neither_events_nor_keys(
    store_settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break the save after the idempotency keys went in: the transaction must take them back."""
    app = DealflowApp(store_settings)
    try:
        app.ingest([command("d0", {**OPEN, "event_id": "o-0"})])
        before_keys, before_max = _keys(app), app.max_position()
        recorder = type(app.recorder)
        original = recorder._insert_events

        def failing(self: Any, cursor: Any, stored_events: Any, **kwargs: Any) -> Any:
            original(self, cursor, stored_events, **kwargs)  # keys are written here...
            raise IntegrityError("simulated failure after the keys")  # ...then the save fails

        monkeypatch.setattr(recorder, "_insert_events", failing)
        batch = [command(f"d{i}", {**OPEN, "event_id": f"o-{i}"}) for i in range(1, 4)]
        # Every retry fails the same way: the outcome is a reported conflict (409), not a 500.
        failed = app.ingest(batch)
        assert [(o.status, o.error.code if o.error else None) for o in failed] == [
            ("rejected", "version_conflict")
        ] * 3
        monkeypatch.undo()
        assert _keys(app) == before_keys
        assert app.max_position() == before_max
        for i in range(1, 4):
            assert not app.recorder.select_events(deal_uuid(f"d{i}"))
        # And the same batch goes through afterwards, all of it.
        assert [o.status for o in app.ingest(batch)] == ["recorded"] * 3
        assert _keys(app) == before_keys | {"o-1", "o-2", "o-3"}
    finally:
        app.close()


def test_duplicate_key_in_store_aborts_the_whole_transaction(store_settings: StoreSettings) -> None:
    """An event_id already stored but not known at decision time (a racing writer) aborts all."""
    app = DealflowApp(store_settings)
    try:
        app.ingest([command("d0", {**OPEN, "event_id": "taken"})])
        records_before = app.recorder.select_notifications(1, 1000)
        from engine.persistence.recorders import IdempotencyRecord

        deal_cmd = command("d9", {**OPEN, "event_id": "o-9"})
        outcomes, deals, keys = app._decide([deal_cmd], False)
        keys = [*keys, IdempotencyRecord("taken", "x", "d0", 1)]
        with pytest.raises(IntegrityError):
            app._save_batch(deals, keys)
        assert len(app.recorder.select_notifications(1, 1000)) == len(records_before)
        assert "o-9" not in _keys(app)
    finally:
        app.close()


def _run_threads(count: int, target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


@pytest.mark.parametrize("batch", [1, 70], ids=["single", "copy-path"])
def test_concurrent_writers_to_one_deal_never_lose_an_update(
    pg_url: str, tmp_path: Any, batch: int
) -> None:
    settings = StoreSettings(database_url=pg_url, home=tmp_path)
    setup = DealflowApp(settings)
    setup.ingest([command("hot", OPEN)])
    setup.close()
    writers, rounds = 6, 4
    accepted: list[Outcome] = []
    refused: list[Outcome] = []
    lock = threading.Lock()

    apps = [DealflowApp(settings) for _ in range(writers)]

    def writer(i: int) -> None:
        app = apps[i]
        try:
            for r in range(rounds):
                cmds = [
                    command(
                        "hot",
                        {
                            "type": "activity_logged",
                            "activity": "call",
                            "summary": f"w{i}-r{r}-{k}",
                        },
                    )
                    for k in range(batch)
                ]
                # Never an exception: a lost race is retried, or reported as a 409 conflict.
                outcomes = app.ingest(cmds)
                with lock:
                    accepted.extend(o for o in outcomes if o.status == "recorded")
                    refused.extend(o for o in outcomes if o.status != "recorded")
        finally:
            app.close()

    _run_threads(writers, writer)
    check = DealflowApp(settings)
    try:
        deal = check.deal("hot")
        events = check.deal_events("hot")
        assert all(o.error is not None and o.error.code == "version_conflict" for o in refused), (
            refused[:3]
        )
        assert len(accepted) + len(refused) == writers * rounds * batch
        assert accepted
        assert deal.version == 1 + len(accepted) == len(events)
        assert deal.activity_count == len(accepted)
        stored_ids = {e.event_id for e in events}
        assert {o.event_id for o in accepted} <= stored_ids
        assert sorted(o.version for o in accepted) == list(range(2, deal.version + 1))
        # Hash chain stays linked despite the races.
        previous = "0" * 64
        for event in events:
            assert event.content_hash(previous) == event.hash
            previous = event.hash
    finally:
        check.close()


def test_concurrent_same_event_id_is_recorded_exactly_once(pg_url: str, tmp_path: Any) -> None:
    settings = StoreSettings(database_url=pg_url, home=tmp_path)
    setup = DealflowApp(settings)
    setup.ingest([command(f"d{i}", OPEN) for i in range(3)])
    setup.close()
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    body = {"type": "activity_logged", "event_id": "shared-1", "activity": "call"}

    apps = [DealflowApp(settings) for _ in range(8)]

    def writer(i: int) -> None:
        app = apps[i]
        try:
            # Each writer also carries events of its own in the same batch.
            result = app.ingest(
                [
                    command(
                        "d1",
                        {"type": "activity_logged", "activity": "email", "summary": f"own-{i}"},
                    ),
                    command("d2", body),
                ]
            )
            with lock:
                outcomes.extend(result)
        finally:
            app.close()

    _run_threads(8, writer)
    shared = [o for o in outcomes if o.event_id == "shared-1"]
    assert sorted(o.status for o in shared) == ["duplicate"] * 7 + ["recorded"]
    assert len({o.version for o in shared}) == 1
    check = DealflowApp(settings)
    try:
        events = check.deal_events("d2")
        assert [e.event_id for e in events].count("shared-1") == 1
        assert check.deal("d1").version == 1 + 8
    finally:
        check.close()


def test_concurrent_opened_same_deal_one_wins(pg_url: str, tmp_path: Any) -> None:
    settings = StoreSettings(database_url=pg_url, home=tmp_path)
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    DealflowApp(settings).close()  # tables exist before the race
    apps = [DealflowApp(settings) for _ in range(6)]

    def writer(i: int) -> None:
        app = apps[i]
        try:
            result = app.ingest([command("race", {**OPEN, "name": f"n{i}"})])
            with lock:
                outcomes.extend(result)
        finally:
            app.close()

    _run_threads(6, writer)
    assert sorted(o.status for o in outcomes) == ["recorded"] + ["rejected"] * 5
    assert {o.error.code for o in outcomes if o.error} == {"deal_exists"}


def test_applications_can_start_concurrently_on_a_fresh_database(
    pg_url: str, tmp_path: Any
) -> None:
    """Several processes (API replicas, worker, projections) starting at once on one new database
    must all come up: table creation has to be safe under concurrency."""
    settings = StoreSettings(database_url=pg_url, home=tmp_path)
    apps: list[DealflowApp] = []
    lock = threading.Lock()

    def start(i: int) -> None:
        app = DealflowApp(settings)
        with lock:
            apps.append(app)

    try:
        _run_threads(6, start)
    finally:
        for app in apps:
            app.close()


def _slow_between_key_and_events(monkeypatch: pytest.MonkeyPatch, recorder: Any) -> None:
    """Pause the client between sending the idempotency INSERT and the events INSERT, as a busy
    machine does: the key's duplicate-key error is then read before the pipeline's sync."""
    original = type(recorder)._lock_table

    def late(self: Any, curs: Any) -> None:
        time.sleep(0.05)
        original(self, curs)

    monkeypatch.setattr(type(recorder), "_lock_table", late)


def test_a_conflict_read_early_is_still_an_integrity_error(
    pg_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A duplicate key or deal version read before the pipeline's sync is reported as itself
    (the write path decides again), not as an aborted pipeline (an outage: retried, then 503)."""
    app = DealflowApp(StoreSettings(database_url=pg_url, home=tmp_path))
    try:
        app.ingest([command("d0", {**OPEN, "event_id": "taken"})])
        before = len(app.recorder.select_notifications(1, 1000))
        _slow_between_key_and_events(monkeypatch, app.recorder)
        from engine.persistence.recorders import IdempotencyRecord

        taken_version = StoredEvent(deal_uuid("d0"), 1, "some.topic", b"{}")
        new_deal = StoredEvent(deal_uuid("d-new"), 1, "some.topic", b"{}")
        for events, key in (
            ([new_deal], IdempotencyRecord("taken", "x", "d-new", 1)),
            ([taken_version], IdempotencyRecord("fresh", "x", "d0", 1)),
        ):
            started = time.monotonic()
            with pytest.raises(IntegrityError):
                app.recorder.insert_events(events, idempotency=[key])
            assert time.monotonic() - started < 1.0, "retried as if the store were down"
        # Nothing of either attempt was kept, and the pooled connections are fine.
        assert len(app.recorder.select_notifications(1, 1000)) == before
        assert "fresh" not in _keys(app)
        assert send(app, "d0", {"type": "activity_logged", "activity": "call"}).status == (
            "recorded"
        )
    finally:
        app.close()


def test_resends_racing_on_a_busy_client_answer_as_duplicates(
    pg_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI saw two of twenty simultaneous resends answered 503 ``pipeline aborted``."""
    settings = StoreSettings(database_url=pg_url, home=tmp_path)
    app = DealflowApp(settings)
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    _slow_between_key_and_events(monkeypatch, app.recorder)
    try:
        for r in range(3):
            same = Command.from_body(f"race-{r}", {**OPEN, "event_id": f"o-{r}"}, "tester")

            def resend(_: int, same: Command = same) -> None:
                result = app.ingest([same])
                with lock:
                    outcomes.extend(result)

            _run_threads(10, resend)
        assert sorted(o.status for o in outcomes) == ["duplicate"] * 27 + ["recorded"] * 3
    finally:
        app.close()
