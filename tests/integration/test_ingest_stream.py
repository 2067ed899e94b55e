"""Bulk writes one batch ahead (``DealflowApp.ingest_stream``): the same decisions, stored
events and keys as sequential ``ingest`` calls, on both stores; replays and reused keys across
batches in flight; a batch the store refuses (another writer got in first) decided again with
the one decided on top of it, nothing lost or doubled."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest

from dealflow.bench.ingest_mix import generate
from engine.api.helpers import to_command
from engine.application import Command, DealflowApp, Outcome
from engine.domain.deal import deal_uuid
from engine.persistence.settings import StoreSettings
from tests.conftest import fresh_database

BATCH = 60


def _bodies() -> list[dict[str, Any]]:
    events = generate(600, BATCH)
    # Refusals and replays across batch boundaries: an event sent again one batch later, a key
    # reused for another event, an event for a deal nobody opened, a deal opened twice.
    first = events[0]
    events.insert(BATCH + 3, dict(first))
    events.insert(BATCH + 5, {**events[1], "event_id": first["event_id"]})
    events.insert(2 * BATCH + 1, {**events[1], "deal_id": "nobody", "event_id": "x-nobody"})
    opened = next(e for e in events[BATCH:] if e["type"] == "opened")
    events.insert(3 * BATCH + 2, {**opened, "event_id": "x-twice"})
    return events


def _commands(bodies: list[dict[str, Any]]) -> list[list[Command]]:
    commands = [to_command(b["deal_id"], b, "test") for b in bodies]
    return [commands[i : i + BATCH] for i in range(0, len(commands), BATCH)]


def _answer(outcome: Outcome) -> tuple[Any, ...]:
    code = outcome.error.code if outcome.error is not None else None
    return (outcome.status, outcome.deal_id, outcome.event_id, outcome.version, code)


def _stored(app: DealflowApp) -> list[tuple[Any, ...]]:
    """Every stored event without its recording time (and so without its hash)."""
    rows = app.db.fetchall(
        f"SELECT originator_id, originator_version, topic, state FROM {app.db.events_table}"
    )
    out = []
    for row in rows:
        state = orjson.loads(bytes(row["state"]))
        for key in ("timestamp", "hash"):
            state.pop(key, None)
        out.append((_uuid(row["originator_id"]), row["originator_version"], row["topic"], state))
    return sorted(out, key=lambda r: (r[0], r[1]))


def _uuid(value: Any) -> str:
    return str(UUID(str(value)))


def _id_column(app: DealflowApp) -> str:
    return "notification_id" if app.db.is_postgres else "rowid"


def _keys(app: DealflowApp) -> list[tuple[Any, ...]]:
    rows = app.db.fetchall(
        "SELECT event_id, request_hash, deal_id, version FROM dealflow_idempotency"
    )
    return sorted((r["event_id"], r["request_hash"], r["deal_id"], r["version"]) for r in rows)


@pytest.fixture
def two_apps(store_settings: StoreSettings, tmp_path: Path) -> Iterator[tuple[DealflowApp, ...]]:
    """Two empty stores of the same backend."""
    with ExitStack() as stack:
        url = store_settings.database_url and stack.enter_context(fresh_database())
        apps = (
            DealflowApp(store_settings),
            DealflowApp(StoreSettings(database_url=url, home=tmp_path / "other")),
        )
        try:
            yield apps
        finally:
            for app in apps:
                app.close()


def test_the_stream_decides_and_stores_what_sequential_ingest_does(
    two_apps: tuple[DealflowApp, DealflowApp],
) -> None:
    streamed, sequential = two_apps
    batches = _commands(_bodies())
    by_stream = [o for outcomes in streamed.ingest_stream(batches) for o in outcomes]
    one_by_one = [o for batch in batches for o in sequential.ingest(batch)]
    assert [_answer(o) for o in by_stream] == [_answer(o) for o in one_by_one]
    statuses = {o.status for o in by_stream}
    assert statuses == {"recorded", "duplicate", "rejected"}
    assert _stored(streamed) == _stored(sequential)
    assert _keys(streamed) == _keys(sequential)
    # Every recorded outcome's position is its event's row; nothing carries a deal.
    rows = {
        (_uuid(r["originator_id"]), r["originator_version"]): r["notification_id"]
        for r in streamed.db.fetchall(
            f"SELECT originator_id, originator_version, {_id_column(streamed)} AS notification_id"
            f" FROM {streamed.db.events_table}"
        )
    }
    for outcome in by_stream:
        assert outcome.deal is None
        if outcome.status == "recorded":
            key = (str(deal_uuid(outcome.deal_id)), outcome.version)
            assert outcome.position == rows[key]
    # Each deal is read back at the version its last recorded outcome named.
    for deal_id in {o.deal_id for o in by_stream if o.status == "recorded"}:
        assert streamed.deal(deal_id).version == max(
            o.version or 0 for o in by_stream if o.deal_id == deal_id and o.status == "recorded"
        )


def test_a_batch_the_store_refuses_is_decided_again_with_the_next(
    two_apps: tuple[DealflowApp, DealflowApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    streamed, sequential = two_apps
    batches = _commands(_bodies())
    # Another writer records an event on a deal of batch 2 just before batch 2 is stored:
    # batch 2's versions of that deal are taken, the store refuses it.
    victim = next(c for c in batches[2] if c.type != "opened" and c.deal_id in _opened(batches))
    intruder = to_command(
        victim.deal_id,
        {
            "type": "activity_logged",
            "event_id": "intruder",
            "activity": "call",
            "occurred_at": victim.occurred_at.isoformat() if victim.occurred_at else None,
        },
        "other",
    )
    real_store = streamed._store_paused
    calls: list[int] = []

    def store_after_an_intruder(sealed: Any, keys: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            assert streamed.ingest([intruder])[0].status == "recorded"
        return real_store(sealed, keys)

    real_land = streamed._land
    refused: list[int] = []

    def land(flying: Any, touched: Any) -> Any:
        outcomes = real_land(flying, touched)
        if outcomes is None:
            refused.append(len(flying.commands))
        return outcomes

    monkeypatch.setattr(streamed, "_store_paused", store_after_an_intruder)
    monkeypatch.setattr(streamed, "_land", land)
    by_stream = [o for outcomes in streamed.ingest_stream(batches) for o in outcomes]
    assert refused == [len(batches[2])]  # the store refused batch 2 once
    # The same answers as a sequential writer that saw the intruder just before batch 2.
    one_by_one: list[Outcome] = []
    for index, batch in enumerate(batches):
        if index == 2:
            sequential.ingest([intruder])
        one_by_one.extend(sequential.ingest(batch))
    assert [_answer(o) for o in by_stream] == [_answer(o) for o in one_by_one]
    assert streamed.deal(victim.deal_id).version == sequential.deal(victim.deal_id).version
    assert _stored(streamed) == _stored(sequential)
    assert _keys(streamed) == _keys(sequential)


def _opened(batches: list[list[Command]]) -> set[str]:
    return {c.deal_id for c in batches[0] + batches[1] if c.type == "opened"}
