"""The HTTP API against the contract (shared/contract/http-v1.md): status codes, error bodies,
idempotent replays, batches, time input, tokens and scopes, OpenAPI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dealflow.http import create_app
from dealflow.runtime import build_services
from engine.persistence.settings import StoreSettings
from engine.services import Services
from tests.conftest import AUTH, TEST_TOKEN
from tests.helpers import api_services

OPEN: dict[str, Any] = {
    "type": "opened",
    "event_id": "open-1",
    "pipeline_id": "default",
    "name": "Acme platform deal",
    "amount": "48000",
    "owner": "Moses Frase",
    "occurred_at": "2017-03-01",
}
STATE_FIELDS = {
    "deal_id",
    "pipeline_id",
    "name",
    "stage",
    "status",
    "amount",
    "currency",
    "owner",
    "account",
    "industry",
    "lead_source",
    "decision_maker_role",
    "facts",
    "opened_at",
    "stage_entered_at",
    "closed_at",
    "lost_reason",
    "stale",
    "version",
}


def _client(settings: StoreSettings, **kwargs: Any) -> Iterator[tuple[TestClient, Services]]:
    with api_services(settings) as services, TestClient(create_app(services, **kwargs)) as client:
        yield client, services


@pytest.fixture
def client(sqlite_settings: StoreSettings) -> Iterator[TestClient]:
    for c, _ in _client(sqlite_settings):
        yield c


@pytest.fixture
def both(store_settings: StoreSettings) -> Iterator[TestClient]:
    """The same client on SQLite and on PostgreSQL."""
    for c, _ in _client(store_settings):
        yield c


def _post(
    client: TestClient, deal_id: str, body: dict[str, Any], headers: dict[str, str] = AUTH
) -> Any:
    return client.post(f"/v1/deals/{deal_id}/events", headers=headers, json=body)


def _token(client: TestClient, name: str, scopes: list[str]) -> dict[str, str]:
    r = client.post("/v1/tokens", headers=AUTH, json={"name": name, "scopes": scopes})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


# -- writes: 201, replay, conflicts -----------------------------------------------------------------


def test_single_event_201_then_replay_200_with_identical_body(both: TestClient) -> None:
    first = _post(both, "acme-42", OPEN)
    assert first.status_code == 201, first.text
    assert "idempotent-replay" not in first.headers
    state = first.json()
    assert set(state) >= STATE_FIELDS
    assert (state["deal_id"], state["stage"], state["status"], state["version"]) == (
        "acme-42",
        "prospecting",
        "open",
        1,
    )
    assert state["amount"] == "48000" and state["currency"] == "USD"
    assert isinstance(state["position"], int) and state["position"] > 0
    # More writes in between do not change what a replay answers.
    fact = {
        "type": "fact_recorded",
        "event_id": "f-1",
        "fact": "contact_made",
        "value": True,
        "occurred_at": "2017-03-02",
    }
    assert _post(both, "acme-42", fact).status_code == 201
    replay = _post(both, "acme-42", OPEN)
    assert replay.status_code == 200
    assert replay.headers["idempotent-replay"] == "true"
    assert replay.json() == state
    history = both.get("/v1/deals/acme-42/history", headers=AUTH).json()
    assert [e["event_id"] for e in history["events"]] == ["open-1", "f-1"]


def test_replay_body_is_identical_even_after_the_pipeline_changed(client: TestClient) -> None:
    """The replay must return "the first outcome again (same body)"; a later pipeline version must
    not change it (here: `stale`, judged with the stage's max_days_in_stage)."""
    pipeline = client.get("/v1/pipelines/default", headers=AUTH).json()
    first = _post(client, "d1", {**OPEN, "occurred_at": "2024-01-01"})
    assert first.status_code == 201
    body = {k: v for k, v in pipeline.items() if k not in ("pipeline_id", "version")}
    body["stages"][0]["max_days_in_stage"] = 100000
    assert client.put("/v1/pipelines/default", headers=AUTH, json=body).status_code == 200
    replay = _post(client, "d1", {**OPEN, "occurred_at": "2024-01-01"})
    assert replay.status_code == 200
    assert replay.json() == first.json()


def test_same_event_id_different_body_is_409_idempotency_key_reused(both: TestClient) -> None:
    assert _post(both, "d1", OPEN).status_code == 201
    _error(_post(both, "d1", {**OPEN, "name": "Other"}), 409, "idempotency_key_reused")
    _error(_post(both, "d2", OPEN), 409, "idempotency_key_reused")
    assert both.get("/v1/deals/d1", headers=AUTH).json()["name"] == OPEN["name"]
    assert both.get("/v1/deals/d2", headers=AUTH).status_code == 404


def test_409_deal_exists_and_version_conflict(both: TestClient) -> None:
    _post(both, "d1", OPEN)
    _error(_post(both, "d1", {**OPEN, "event_id": "open-again"}), 409, "deal_exists")
    ok = _post(
        both,
        "d1",
        {"type": "activity_logged", "event_id": "a1", "activity": "call", "expected_version": 1},
    )
    assert ok.status_code == 201 and ok.json()["version"] == 2
    stale = _post(
        both,
        "d1",
        {"type": "activity_logged", "event_id": "a2", "activity": "call", "expected_version": 1},
    )
    body = _error(stale, 409, "version_conflict")
    assert body["current_version"] == 2
    assert both.get("/v1/deals/d1", headers=AUTH).json()["version"] == 2


def test_422_codes(both: TestClient) -> None:
    _post(both, "d1", OPEN)
    jump = _error(
        _post(both, "d1", {"type": "stage_changed", "event_id": "s1", "to_stage": "meeting"}),
        422,
        "exit_criteria_unmet",
    )
    assert jump["unmet"] == [
        {"stage": "prospecting", "criterion": "contact_made"},
        {"stage": "qualification", "criterion": "need"},
        {"stage": "qualification", "criterion": "budget"},
        {"stage": "qualification", "criterion": "authority"},
        {"stage": "qualification", "criterion": "timeline"},
    ]
    _error(
        _post(both, "d1", {"type": "stage_changed", "event_id": "s2", "to_stage": "prospecting"}),
        422,
        "invalid_transition",
    )
    _error(
        _post(both, "d1", {"type": "stage_changed", "event_id": "s3", "to_stage": "closing"}),
        422,
        "invalid_transition",
    )
    _error(
        _post(both, "d1", {"type": "reopened", "event_id": "r1", "to_stage": "prospecting"}),
        422,
        "invalid_transition",
    )
    invalid = _error(
        _post(
            both,
            "d1",
            {"type": "fact_recorded", "event_id": "f1", "fact": "need", "value": "maybe"},
        ),
        422,
        "validation_error",
    )
    assert invalid["details"] and all({"field", "message"} <= set(d) for d in invalid["details"])
    assert any("value" in d["field"] for d in invalid["details"])
    assert (
        _post(
            both,
            "d1",
            {"type": "lost", "event_id": "l1", "reason": "budget cut", "occurred_at": "2017-03-05"},
        ).status_code
        == 201
    )
    _error(
        _post(both, "d1", {"type": "activity_logged", "event_id": "a1", "activity": "call"}),
        422,
        "deal_closed",
    )
    _error(_post(both, "d1", {"type": "won", "event_id": "w1"}), 422, "deal_closed")
    reopened = _post(
        both,
        "d1",
        {
            "type": "reopened",
            "event_id": "r2",
            "to_stage": "qualification",
            "occurred_at": "2017-03-06",
        },
    )
    assert reopened.status_code == 201 and reopened.json()["status"] == "open"
    # Nothing was recorded for any refusal.
    assert both.get("/v1/deals/d1", headers=AUTH).json()["version"] == 3


@pytest.mark.parametrize(
    "body",
    [
        {"type": "opened", "event_id": "o", "pipeline_id": "default"},  # no name
        {"type": "opened", "event_id": "o", "pipeline_id": "default", "name": "x", "amount": "NaN"},
        {"type": "opened", "event_id": "o", "pipeline_id": "default", "name": "x", "amount": "-5"},
        {
            "type": "opened",
            "event_id": "o",
            "pipeline_id": "default",
            "name": "x",
            "amount": "Infinity",
        },
        {"type": "opened", "event_id": "o", "pipeline_id": "default", "name": "x", "colour": "red"},
        {
            "type": "opened",
            "event_id": "o",
            "pipeline_id": "default",
            "name": "x",
            "occurred_at": "2017-03-01T10:00:00",
        },
        {"type": "teleported", "event_id": "o"},
        {"type": "fact_recorded", "fact": "need", "value": True},  # no event_id
        {"type": "fact_recorded", "event_id": "", "fact": "need", "value": True},
        {"type": "fact_recorded", "event_id": "x" * 201, "fact": "need", "value": True},
        {"type": "lost", "event_id": "l"},
        {"type": "lost", "event_id": "l", "reason": "  "},
    ],
)
def test_422_validation_error_with_details(client: TestClient, body: dict[str, Any]) -> None:
    response = _post(client, "d1", body)
    error = _error(response, 422, "validation_error")
    assert isinstance(error.get("details"), list) and error["details"], error


def test_json_nan_literal_is_refused(client: TestClient) -> None:
    raw = b'{"type":"opened","event_id":"o","pipeline_id":"default","name":"x","amount":NaN}'
    response = client.post(
        "/v1/deals/d1/events", headers={**AUTH, "content-type": "application/json"}, content=raw
    )
    assert response.status_code in (400, 422)
    assert client.get("/v1/deals/d1", headers=AUTH).status_code == 404


@pytest.mark.parametrize(
    ("deal_id", "body"),
    [
        (
            "d1",
            {
                "type": "nurture_touch_sent",
                "event_id": "n1",
                "sequence_id": "s",
                "step": 0,
                "channel": "email",
            },
        ),
        ("d1", {"type": "escalated", "event_id": "n2", "stage": "prospecting", "level": "owner"}),
        ("d1", {"type": "flagged_stale", "event_id": "n3", "stage": "prospecting"}),
        (
            "d1",
            {
                "type": "activity_logged",
                "event_id": "n4",
                "activity": "call",
                "occurred_at": "2016-01-01",
            },
        ),
        ("bad id!", {"type": "activity_logged", "event_id": "n5", "activity": "call"}),
        ("d1", {"type": "updated", "event_id": "n6"}),
    ],
)
def test_domain_validation_errors_carry_details_too(
    client: TestClient, deal_id: str, body: dict[str, Any]
) -> None:
    """Contract: 422 `validation_error` comes `with details`, whichever layer refused the event."""
    _post(client, "d1", OPEN)
    error = _error(_post(client, deal_id, body), 422, "validation_error")
    assert isinstance(error.get("details"), list) and error["details"], error
    assert client.get("/v1/deals/d1", headers=AUTH).json()["version"] == 1


def test_money_exact_in_and_out(both: TestClient) -> None:
    raw = b'{"type":"opened","event_id":"o","pipeline_id":"default","name":"x","amount":1234567.891234}'
    r = both.post(
        "/v1/deals/m1/events", headers={**AUTH, "content-type": "application/json"}, content=raw
    )
    assert r.status_code == 201 and r.json()["amount"] == "1234567.891234"
    r2 = _post(both, "m1", {"type": "updated", "event_id": "u", "amount": "0.10"})
    assert r2.json()["amount"] == "0.10"
    assert (
        both.get("/v1/deals/m1/history", headers=AUTH).json()["events"][0]["data"]["amount"]
        == "1234567.891234"
    )


# -- 400 / 401 / 403 / 404 / 413 ------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b"null", b'"text"', b"\xff\xfe"])
def test_400_malformed_json(client: TestClient, raw: bytes) -> None:
    for path in ("/v1/deals/d1/events", "/v1/events"):
        r = client.post(path, headers={**AUTH, "content-type": "application/json"}, content=raw)
        _error(r, 400, "malformed_json")
    r = client.put(
        "/v1/pipelines/p", headers={**AUTH, "content-type": "application/json"}, content=raw
    )
    _error(r, 400, "malformed_json")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic dGVzdA=="},
        {"Authorization": "Bearer "},
        {"Authorization": TEST_TOKEN},
    ],
)
def test_401_no_or_unknown_token(client: TestClient, headers: dict[str, str]) -> None:
    for method, path in [
        ("post", "/v1/deals/d1/events"),
        ("post", "/v1/events"),
        ("get", "/v1/deals/d1"),
        ("get", "/v1/deals/d1/history"),
        ("get", "/v1/pipelines/default"),
        ("put", "/v1/pipelines/default"),
        ("get", "/v1/tokens"),
    ]:
        kwargs: dict[str, Any] = {"headers": headers}
        if method in ("post", "put"):
            kwargs["json"] = {}
        _error(getattr(client, method)(path, **kwargs), 401, "unauthorized")


