"""Audit pieces that need no store: the break log, the rolling hash, chain checks on rows."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import orjson

from dealflow.bench.audit_sample import deal_commands
from engine.application import DealflowApp
from engine.audit.breaks import (
    HASH_MISMATCH,
    TRUNCATED,
    VERSION_GAP,
    Break,
    BreakLog,
    missing_range,
)
from engine.audit.chain import Head, KeyRecord, check_deal, decode_row
from engine.audit.checkpoints import roll, row_digest
from engine.audit.store import StoredRow
from engine.audit.timeline import summarize
from engine.domain.deal import deal_uuid
from engine.domain.events import GENESIS_HASH
from engine.persistence.settings import StoreSettings


def test_break_log_reports_each_finding_once_and_caps() -> None:
    log = BreakLog(limit=2)
    originator = uuid4()
    gap = Break(VERSION_GAP, "gone", "d", originator, 3, 10, missing_range(3, 4))
    log.add(gap)
    log.add(gap)
    assert (
        log.total == 1
        and log.reported_missing(originator, 4)
        and not log.reported_missing(originator, 5)
    )
    log.add(Break(HASH_MISMATCH, "edited", "d", originator, 5))
    log.add(Break(TRUNCATED, "tail", "d", originator, 9))
    assert log.total == 3 and len(log.breaks) == 2 and log.truncated
    assert missing_range(1, 5000)["missing_versions"] == [1, 5000]


def test_rolling_hash_depends_on_position_and_order() -> None:
    a = StoredRow(1, uuid4(), 1, "engine.domain.deal:Opened", orjson.dumps({"hash": "a" * 64}))
    b = StoredRow(2, uuid4(), 1, "engine.domain.deal:Opened", orjson.dumps({"hash": "b" * 64}))
    assert row_digest(a) == "a" * 64
    assert row_digest(StoredRow(3, uuid4(), 1, "other", b"x")) != row_digest(
        StoredRow(3, uuid4(), 1, "other", b"y")
    )
    forward = roll(roll(GENESIS_HASH, a, row_digest(a)), b, row_digest(b))
    backward = roll(roll(GENESIS_HASH, b, row_digest(b)), a, row_digest(a))
    assert forward != backward


def _rows(
    tmp_path: Path, deal_id: str = "u-0"
) -> tuple[list[StoredRow], list[object], dict[str, KeyRecord]]:
    app = DealflowApp(StoreSettings(database_url=None, home=tmp_path))
    try:
        commands = deal_commands("u", 0)
        app.ingest(commands)
        events = app.deal_events(deal_id)
        rows = [
            StoredRow(
                i + 10,
                e.originator_id,
                e.originator_version,
                f"engine.domain.deal:{type(e).__name__}",
                orjson.dumps(
                    e.model_dump(mode="json", exclude={"originator_id", "originator_version"})
                ),
            )
            for i, e in enumerate(events)
        ]
        keys = {c.event_id: KeyRecord(c.event_id, deal_id, n + 1) for n, c in enumerate(commands)}
        return rows, [decode_row(r)[0] for r in rows], keys
    finally:
        app.close()


def test_check_deal_on_clean_rows(tmp_path: Path) -> None:
    rows, events, keys = _rows(tmp_path)
    log = BreakLog()
    assert check_deal(rows, events, keys=keys, head=Head(17, events[-1].hash, 99), log=log) == "u-0"  # type: ignore[attr-defined]
    assert log.total == 0


def test_check_deal_finds_a_gap_a_truncation_and_a_missing_key(tmp_path: Path) -> None:
    rows, events, keys = _rows(tmp_path)
    del rows[4], events[4]
    keys.pop("u-0-e9")
    log = BreakLog()
    check_deal(rows[:-1], events[:-1], keys=keys, head=Head(17, "x", 99), log=log)
    found = {(b.kind, b.version) for b in log.breaks}
    assert found == {("version_gap", 5), ("truncated", 17), ("inserted", 10)}
    assert all(b.originator_id == deal_uuid("u-0") for b in log.breaks)


def test_a_post_purchase_followup_has_its_own_idempotency_record(tmp_path: Path) -> None:
    app = DealflowApp(StoreSettings(database_url=None, home=tmp_path))
    try:
        app.ingest(deal_commands("u", 0))
        (opened,) = app.deal_events("u-0:post-purchase")
        assert opened.event_id == "u-0-e16:post-purchase"
        known = app._known_keys([opened.event_id])
        assert known[opened.event_id][1:] == ("u-0:post-purchase", 1)
        assert summarize(app.deal_events("u-0")[2]) == "prospecting → qualification (forward)"
    finally:
        app.close()
