"""Tamper with the stored events directly in the database (raw SQL on a connection of its own,
as an attacker with database access would) and check that `verify` names each change.

Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any
from uuid import UUID

import orjson
import psycopg
import pytest

from dealflow.bench.audit_sample import deal_commands, populate
from engine.application import DealflowApp
from engine.audit.breaks import (
    HASH_MISMATCH,
    INSERTED,
    LOG_ALTERED,
    LOG_TRUNCATED,
    OUT_OF_ORDER,
    TRUNCATED,
    VERSION_GAP,
)
from engine.audit.checkpoints import maybe_write_checkpoint, write_checkpoint
from engine.audit.verify import VerifyReport, verify
from engine.domain.deal import deal_uuid
from engine.persistence.settings import StoreSettings

# populate(app, 200) stores deals d-0 .. d-13. Won deals have 17 events (v11 updates the amount,
# v17 is `won`, which also opens a follow-up deal); every third (d-2, d-5, d-8, d-11) is lost at v9.
EVENTS = 200


class RawStore:
    """The events table, reached around the application."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.postgres = settings.is_postgres
        self.table = "dealflow_events" if self.postgres else "stored_events"
        self.position = "notification_id" if self.postgres else "rowid"

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        if self.postgres:
            assert self.settings.database_url
            with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
                cur = conn.execute(sql, params)
                return cur.fetchall() if cur.description else []
        conn = sqlite3.connect(self.settings.sqlite_path)
        try:
            cur = conn.execute(sql.replace("%s", "?"), params)
            rows = cur.fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()

    def oid(self, deal_id: str) -> Any:
        originator = deal_uuid(deal_id)
        return originator if self.postgres else originator.hex

    def state(self, deal_id: str, version: int) -> dict[str, Any]:
        rows = self.run(
            f"SELECT state FROM {self.table} WHERE originator_id = %s AND originator_version = %s",
            (self.oid(deal_id), version),
        )
        return orjson.loads(bytes(rows[0][0]))  # type: ignore[no-any-return]

    def topic(self, deal_id: str, version: int) -> str:
        rows = self.run(
            f"SELECT topic FROM {self.table} WHERE originator_id = %s AND originator_version = %s",
            (self.oid(deal_id), version),
        )
        return str(rows[0][0])

    def write_state(self, deal_id: str, version: int, state: dict[str, Any]) -> None:
        self.run(
            f"UPDATE {self.table} SET state = %s WHERE originator_id = %s AND originator_version = %s",
            (orjson.dumps(state), self.oid(deal_id), version),
        )

    def delete(self, deal_id: str, *versions: int) -> None:
        for version in versions:
            self.run(
                f"DELETE FROM {self.table} WHERE originator_id = %s AND originator_version = %s",
                (self.oid(deal_id), version),
            )

    def set_version(self, deal_id: str, old: int, new: int) -> None:
        self.run(
            f"UPDATE {self.table} SET originator_version = %s WHERE originator_id = %s AND originator_version = %s",
            (new, self.oid(deal_id), old),
        )

    def insert(self, deal_id: str, version: int, topic: str, state: dict[str, Any]) -> None:
        self.run(
            f"INSERT INTO {self.table} (originator_id, originator_version, topic, state) VALUES (%s, %s, %s, %s)",
            (self.oid(deal_id), version, topic, orjson.dumps(state)),
        )

    def delete_log_tail(self, rows: int) -> None:
        self.run(
            f"DELETE FROM {self.table} WHERE {self.position} IN"
            f" (SELECT {self.position} FROM {self.table} ORDER BY {self.position} DESC LIMIT %s)",
            (rows,),
        )

    def last_rows(self, rows: int) -> list[tuple[UUID, int]]:
        found = self.run(
            f"SELECT originator_id, originator_version FROM {self.table} ORDER BY {self.position} DESC LIMIT %s",
            (rows,),
        )
        return [(r[0] if isinstance(r[0], UUID) else UUID(r[0]), int(r[1])) for r in found]