def test_403_missing_scope(client: TestClient) -> None:
    reader = _token(client, "reader", ["read"])
    ingester = _token(client, "ingester", ["ingest"])
    auditor = _token(client, "auditor", ["read", "audit"])
    _post(client, "d1", OPEN)
    _error(
        _post(
            client, "d1", {"type": "activity_logged", "event_id": "a", "activity": "call"}, reader
        ),
        403,
        "forbidden",
    )
    _error(client.post("/v1/events", headers=reader, json={"events": []}), 403, "forbidden")
    _error(client.get("/v1/deals/d1", headers=ingester), 403, "forbidden")
    _error(client.get("/v1/deals/d1/history", headers=reader), 403, "forbidden")
    _error(client.get("/v1/deals/d1?as_of=2017-03-02", headers=reader), 403, "forbidden")
    _error(client.get("/v1/deals/d1?version=1", headers=reader), 403, "forbidden")
    _error(client.put("/v1/pipelines/p", headers=auditor, json={}), 403, "forbidden")
    _error(client.get("/v1/tokens", headers=auditor), 403, "forbidden")
    _error(
        client.post("/v1/tokens", headers=ingester, json={"name": "x", "scopes": ["admin"]}),
        403,
        "forbidden",
    )
    assert client.get("/v1/deals/d1", headers=reader).status_code == 200
    assert client.get("/v1/deals/d1?version=1", headers=auditor).status_code == 200
    assert client.get("/v1/deals/d1?as_of=2017-03-02", headers=auditor).status_code == 200
    assert client.get("/v1/deals/d1/history", headers=auditor).status_code == 200
    assert (
        _post(
            client, "d1", {"type": "activity_logged", "event_id": "a", "activity": "call"}, ingester
        ).status_code
        == 201
    )
    assert (
        client.get("/v1/deals/d1/history", headers=auditor).json()["events"][-1]["actor"]
        == "ingester"
    )


