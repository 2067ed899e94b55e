"""Any JSON value in an event's ``type`` (issue 9, defect 9): ``{}`` and ``[]`` were a 500 (an
unhashable lookup), and in a batch they failed the whole batch, losing its valid items. Each is
refused as that item alone, and nothing else changes."""

from __future__ import annotations

from typing import Any

import pytest

from engine.persistence.settings import StoreSettings
from tests.hardening.conftest import AUTH, live_client

ODD_TYPES: list[Any] = [{}, [], {"opened": 1}, ["opened"], 7, None, True]


@pytest.mark.parametrize("type_", ODD_TYPES, ids=repr)
def test_odd_type_is_422_and_records_nothing(sqlite_settings: StoreSettings, type_: Any) -> None:
    with live_client(sqlite_settings) as (client, services):
        before = services.app.max_position()
        response = client.post(
            "/v1/deals/odd-1/events",
            json={"type": type_, "event_id": "odd-1", "pipeline_id": "default", "name": "Odd"},
            headers=AUTH,
        )
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["error"] == "validation_error"
        assert any(d["field"].startswith("type") or d["field"] == "" for d in body["details"])
        assert services.app.max_position() == before


def test_odd_types_in_a_batch_are_rejected_alone(store_settings: StoreSettings) -> None:
    opened = {"type": "opened", "pipeline_id": "default", "name": "Batch deal"}
    events: list[dict[str, Any]] = [{"deal_id": "b-1", "event_id": "b-open", **opened}]
    for i, type_ in enumerate(ODD_TYPES):
        events.append({"deal_id": "b-1", "event_id": f"b-odd-{i}", "type": type_})
    events.append(
        {"deal_id": "b-1", "event_id": "b-call", "type": "activity_logged", "activity": "call"}
    )
    with live_client(store_settings) as (client, services):
        response = client.post("/v1/events", json={"events": events}, headers=AUTH)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["index"] for r in results] == list(range(len(events)))
        assert (results[0]["status"], results[0]["version"]) == ("recorded", 1)
        assert (results[-1]["status"], results[-1]["version"]) == ("recorded", 2)
        for item in results[1:-1]:
            assert item["status"] == "rejected", item
            assert item["error"]["error"] == "validation_error", item
        history = services.app.history("b-1")["events"]
        assert [e["event_id"] for e in history] == ["b-open", "b-call"]
