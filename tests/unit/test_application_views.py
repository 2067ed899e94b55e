"""Reading deals back: as-of (business time) and version views, history, snapshots and upcasting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import orjson
import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from engine.application import DealflowApp, deal_view, replay
from engine.domain.deal import Deal, DealEvent, deal_uuid
from engine.domain.errors import NotFound
from tests.helpers import send

OPEN: dict[str, Any] = {
    "type": "opened",
    "pipeline_id": "default",
    "name": "Acme",
    "occurred_at": "2024-03-01",
}


def _walk(app: DealflowApp, deal_id: str = "d1") -> None:
    send(app, deal_id, {**OPEN, "amount": "100"})
    send(
        app,
        deal_id,
        {
            "type": "fact_recorded",
            "fact": "contact_made",
            "value": True,
            "occurred_at": "2024-03-02T10:00:00Z",
        },
    )
    send(
        app,
        deal_id,
        {
            "type": "stage_changed",
            "to_stage": "qualification",
            "occurred_at": "2024-03-05T09:00:00Z",
        },
    )
    send(app, deal_id, {"type": "updated", "amount": "250.50", "occurred_at": "2024-03-06"})


def test_as_of_business_time(app: DealflowApp) -> None:
    _walk(app)
    at = datetime(2024, 3, 4, tzinfo=UTC)
    before = app.deal_as_of("d1", at)
    assert (before.stage, before.version, str(before.amount), before.facts) == (
        "prospecting",
        2,
        "100",
        {"contact_made": True},
    )
    exactly = app.deal_as_of("d1", datetime(2024, 3, 5, 9, tzinfo=UTC))
    assert (exactly.stage, exactly.version) == ("qualification", 3)
    latest = app.deal_as_of("d1", datetime(2030, 1, 1, tzinfo=UTC))
    assert latest.version == 4 and str(latest.amount) == "250.50"
    with pytest.raises(NotFound):
        app.deal_as_of("d1", datetime(2024, 2, 29, tzinfo=UTC))
    view = app.deal_state(before, at=at)
    assert (view["stage"], view["version"], view["opened_at"]) == (
        "prospecting",
        2,
        "2024-03-01T00:00:00Z",
    )


def test_version_view(app: DealflowApp) -> None:
    _walk(app)
    assert app.deal("d1", version=1).stage == "prospecting"
    assert app.deal("d1", version=3).stage == "qualification"
    assert str(app.deal("d1", version=3).amount) == "100"
    assert app.deal("d1").version == 4
    with pytest.raises(NotFound):
        app.deal("d1", version=5)
    with pytest.raises(NotFound):
        app.deal("nope")


def test_history_lists_every_event_in_version_order_with_a_hash_chain(app: DealflowApp) -> None:
    _walk(app)
    history = app.history("d1")
    assert history["deal_id"] == "d1"
    events = history["events"]
    assert [(e["version"], e["type"]) for e in events] == [
        (1, "opened"),
        (2, "fact_recorded"),
        (3, "stage_changed"),
        (4, "updated"),
    ]
    assert events[2]["data"]["from_stage"] == "prospecting"
    assert events[2]["data"]["criteria"] == [
        {"stage": "prospecting", "criterion": "contact_made", "held": True}
    ]
    assert events[2]["occurred_at"] == "2024-03-05T09:00:00Z"
    assert all(e["actor"] == "tester" and e["pipeline_version"] == 1 for e in events)
    # Each link's hash is recomputable from the previous one.
    previous = "0" * 64
    for event in app.deal_events("d1"):
        assert event.content_hash(previous) == event.hash
        previous = event.hash


def _many_events(app: DealflowApp, deal_id: str, count: int) -> None:
    send(app, deal_id, OPEN)
    start = datetime(2024, 3, 2, tzinfo=UTC)
    for i in range(count - 1):
        at = (start + timedelta(minutes=i)).isoformat()
        if i % 3 == 0:
            send(app, deal_id, {"type": "activity_logged", "activity": "call", "occurred_at": at})
        elif i % 3 == 1:
            send(
                app,
                deal_id,
                {
                    "type": "fact_recorded",
                    "fact": f"f{i % 7}",
                    "value": i % 2 == 0,
                    "occurred_at": at,
                },
            )
        else:
            send(
                app,
                deal_id,
                {"type": "updated", "amount": f"{i}.25", "attributes": {"k": i}, "occurred_at": at},
            )


def test_long_history_loads_from_a_snapshot_and_equals_full_replay(app: DealflowApp) -> None:
    _many_events(app, "long", 230)
    aggregate_id = deal_uuid("long")
    snapshots = list(app.snapshots.get(aggregate_id)) if app.snapshots else []
    assert [s.originator_version for s in snapshots] == [100, 200]
    loaded = app.deal("long")
    replayed = replay(app.deal_events("long"))
    assert isinstance(replayed, Deal)
    definition = app.pipeline_ref("default").definition
    at = datetime(2025, 1, 1, tzinfo=UTC)
    assert loaded.version == replayed.version == 230
    assert deal_view(loaded, definition, at) == deal_view(replayed, definition, at)
    assert loaded.last_hash == replayed.last_hash
    assert loaded.__dict__.keys() == replayed.__dict__.keys()
    for key in replayed.__dict__:
        assert getattr(loaded, key) == getattr(replayed, key), key
    # A version view between snapshots, and more events after loading from a snapshot.
    mid = app.deal("long", version=150)
    assert deal_view(mid, definition, at) == deal_view(
        replay(app.deal_events("long")[:150]), definition, at
    )  # type: ignore[arg-type]
    assert send(app, "long", {"type": "activity_logged", "activity": "demo"}).version == 231
    # A fresh application reads the same.
    fresh = DealflowApp(app.settings)
    try:
        assert deal_view(fresh.deal("long"), definition, at) == deal_view(
            app.deal("long"), definition, at
        )
    finally:
        fresh.close()


# -- upcasting -------------------------------------------------------------------------------------


class NoteAdded(DealEvent):
    """A test-only event at class version 2: v1 stored the text as ``body`` and had ``urgent``."""

    TYPE: ClassVar[str] = "note_added"
    class_version: ClassVar[int] = 2
    text: str
    priority: str

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["text"] = state.pop("body")
        state["priority"] = "high" if state.pop("urgent") else "normal"

    def apply(self, deal: Deal) -> None:
        deal.attributes["note"] = f"{self.priority}:{self.text}"


def test_mapper_upcasts_an_old_stored_event(app: DealflowApp) -> None:
    send(app, "d1", OPEN)
    opened = app.deal_events("d1")[0]
    v1_state = {
        "timestamp": "2024-03-01T00:00:01+00:00",
        "occurred_at": "2024-03-01T12:00:00+00:00",
        "event_id": "legacy-1",
        "actor": "legacy",
        "pipeline_version": 1,
        "hash": "f" * 64,
        "body": "call back in May",
        "urgent": True,
    }
    stored = StoredEvent(opened.originator_id, 2, get_topic(NoteAdded), orjson.dumps(v1_state))
    event = app.mapper.to_domain_event(stored)
    assert isinstance(event, NoteAdded)
    assert (event.text, event.priority, event.originator_version) == ("call back in May", "high", 2)
    # Stored in the log, the old record is upcast when the deal loads.
    app.recorder.insert_events([stored])
    deal = app.deal("d1")
    assert deal.version == 2 and deal.attributes["note"] == "high:call back in May"
    # The current shape round-trips with its class_version written, and is not upcast again.
    current = app.mapper.to_stored_event(event)
    assert orjson.loads(current.state)["class_version"] == 2
    assert app.mapper.to_domain_event(current) == event