def test_404_unknown_deal_and_pipeline(both: TestClient) -> None:
    _error(both.get("/v1/deals/ghost", headers=AUTH), 404, "not_found")
    _error(both.get("/v1/deals/ghost/history", headers=AUTH), 404, "not_found")
    _error(both.get("/v1/deals/ghost?version=1", headers=AUTH), 404, "not_found")
    _error(
        _post(both, "ghost", {"type": "activity_logged", "event_id": "a", "activity": "call"}),
        404,
        "not_found",
    )
    _error(both.get("/v1/pipelines/nope", headers=AUTH), 404, "not_found")
    _post(both, "d1", OPEN)
    _error(both.get("/v1/deals/d1?version=2", headers=AUTH), 404, "not_found")
    _error(both.get("/v1/deals/d1?as_of=2017-02-28", headers=AUTH), 404, "not_found")


def test_413_body_too_large(sqlite_settings: StoreSettings) -> None:
    for client, _ in _client(sqlite_settings, max_body_bytes=4096):
        big = {**OPEN, "attributes": {"blob": "x" * 5000}}
        _error(_post(client, "d1", big), 413, "body_too_large")

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
            yield b'{"events": ['
            for _ in range(20):
                yield (
                    b'{"deal_id": "d1", "type": "activity_logged", "event_id": "e", "activity": "call", "summary": "'
                    + b"y" * 300
                    + b'"},'
                )
            yield b"{}]}"

        r = client.post(
            "/v1/events", headers={**AUTH, "content-type": "application/json"}, content=chunks()
        )
        _error(r, 413, "body_too_large")
        assert client.get("/v1/deals/d1", headers=AUTH).status_code == 404
        assert _post(client, "d1", OPEN).status_code == 201