def rehash(state: dict[str, Any], topic: str, version: int, previous_hash: str) -> str:
    """What a careful attacker does after editing: recompute the edited event's own hash."""
    from engine.audit.chain import decode_row
    from engine.audit.store import StoredRow

    event, error = decode_row(StoredRow(0, UUID(int=0), version, topic, orjson.dumps(state)))
    assert event is not None, error
    return str(event.content_hash(previous_hash))


@pytest.fixture
def store(app: DealflowApp, store_settings: StoreSettings) -> RawStore:
    populate(app, EVENTS)
    assert verify(app).ok
    return RawStore(store_settings)


def kinds_at(report: VerifyReport, deal_id: str | None = None) -> set[tuple[str, int | None]]:
    return {
        (b.kind, b.version) for b in report.breaks.breaks if deal_id is None or b.deal_id == deal_id
    }


def only(report: VerifyReport, predicate: Callable[[Any], bool]) -> bool:
    return all(predicate(b) for b in report.breaks.breaks)


# -- a clean store ---------------------------------------------------------------------------------


def test_clean_store_verifies_before_and_after_checkpoints(
    app: DealflowApp, store: RawStore
) -> None:
    report = verify(app)
    assert report.ok, report.to_dict()["breaks"]
    assert report.counts["deals"] == 14 + 10  # ten won deals opened a follow-up deal each
    write_checkpoint(app)
    # More writes after the checkpoint, then another checkpoint and more writes: still clean.
    app.ingest(deal_commands("late", 1))
    assert verify(app).ok
    write_checkpoint(app)
    app.ingest(deal_commands("later", 2))
    report = verify(app)
    assert report.ok, report.to_dict()["breaks"]
    assert report.counts["checkpoints"] == 2
    assert verify(app, "d-1").ok


# -- edited ------------------------------------------------------------------------------------------


def test_edited_payload_is_a_hash_mismatch_at_that_version(
    app: DealflowApp, store: RawStore
) -> None:
    state = store.state("d-1", 11)
    assert state["changes"] == {"amount": "12500.00"}
    state["changes"] = {"amount": "125.00"}
    store.write_state("d-1", 11, state)

    report = verify(app)
    assert not report.ok
    assert kinds_at(report) == {(HASH_MISMATCH, 11)}
    (found,) = report.breaks.breaks
    assert found.deal_id == "d-1" and found.originator_id == deal_uuid("d-1")
    assert verify(app, "d-1").breaks.total == 1
    assert verify(app, "d-0").ok


def test_edited_envelope_is_caught_too(app: DealflowApp, store: RawStore) -> None:
    state = store.state("d-4", 2)
    state["actor"] = "someone-else"
    store.write_state("d-4", 2, state)
    assert kinds_at(verify(app)) == {(HASH_MISMATCH, 2)}


def test_edit_with_a_recomputed_hash_breaks_the_next_link(
    app: DealflowApp, store: RawStore
) -> None:
    previous = store.state("d-0", 10)["hash"]
    topic = store.topic("d-0", 11)
    state = store.state("d-0", 11)
    state["changes"] = {"amount": "1.00"}
    state["hash"] = rehash(state, topic, 11, previous)
    store.write_state("d-0", 11, state)
    assert kinds_at(verify(app)) == {(HASH_MISMATCH, 12)}


def test_rewritten_last_event_is_caught_by_the_checkpoint(
    app: DealflowApp, store: RawStore
) -> None:
    write_checkpoint(app)
    # d-2 was lost: its last event is version 9. Rewrite it with a valid hash: the chain holds,
    # only the checkpoint (head and rolling hash) remembers what it was.
    previous = store.state("d-2", 8)["hash"]
    topic = store.topic("d-2", 9)
    state = store.state("d-2", 9)
    state["reason"] = "chose a competitor"
    state["hash"] = rehash(state, topic, 9, previous)
    store.write_state("d-2", 9, state)

    report = verify(app)
    assert (HASH_MISMATCH, 9) in kinds_at(report, "d-2")
    assert LOG_ALTERED in {b.kind for b in report.breaks.breaks}


