"""The automation part of the HTTP contract: sequences, directory, nurture by hand, outbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dealflow.http import create_app
from engine.persistence.settings import StoreSettings
from tests.conftest import AUTH
from tests.workflows.conftest import sequence_body, stack_services
from workflows.outbox import Message, Outbox


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    services = stack_services(StoreSettings(database_url=None, home=tmp_path / "home"))
    with TestClient(create_app(services)) as test_client:
        yield test_client
    services.close()


def _deal(client: TestClient, deal_id: str = "d1") -> None:
    response = client.post(
        f"/v1/deals/{deal_id}/events",
        headers=AUTH,
        json={
            "type": "opened",
            "event_id": f"open-{deal_id}",
            "pipeline_id": "default",
            "name": "Deal",
        },
    )
    assert response.status_code == 201, response.text


def test_sequences_are_versioned_and_validated(client: TestClient) -> None:
    body = sequence_body(
        [0, 2.5],
        send_window={
            "timezone": "Europe/Paris",
            "weekdays": [1, 2, 3, 4, 5],
            "start_hour": 9,
            "end_hour": 17,
        },
    )
    first = client.put("/v1/sequences/welcome", headers=AUTH, json=body)
    assert first.status_code == 200 and first.json()["version"] == 1
    assert first.json()["stop_on"] == ["stage_changed", "won", "lost", "reply"]
    body["steps"].append(
        {"after_days": 7, "channel": "task", "subject": "Call {decision_maker_role}"}
    )
    assert client.put("/v1/sequences/welcome", headers=AUTH, json=body).json()["version"] == 2
    got = client.get("/v1/sequences/welcome", headers=AUTH).json()
    assert (
        got["version"] == 2
        and len(got["steps"]) == 3
        and got["enroll"]["on_enter_stage"] == "qualification"
    )
    for bad in (
        {**body, "steps": [{"after_days": -1, "channel": "email"}]},
        {**body, "steps": [{"after_days": 1, "channel": "fax"}]},
        {**body, "stop_on": ["never"]},
        {
            **body,
            "send_window": {
                "timezone": "Mars/Olympus",
                "weekdays": [1],
                "start_hour": 9,
                "end_hour": 17,
            },
        },
        {
            **body,
            "send_window": {"timezone": "UTC", "weekdays": [8], "start_hour": 9, "end_hour": 17},
        },
        {**body, "unknown": 1},
    ):
        response = client.put("/v1/sequences/welcome", headers=AUTH, json=bad)
        assert response.status_code == 422 and response.json()["error"] == "validation_error", bad
    assert client.get("/v1/sequences/nope", headers=AUTH).status_code == 404
    versions = client.get("/v1/sequences/welcome/versions", headers=AUTH).json()["versions"]
    assert [v["version"] for v in versions] == [1, 2]
    assert len(versions[0]["body"]["steps"]) == 2 and len(versions[1]["body"]["steps"]) == 3
    assert client.get("/v1/sequences/nope/versions", headers=AUTH).status_code == 404
    assert client.put("/v1/sequences/welcome", json=body).status_code == 401


def test_directory(client: TestClient) -> None:
    people = [
        {"id": "Moses Frase", "manager": "Dustin Brinkmann", "email": "moses@x.test"},
        {"id": "Dustin Brinkmann", "email": "dustin@x.test"},
    ]
    assert client.get("/v1/directory", headers=AUTH).json() == {"version": 0, "people": []}
    assert client.get("/v1/directory/versions", headers=AUTH).json() == {"versions": []}
    response = client.put("/v1/directory", headers=AUTH, json={"people": people})
    assert response.status_code == 200 and response.json()["version"] == 1
    assert (
        client.get("/v1/directory", headers=AUTH).json()["people"][0]["manager"]
        == "Dustin Brinkmann"
    )
    dupes = client.put("/v1/directory", headers=AUTH, json={"people": people + people})
    assert dupes.status_code == 422
    assert (
        client.put("/v1/directory", headers=AUTH, json={"people": people[1:]}).json()["version"]
        == 2
    )
    versions = client.get("/v1/directory/versions", headers=AUTH).json()["versions"]
    assert [len(v["body"]["people"]) for v in versions] == [2, 1]
    assert {v["actor"] for v in versions} == {"bootstrap"}


def test_nurture_by_hand_is_idempotent(client: TestClient) -> None:
    _deal(client)
    client.put("/v1/sequences/welcome", headers=AUTH, json=sequence_body([0], enroll=False))
    enroll = {"event_id": "n-1", "action": "enroll", "sequence_id": "welcome"}
    first = client.post("/v1/deals/d1/nurture", headers=AUTH, json=enroll)
    assert (
        first.status_code == 201
        and first.json()["nurture"] == ["welcome"]
        and first.json()["position"]
    )
    # A new sequence version does not turn a replay into a conflict.
    client.put("/v1/sequences/welcome", headers=AUTH, json=sequence_body([0, 1], enroll=False))
    replay = client.post("/v1/deals/d1/nurture", headers=AUTH, json=enroll)
    assert replay.status_code == 200 and replay.headers["Idempotent-Replay"] == "true"
    assert replay.json() == first.json()
    reused = client.post(
        "/v1/deals/d1/nurture", headers=AUTH, json={**enroll, "action": "unenroll"}
    )
    assert reused.status_code == 409 and reused.json()["error"] == "idempotency_key_reused"
    again = client.post("/v1/deals/d1/nurture", headers=AUTH, json={**enroll, "event_id": "n-2"})
    assert again.status_code == 422 and again.json()["error"] == "invalid_transition"
    stop = client.post(
        "/v1/deals/d1/nurture",
        headers=AUTH,
        json={"event_id": "n-3", "action": "unenroll", "sequence_id": "welcome"},
    )
    assert stop.status_code == 201 and stop.json()["nurture"] == []
    history = client.get("/v1/deals/d1/history", headers=AUTH).json()["events"]
    assert [(e["type"], e["data"]) for e in history[1:]] == [
        ("nurture_enrolled", {"sequence_id": "welcome", "sequence_version": 1}),
        ("nurture_stopped", {"sequence_id": "welcome", "reason": "unenrolled"}),
    ]
    assert (
        client.post(
            "/v1/deals/d1/nurture",
            headers=AUTH,
            json={"event_id": "n-4", "action": "enroll", "sequence_id": "nope"},
        ).status_code
        == 422
    )
    assert (
        client.post(
            "/v1/deals/zz/nurture", headers=AUTH, json={**enroll, "event_id": "n-5"}
        ).status_code
        == 404
    )
    assert (
        client.post(
            "/v1/deals/d1/nurture",
            headers=AUTH,
            json={"event_id": "n-6", "action": "pause", "sequence_id": "welcome"},
        ).status_code
        == 422
    )
    # Clients may not write automation types through the events endpoint.
    forged = client.post(
        "/v1/deals/d1/events",
        headers=AUTH,
        json={
            "type": "nurture_touch_sent",
            "event_id": "f",
            "sequence_id": "welcome",
            "step": 0,
            "channel": "email",
        },
    )
    assert forged.status_code == 422


def test_outbox_shape_and_filters(client: TestClient) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    outbox: Outbox = services.automation.outbox
    outbox.claim(
        Message("m1", "d1", "nurture", "email", "a@x.test", "Hello", "Body"), "outbox", "sent"
    )
    outbox.claim(
        Message("m2", "d2", "escalation", "email", "boss@x.test", "Stale", "Body"), "outbox", "sent"
    )
    everything = client.get("/v1/outbox", headers=AUTH).json()["messages"]
    assert [m["id"] for m in everything] == ["m1", "m2"]
    assert set(everything[0]) >= {
        "id",
        "deal_id",
        "kind",
        "channel",
        "to",
        "subject",
        "body",
        "created_at",
    }
    assert everything[0]["to"] == "a@x.test" and everything[0]["created_at"].endswith("Z")
    assert [
        m["id"] for m in client.get("/v1/outbox?kind=escalation", headers=AUTH).json()["messages"]
    ] == ["m2"]
    assert [
        m["id"] for m in client.get("/v1/outbox?deal_id=d1", headers=AUTH).json()["messages"]
    ] == ["m1"]
    assert client.get("/v1/outbox?kind=spam", headers=AUTH).status_code == 422
    assert client.get("/v1/outbox").status_code == 401


def test_openapi_describes_automation(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/v1/sequences/{sequence_id}",
        "/v1/directory",
        "/v1/deals/{deal_id}/nurture",
        "/v1/outbox",
    } <= set(paths)
    assert "requestBody" in paths["/v1/sequences/{sequence_id}"]["put"]
    assert "requestBody" in paths["/v1/deals/{deal_id}/nurture"]["post"]