# -- batch ----------------------------------------------------------------------------------------


def test_batch_per_item_results_and_highest_position(both: TestClient) -> None:
    events = [
        {"deal_id": "b1", **OPEN, "event_id": "b1-open"},
        {"deal_id": "b2", **OPEN, "event_id": "b2-open"},
        {
            "deal_id": "b1",
            "type": "stage_changed",
            "event_id": "b1-s",
            "to_stage": "qualification",
            "occurred_at": "2017-03-02",
        },
        {
            "deal_id": "b1",
            "type": "fact_recorded",
            "event_id": "b1-f",
            "fact": "contact_made",
            "value": True,
            "occurred_at": "2017-03-02",
        },
        {
            "deal_id": "b1",
            "type": "stage_changed",
            "event_id": "b1-s2",
            "to_stage": "qualification",
            "occurred_at": "2017-03-03",
        },
        {"deal_id": "b2", "type": "teleported", "event_id": "b2-x"},
        "not an object",
        {"deal_id": "bad id", "type": "activity_logged", "event_id": "b3", "activity": "call"},
        {
            "deal_id": "b1",
            "type": "fact_recorded",
            "event_id": "b1-f",
            "fact": "contact_made",
            "value": True,
            "occurred_at": "2017-03-02",
        },
    ]
    r = both.post("/v1/events", headers=AUTH, json={"events": events})
    assert r.status_code == 200, r.text
    body = r.json()
    results = body["results"]
    assert [x["index"] for x in results] == list(range(len(events)))
    assert [x["status"] for x in results] == [
        "recorded",
        "recorded",
        "rejected",
        "recorded",
        "recorded",
        "rejected",
        "rejected",
        "rejected",
        "duplicate",
    ]
    assert [x["version"] for x in results[:5]] == [1, 1, 1, 2, 3]
    assert results[8]["version"] == 2
    assert results[2]["error"]["error"] == "exit_criteria_unmet"
    assert results[2]["error"]["unmet"] == [{"stage": "prospecting", "criterion": "contact_made"}]
    assert results[5]["error"]["error"] == "validation_error"
    assert all("error" not in x for x in results if x["status"] != "rejected")
    # The highest position of the batch is the position of the last event written.
    history = both.get("/v1/deals/b1/history", headers=AUTH).json()["events"]
    assert [e["event_id"] for e in history] == ["b1-open", "b1-f", "b1-s2"]
    state = both.get("/v1/deals/b1", headers=AUTH).json()
    assert state["stage"] == "qualification"
    single = _post(
        both,
        "b2",
        {
            "type": "activity_logged",
            "event_id": "after",
            "activity": "call",
            "occurred_at": "2017-03-04",
        },
    )
    assert body["position"] is not None and single.json()["position"] == body["position"] + 1
    # Sending the whole batch again records nothing new.
    again = both.post("/v1/events", headers=AUTH, json={"events": events}).json()
    assert [x["status"] for x in again["results"]] == [
        "duplicate",
        "duplicate",
        "rejected",
        "duplicate",
        "duplicate",
        "rejected",
        "rejected",
        "rejected",
        "duplicate",
    ]
    assert both.get("/v1/deals/b1", headers=AUTH).json()["version"] == 3