# -- deleted -----------------------------------------------------------------------------------------


def test_deleted_event_is_a_version_gap(app: DealflowApp, store: RawStore) -> None:
    store.delete("d-3", 5)
    report = verify(app)
    assert kinds_at(report) == {(VERSION_GAP, 5)}
    assert report.breaks.breaks[0].details["missing_versions"] == [5]


def test_deleted_event_is_also_a_log_change_once_checkpointed(
    app: DealflowApp, store: RawStore
) -> None:
    write_checkpoint(app)
    store.delete("d-3", 5, 6)
    report = verify(app)
    assert (VERSION_GAP, 5) in kinds_at(report, "d-3")
    assert {b.kind for b in report.breaks.breaks} == {VERSION_GAP, LOG_ALTERED}


# -- swapped -----------------------------------------------------------------------------------------


def test_swapped_versions_are_out_of_order(app: DealflowApp, store: RawStore) -> None:
    store.set_version("d-5", 3, -1)
    store.set_version("d-5", 4, 3)
    store.set_version("d-5", -1, 4)
    report = verify(app)
    assert kinds_at(report) == {(OUT_OF_ORDER, 3)}
    assert report.breaks.breaks[0].details["versions"] == [3, 4]


def test_swapped_payloads_are_hash_mismatches(app: DealflowApp, store: RawStore) -> None:
    third, fourth = store.state("d-5", 3), store.state("d-5", 4)
    store.write_state("d-5", 3, fourth)
    store.write_state("d-5", 4, third)
    assert {b.version for b in verify(app).breaks.breaks} >= {3, 4}
    assert not verify(app, "d-5").ok


# -- inserted ----------------------------------------------------------------------------------------


def test_inserted_event_with_a_valid_hash_is_caught_by_the_idempotency_records(
    app: DealflowApp, store: RawStore
) -> None:
    # d-7 was won at version 17. Append an 18th event whose hash chains properly.
    last = store.state("d-7", 17)
    topic = "engine.domain.deal:ActivityLogged"
    forged = {
        "timestamp": last["timestamp"],
        "occurred_at": last["occurred_at"],
        "event_id": "forged-1",
        "actor": "mallory",
        "pipeline_version": 1,
        "activity": "call",
        "summary": "never happened",
        "hash": "0" * 64,
    }
    forged["hash"] = rehash(forged, topic, 18, last["hash"])
    store.insert("d-7", 18, topic, forged)

    report = verify(app)
    assert kinds_at(report) == {(INSERTED, 18)}
    assert report.breaks.breaks[0].details["event_id"] == "forged-1"


def test_inserted_event_with_a_wrong_hash(app: DealflowApp, store: RawStore) -> None:
    copied = store.state("d-7", 9)
    copied["event_id"] = "copied-1"
    store.insert("d-7", 18, store.topic("d-7", 9), copied)
    assert kinds_at(verify(app)) == {(INSERTED, 18), (HASH_MISMATCH, 18)}


def test_event_copied_from_another_deal(app: DealflowApp, store: RawStore) -> None:
    copied = store.state("d-6", 17)
    store.insert("d-9", 18, store.topic("d-6", 17), copied)
    report = verify(app)
    assert (INSERTED, 18) in kinds_at(report, "d-9")


def test_inserted_in_the_middle_by_renumbering(app: DealflowApp, store: RawStore) -> None:
    for version in range(9, 4, -1):  # d-8 was lost at version 9: shift 5..9 up by one
        store.set_version("d-8", version, version + 1)
    forged = dict(store.state("d-8", 6))  # the old version 5
    forged["event_id"] = "forged-mid"
    store.insert("d-8", 5, store.topic("d-8", 6), forged)
    report = verify(app)
    found = kinds_at(report, "d-8")
    assert (INSERTED, 5) in found
    assert OUT_OF_ORDER in {kind for kind, _ in found}