def test_batch_limits(client: TestClient) -> None:
    _error(client.post("/v1/events", headers=AUTH, json={"nope": []}), 422, "validation_error")
    too_many = [
        {"deal_id": "x", "type": "activity_logged", "event_id": f"e{i}", "activity": "call"}
        for i in range(5001)
    ]
    _error(
        client.post("/v1/events", headers=AUTH, json={"events": too_many}), 422, "validation_error"
    )
    ok = client.post("/v1/events", headers=AUTH, json={"events": []})
    assert ok.status_code == 200 and ok.json()["results"] == []


def test_batch_of_5000_is_accepted(both: TestClient) -> None:
    events: list[dict[str, Any]] = []
    for d in range(250):
        events.append({"deal_id": f"bulk-{d}", **OPEN, "event_id": f"bulk-{d}-o"})
        events += [
            {
                "deal_id": f"bulk-{d}",
                "type": "activity_logged",
                "event_id": f"bulk-{d}-{k}",
                "activity": "call",
                "occurred_at": "2017-03-02",
            }
            for k in range(19)
        ]
    r = both.post("/v1/events", headers=AUTH, json={"events": events})
    assert r.status_code == 200
    assert {x["status"] for x in r.json()["results"]} == {"recorded"}
    assert both.get("/v1/deals/bulk-249", headers=AUTH).json()["version"] == 20


# -- time ------------------------------------------------------------------------------------------


def test_bare_date_means_midnight_utc_and_offsets_normalise(both: TestClient) -> None:
    r = _post(both, "t1", {**OPEN, "occurred_at": "2017-03-01"})
    assert r.json()["opened_at"] == "2017-03-01T00:00:00Z"
    _post(
        both,
        "t1",
        {
            "type": "activity_logged",
            "event_id": "a1",
            "activity": "call",
            "occurred_at": "2017-03-01T05:30:00+05:30",
        },
    )
    history = both.get("/v1/deals/t1/history", headers=AUTH).json()["events"]
    assert [e["occurred_at"] for e in history] == ["2017-03-01T00:00:00Z", "2017-03-01T00:00:00Z"]
    assert all(e["recorded_at"].endswith("Z") for e in history)
    assert both.get("/v1/deals/t1?as_of=2017-03-01", headers=AUTH).json()["version"] == 2
    assert both.get("/v1/deals/t1?as_of=2017-02-28T23:59:59Z", headers=AUTH).status_code == 404


def test_as_of_and_version_views_over_http(both: TestClient) -> None:
    _post(both, "v1", OPEN)
    _post(
        both,
        "v1",
        {
            "type": "fact_recorded",
            "event_id": "f",
            "fact": "contact_made",
            "value": True,
            "occurred_at": "2017-03-02",
        },
    )
    _post(
        both,
        "v1",
        {
            "type": "stage_changed",
            "event_id": "s",
            "to_stage": "qualification",
            "occurred_at": "2017-03-07",
        },
    )
    as_of = both.get("/v1/deals/v1?as_of=2017-03-04", headers=AUTH).json()
    assert (as_of["stage"], as_of["version"], as_of["facts"]) == (
        "prospecting",
        2,
        {"contact_made": True},
    )
    assert as_of["stale"] is False  # judged at the as-of time: 3 days into a 14-day stage
    stale = both.get("/v1/deals/v1?as_of=2017-03-06T23:00:00%2B00:00", headers=AUTH).json()
    assert stale["version"] == 2
    v1 = both.get("/v1/deals/v1?version=1", headers=AUTH).json()
    assert (v1["version"], v1["facts"]) == (1, {})
    now = both.get("/v1/deals/v1", headers=AUTH).json()
    assert (now["stage"], now["version"], now["stage_entered_at"]) == (
        "qualification",
        3,
        "2017-03-07T00:00:00Z",
    )
    _error(
        both.get("/v1/deals/v1?as_of=2017-03-04&version=1", headers=AUTH), 422, "validation_error"
    )
    _error(both.get("/v1/deals/v1?as_of=yesterday", headers=AUTH), 422, "validation_error")
    _error(both.get("/v1/deals/v1?version=0", headers=AUTH), 422, "validation_error")