# -- truncated ---------------------------------------------------------------------------------------


def test_truncated_deal_tail_without_checkpoint_is_caught_by_idempotency_records(
    app: DealflowApp, store: RawStore
) -> None:
    store.delete("d-4", 16, 17)  # d-4 was won at 17; the follow-up deal stays
    report = verify(app)
    assert kinds_at(report) == {(TRUNCATED, 16)}
    assert report.breaks.breaks[0].details["missing_versions"] == [16, 17]


def test_truncated_deal_tail_after_checkpoint(app: DealflowApp, store: RawStore) -> None:
    write_checkpoint(app)
    store.delete("d-4", 16, 17)
    report = verify(app)
    assert (TRUNCATED, 16) in kinds_at(report, "d-4")
    assert {b.kind for b in report.breaks.breaks} == {TRUNCATED, LOG_ALTERED}


def test_truncated_log_tail(app: DealflowApp, store: RawStore) -> None:
    write_checkpoint(app)
    victims = store.last_rows(5)
    store.delete_log_tail(5)
    report = verify(app)
    kinds = {b.kind for b in report.breaks.breaks}
    assert LOG_TRUNCATED in kinds
    truncated = {(b.originator_id, b.version) for b in report.breaks.breaks if b.kind == TRUNCATED}
    # Every deal that lost its last events is named (follow-up deals lose their only event).
    for originator_id, _ in victims:
        assert any(o == originator_id for o, _ in truncated)


def test_deleted_whole_deal_is_caught(app: DealflowApp, store: RawStore) -> None:
    write_checkpoint(app)
    store.delete("d-2", *range(1, 10))
    report = verify(app)
    assert (TRUNCATED, 1) in {(b.kind, b.version) for b in report.breaks.breaks}
    assert not verify(app, "d-2").ok


# -- checkpoints on the go ---------------------------------------------------------------------------


def test_maybe_write_checkpoint_writes_when_due(app: DealflowApp, store: RawStore) -> None:
    first = maybe_write_checkpoint(app, every_events=50)
    assert first is not None and first.position == app.max_position()
    assert maybe_write_checkpoint(app, every_events=50) is None  # nothing new
    app.ingest(deal_commands("more", 1))
    assert maybe_write_checkpoint(app, every_events=10_000, every_seconds=3600) is None  # not due
    assert maybe_write_checkpoint(app, every_events=10) is not None
    assert verify(app).ok


def test_checkpoint_spans_are_bounded(app: DealflowApp, store: RawStore) -> None:
    last = write_checkpoint(app, max_span=25)
    assert last is not None and last.position == app.max_position()
    report = verify(app)
    assert report.ok and report.counts["checkpoints"] >= 4


# -- topics written before the deal model was split --------------------------------------------


def test_events_stored_under_the_old_module_topic_still_load_and_verify(
    app: DealflowApp, store: RawStore
) -> None:
    """Deal events were once stored as ``engine.domain.deal:<Class>``; they are now written as
    ``engine.domain.deal_events:<Class>``. A store holding both must read and verify clean."""
    new_topic = store.topic("d-7", 3)
    assert new_topic.startswith("engine.domain.deal_events:")
    before = app.deal("d-7")
    old_topics = 0
    for version in range(1, before.version + 1):
        topic = store.topic("d-7", version)
        old = topic.replace("engine.domain.deal_events:", "engine.domain.deal:")
        store.run(
            f"UPDATE {store.table} SET topic = %s WHERE originator_id = %s AND originator_version = %s",
            (old, store.oid("d-7"), version),
        )
        old_topics += old != topic
    assert old_topics == before.version
    reloaded = DealflowApp(app.settings)
    try:
        after = reloaded.deal("d-7")
        assert (after.version, after.stage, after.status, after.last_hash) == (
            before.version,
            before.stage,
            before.status,
            before.last_hash,
        )
        assert verify(reloaded).ok
    finally:
        reloaded.close()