def test_history_shape(client: TestClient) -> None:
    _post(client, "h1", OPEN)
    history = client.get("/v1/deals/h1/history", headers=AUTH).json()
    assert history["deal_id"] == "h1"
    event = history["events"][0]
    assert {"version", "type", "occurred_at", "recorded_at", "event_id", "actor", "data"} <= set(
        event
    )
    assert (event["type"], event["actor"], event["data"]["name"]) == (
        "opened",
        "bootstrap",
        OPEN["name"],
    )


# -- pipelines ---------------------------------------------------------------------------------------


def test_pipelines_put_get_versions(both: TestClient) -> None:
    body: dict[str, Any] = {
        "name": "Tiny",
        "currency": "EUR",
        "stages": [
            {
                "id": "a",
                "name": "A",
                "probability": 0.2,
                "exit_criteria": [{"id": "ok", "kind": "fact"}],
            },
            {"id": "b", "name": "B", "probability": 0.8},
        ],
    }
    first = both.put("/v1/pipelines/tiny", headers=AUTH, json=body)
    assert first.status_code == 200 and first.json()["version"] == 1
    same = both.put("/v1/pipelines/tiny", headers=AUTH, json=body)
    assert same.json()["version"] == 1
    body["stages"][1]["probability"] = 0.9
    assert both.put("/v1/pipelines/tiny", headers=AUTH, json=body).json()["version"] == 2
    got = both.get("/v1/pipelines/tiny", headers=AUTH).json()
    assert (got["version"], got["currency"], got["stages"][1]["probability"]) == (2, "EUR", 0.9)
    deal = _post(
        both, "t1", {"type": "opened", "event_id": "t1-o", "pipeline_id": "tiny", "name": "T"}
    ).json()
    assert (deal["currency"], deal["stage"]) == ("EUR", "a")
    bad = dict(body, stages=[body["stages"][0], body["stages"][0]])
    err = _error(both.put("/v1/pipelines/tiny", headers=AUTH, json=bad), 422, "validation_error")
    assert err["details"]
    _error(both.put("/v1/pipelines/Not_A_Slug!", headers=AUTH, json=body), 422, "validation_error")
    assert (
        both.get("/v1/pipelines/default", headers=AUTH).json()["stages"][0]["id"] == "prospecting"
    )


# -- tokens -------------------------------------------------------------------------------------------


def test_tokens_create_list_revoke(client: TestClient) -> None:
    created = client.post(
        "/v1/tokens", headers=AUTH, json={"name": "crm", "scopes": ["read", "ingest", "read"]}
    )
    assert created.status_code == 201
    token = created.json()
    assert token["scopes"] == ["ingest", "read"] and token["token"]
    headers = {"Authorization": f"Bearer {token['token']}"}
    assert _post(client, "d1", OPEN, headers).status_code == 201
    listed = client.get("/v1/tokens", headers=AUTH).json()["tokens"]
    assert [(t["name"], t["scopes"], t["revoked_at"]) for t in listed] == [
        ("crm", ["ingest", "read"], None)
    ]
    assert token["token"] not in json.dumps(listed)
    assert client.delete("/v1/tokens/crm", headers=AUTH).json()["revoked"] == 1
    _error(client.get("/v1/deals/d1", headers=headers), 401, "unauthorized")
    _error(client.delete("/v1/tokens/crm", headers=AUTH), 404, "not_found")
    _error(
        client.post("/v1/tokens", headers=AUTH, json={"name": "x", "scopes": ["root"]}),
        422,
        "validation_error",
    )
    _error(
        client.post("/v1/tokens", headers=AUTH, json={"name": "x", "scopes": []}),
        422,
        "validation_error",
    )
    _error(client.post("/v1/tokens", headers=AUTH, json={"name": "x"}), 422, "validation_error")


def test_bootstrap_token_from_environment(
    sqlite_settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEALFLOW_BOOTSTRAP_TOKEN", "from-env-secret")
    services = build_services(sqlite_settings, run_projections=False)
    try:
        with TestClient(create_app(services)) as client:
            env = {"Authorization": "Bearer from-env-secret"}
            assert _post(client, "d1", OPEN, env).status_code == 201
            for path in (
                "/v1/deals/d1",
                "/v1/deals/d1/history",
                "/v1/deals/d1?version=1",
                "/v1/tokens",
            ):
                assert client.get(path, headers=env).status_code == 200, path
            _error(client.get("/v1/deals/d1", headers=AUTH), 401, "unauthorized")
    finally:
        services.close()
    monkeypatch.delenv("DEALFLOW_BOOTSTRAP_TOKEN")
    services = build_services(sqlite_settings, run_projections=False)
    try:
        with TestClient(create_app(services)) as client:
            _error(
                client.get("/v1/deals/d1", headers={"Authorization": "Bearer from-env-secret"}),
                401,
                "unauthorized",
            )
    finally:
        services.close()


# -- OpenAPI ------------------------------------------------------------------------------------------


def test_openapi_needs_no_token_and_describes_every_contract_path(client: TestClient) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    paths = doc["paths"]
    expected = {
        "/v1/pipelines/{pipeline_id}": {"put", "get"},
        "/v1/deals/{deal_id}/events": {"post"},
        "/v1/events": {"post"},
        "/v1/deals/{deal_id}": {"get"},
        "/v1/deals": {"get"},
        "/v1/deals/{deal_id}/history": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
    params = {p["name"] for p in paths["/v1/deals/{deal_id}"]["get"]["parameters"]}
    assert {"deal_id", "as_of", "version"} <= params
    list_params = {p["name"] for p in paths["/v1/deals"]["get"].get("parameters", [])}
    assert {"pipeline_id", "stage", "status", "stale", "limit", "cursor"} <= list_params
    # The event bodies are described, with every client type.
    single = json.dumps(paths["/v1/deals/{deal_id}/events"]["post"]["requestBody"])
    schemas = json.dumps(doc.get("components", {}).get("schemas", {}))
    for type_ in (
        "opened",
        "fact_recorded",
        "updated",
        "activity_logged",
        "stage_changed",
        "won",
        "lost",
        "reopened",
    ):
        assert f'"{type_}"' in schemas, type_
    assert "$ref" in single
    # Every $ref resolves: the bodies are really described, not pointed at.
    import re

    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert refs - set(doc.get("components", {}).get("schemas", {})) == set()
    assert "requestBody" in paths["/v1/pipelines/{pipeline_id}"]["put"]
    assert "requestBody" in paths["/v1/events"]["post"]
    assert client.get("/docs").status_code == 200


def test_healthz_without_token(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    _error(client.get("/v1/deals/x"), 401, "unauthorized")


def test_sqlite_home_is_used(tmp_path: Path) -> None:
    settings = StoreSettings(database_url=None, home=tmp_path / "h")
    for client, services in _client(settings):
        assert _post(client, "d1", OPEN).status_code == 201
        assert services.settings.sqlite_path.exists()
