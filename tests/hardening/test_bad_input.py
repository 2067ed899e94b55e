"""Bad input changes nothing: each malformed request gets its contract error code, and the
event log position (``services.app.max_position()``) does not move."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.persistence.settings import StoreSettings
from engine.services import Services
from tests.hardening.conftest import AUTH, TestClient, live_client

DEAL = "bad-input-1"
JSON = {**AUTH, "content-type": "application/json"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Services]]:
    settings = StoreSettings(database_url=None, home=Path(tmp_path_factory.mktemp("bad")))
    # A 1 MB limit keeps the 413 cases cheap; the default limit is checked on its own below.
    with live_client(settings, max_body_bytes=1024 * 1024) as (client, services):
        opened = client.post(
            f"/v1/deals/{DEAL}/events",
            json={"type": "opened", "event_id": "bad-open", "pipeline_id": "default", "name": "B"},
            headers=AUTH,
        )
        assert opened.status_code == 201, opened.text
        yield client, services


def _event(**fields: Any) -> dict[str, Any]:
    return {"type": "updated", "event_id": "bad-evt", **fields}


def _nested(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth):
        node["a"] = {}
        node = node["a"]
    return root


def _batch(n: int) -> dict[str, Any]:
    return {
        "events": [
            {"deal_id": DEAL, "type": "activity_logged", "event_id": f"big-{i}", "activity": "call"}
            for i in range(n)
        ]
    }


def _raw(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


# (id, path, body, status, error code)
SINGLE = f"/v1/deals/{DEAL}/events"
CASES: list[tuple[str, str, Any, int, str]] = [
    ("truncated-json", SINGLE, b'{"type": "updated", ', 400, "malformed_json"),
    ("not-an-object", SINGLE, b'[{"type": "updated"}]', 400, "malformed_json"),
    ("empty-body", SINGLE, b"", 400, "malformed_json"),
    (
        "invalid-utf8",
        SINGLE,
        b'{"type": "updated", "event_id": "x", "name": "\xff"}',
        400,
        "malformed_json",
    ),
    ("amount-word", SINGLE, _event(amount="lots"), 422, "validation_error"),
    ("amount-negative", SINGLE, _event(amount="-1"), 422, "validation_error"),
    ("amount-string-NaN", SINGLE, _event(amount="NaN"), 422, "validation_error"),
    ("amount-string-Infinity", SINGLE, _event(amount="Infinity"), 422, "validation_error"),
    ("amount-string-sNaN", SINGLE, _event(amount="sNaN"), 422, "validation_error"),
    (
        "amount-huge-exponent",
        SINGLE,
        b'{"type":"updated","event_id":"x","amount":1e999999}',
        422,
        "validation_error",
    ),
    ("amount-object", SINGLE, _event(amount={"value": 1}), 422, "validation_error"),
    (
        "fact-value-list",
        SINGLE,
        {"type": "fact_recorded", "event_id": "x", "fact": "need", "value": [1]},
        422,
        "validation_error",
    ),
    ("name-number", SINGLE, _event(name=42), 422, "validation_error"),
    ("currency-lowercase", SINGLE, _event(currency="usd"), 422, "validation_error"),
    ("unknown-field", SINGLE, _event(colour="red"), 422, "validation_error"),
    ("unknown-type", SINGLE, {"type": "deleted", "event_id": "x"}, 422, "validation_error"),
    ("missing-type", SINGLE, {"event_id": "x", "name": "n"}, 422, "validation_error"),
    ("missing-event-id", SINGLE, {"type": "updated", "name": "n"}, 422, "validation_error"),
    ("empty-event-id", SINGLE, _event(event_id=""), 422, "validation_error"),
    ("event-id-201-chars", SINGLE, _event(event_id="e" * 201), 422, "validation_error"),
    (
        "naive-occurred-at",
        SINGLE,
        _event(occurred_at="2017-03-01T00:00:00"),
        422,
        "validation_error",
    ),
    ("occurred-at-garbage", SINGLE, _event(occurred_at="last tuesday"), 422, "validation_error"),
    ("expected-version-negative", SINGLE, _event(expected_version=-1), 422, "validation_error"),
    (
        "deal-id-with-spaces",
        "/v1/deals/a%20deal/events",
        {"type": "opened", "event_id": "x", "pipeline_id": "default", "name": "n"},
        422,
        "validation_error",
    ),
    (
        "deal-id-201-chars",
        f"/v1/deals/{'d' * 201}/events",
        {"type": "opened", "event_id": "x", "pipeline_id": "default", "name": "n"},
        422,
        "validation_error",
    ),
    (
        "opened-unknown-pipeline",
        "/v1/deals/new-deal-x/events",
        {"type": "opened", "event_id": "x", "pipeline_id": "nope", "name": "n"},
        422,
        "validation_error",
    ),
    (
        "opened-existing-deal",
        SINGLE,
        {"type": "opened", "event_id": "x2", "pipeline_id": "default", "name": "n"},
        409,
        "deal_exists",
    ),
    (
        "stage-unknown",
        SINGLE,
        {"type": "stage_changed", "event_id": "x", "to_stage": "nowhere"},
        422,
        "invalid_transition",
    ),
    (
        "nurture_enrolled-from-client",
        SINGLE,
        {"type": "nurture_enrolled", "event_id": "x", "sequence_id": "s", "sequence_version": 1},
        422,
        "validation_error",
    ),
    (
        "nurture_touch_sent-from-client",
        SINGLE,
        {
            "type": "nurture_touch_sent",
            "event_id": "x",
            "sequence_id": "s",
            "step": 0,
            "channel": "email",
        },
        422,
        "validation_error",
    ),
    (
        "nurture_stopped-from-client",
        SINGLE,
        {"type": "nurture_stopped", "event_id": "x", "sequence_id": "s", "reason": "reply"},
        422,
        "validation_error",
    ),
    (
        "escalated-from-client",
        SINGLE,
        {"type": "escalated", "event_id": "x", "stage": "prospecting", "level": "owner"},
        422,
        "validation_error",
    ),
    (
        "flagged_stale-from-client",
        SINGLE,
        {"type": "flagged_stale", "event_id": "x", "stage": "prospecting"},
        422,
        "validation_error",
    ),
    ("batch-events-not-a-list", "/v1/events", {"events": "all of them"}, 422, "validation_error"),
    ("batch-missing-events", "/v1/events", {"items": []}, 422, "validation_error"),
    ("batch-6000-events", "/v1/events", _batch(6000), 422, "validation_error"),
    ("body-over-limit", SINGLE, _event(name="x" * 2 * 1024 * 1024), 413, "body_too_large"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_refused_and_nothing_recorded(
    world: tuple[TestClient, Services], path: str, body: Any, status: int, code: str
) -> None:
    client, services = world
    before = services.app.max_position()
    response = client.post(path, content=_raw(body), headers=JSON)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["error"] == code, payload
    assert isinstance(payload.get("message"), str)
    assert services.app.max_position() == before


# Batch items that are each rejected: the batch answers 200, every item "rejected", nothing recorded.
REJECTED_ITEMS: list[tuple[str, dict[str, Any]]] = [
    ("item-not-an-object", {"events": [1, "two", None]}),
    (
        "item-deal-id-with-spaces",
        {
            "events": [
                {
                    "deal_id": "a deal",
                    "type": "activity_logged",
                    "event_id": "r1",
                    "activity": "call",
                }
            ]
        },
    ),
    (
        "item-missing-deal-id",
        {"events": [{"type": "activity_logged", "event_id": "r2", "activity": "call"}]},
    ),
    (
        "item-automation-types",
        {
            "events": [
                {
                    "deal_id": DEAL,
                    "type": "flagged_stale",
                    "event_id": "r3",
                    "stage": "prospecting",
                },
                {
                    "deal_id": DEAL,
                    "type": "escalated",
                    "event_id": "r4",
                    "stage": "prospecting",
                    "level": "owner",
                },
                {
                    "deal_id": DEAL,
                    "type": "nurture_touch_sent",
                    "event_id": "r5",
                    "sequence_id": "s",
                    "step": 0,
                    "channel": "email",
                },
            ]
        },
    ),
    (
        "item-naive-time",
        {
            "events": [
                {
                    "deal_id": DEAL,
                    "type": "activity_logged",
                    "event_id": "r6",
                    "activity": "call",
                    "occurred_at": "2017-03-01T10:00:00",
                }
            ]
        },
    ),
    (
        "item-amount-NaN",
        {"events": [{"deal_id": DEAL, "type": "updated", "event_id": "r7", "amount": "NaN"}]},
    ),
    (
        "item-unknown-deal",
        {
            "events": [
                {
                    "deal_id": "never-opened",
                    "type": "activity_logged",
                    "event_id": "r8",
                    "activity": "call",
                }
            ]
        },
    ),
]


@pytest.mark.parametrize("body", [b for _, b in REJECTED_ITEMS], ids=[i for i, _ in REJECTED_ITEMS])
def test_batch_items_rejected_and_nothing_recorded(
    world: tuple[TestClient, Services], body: dict[str, Any]
) -> None:
    client, services = world
    before = services.app.max_position()
    response = client.post("/v1/events", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == list(range(len(body["events"])))
    for result in results:
        assert result["status"] == "rejected", result
        assert isinstance(result["error"]["error"], str) and result["error"]["message"], result
    assert services.app.max_position() == before


def test_streamed_body_over_the_limit_is_413(world: tuple[TestClient, Services]) -> None:
    """No Content-Length (chunked): the limit is enforced while reading."""
    client, services = world
    before = services.app.max_position()
    chunk = b" " * 65536

    def body() -> Iterator[bytes]:
        yield b'{"type": "updated", "event_id": "stream", "name": "'
        for _ in range(40):  # 2.5 MB
            yield chunk
        yield b'"}'

    response = client.post(SINGLE, content=body(), headers=JSON)
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "body_too_large"
    assert services.app.max_position() == before


def test_20_mb_body_is_413_under_the_default_limit(sqlite_settings: StoreSettings) -> None:
    with live_client(sqlite_settings) as (client, services):
        before = services.app.max_position()
        response = client.post(
            "/v1/events", content=b'{"events": [' + b" " * (20 * 1024 * 1024) + b"]}", headers=JSON
        )
        assert response.status_code == 413, response.text
        assert response.json()["error"] == "body_too_large"
        assert services.app.max_position() == before


# -- once bugs (each was a 500, or silently altered data); now regression tests --------------

BUGS: list[tuple[str, str, bytes, set[int], str]] = [
    (
        "deeply-nested-json",
        SINGLE,
        b"[" * 100_000,
        {400},
        "bug: json.loads RecursionError is not caught in read_json_object -> 500",
    ),
    (
        "deeply-nested-attributes",
        SINGLE,
        _raw(_event(event_id="deep-1", attributes=_nested(300))),
        {422},
        "bug: orjson 'Recursion limit reached' (TypeError) in request_hash -> 500",
    ),
    (
        "deeply-nested-attributes-in-batch",
        "/v1/events",
        _raw({"events": [{"deal_id": DEAL, **_event(event_id="deep-2", attributes=_nested(300))}]}),
        {200, 422},
        "bug: orjson TypeError in request_hash escapes the batch's DomainError handler -> 500",
    ),
    (
        "occurred-at-before-year-1-in-utc",
        SINGLE,
        _raw(_event(event_id="t-1", occurred_at="0001-01-01T00:00:00+14:00")),
        {422},
        "bug: OverflowError in _to_aware_datetime (astimezone) is not a ValueError -> 500",
    ),
    (
        "occurred-at-after-year-9999-in-utc",
        SINGLE,
        _raw(_event(event_id="t-2", occurred_at="9999-12-31T23:59:59-14:00")),
        {422},
        "bug: OverflowError in _to_aware_datetime (astimezone) is not a ValueError -> 500",
    ),
    (
        "NaN-literal-in-attributes",
        SINGLE,
        b'{"type": "updated", "event_id": "nan-1", "attributes": {"ratio": NaN}}',
        {400, 422},
        "bug: NaN/Infinity are not JSON; json.loads accepts them and the event is recorded "
        "with the value silently turned into null",
    ),
    (
        "Infinity-literal-in-attributes",
        SINGLE,
        b'{"type": "updated", "event_id": "inf-1", "attributes": {"ratio": -Infinity}}',
        {400, 422},
        "bug: NaN/Infinity are not JSON; json.loads accepts them and the event is recorded "
        "with the value silently turned into null",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "statuses"),
    [pytest.param(*b[1:4], id=b[0]) for b in BUGS],
)
def test_refused_cleanly(
    world: tuple[TestClient, Services], path: str, body: bytes, statuses: set[int]
) -> None:
    client, services = world
    before = services.app.max_position()
    response = client.post(path, content=body, headers=JSON)
    assert response.status_code in statuses, response.text
    if response.status_code == 200:
        assert all(r["status"] == "rejected" for r in response.json()["results"])
    else:
        assert response.json()["error"] in {"malformed_json", "validation_error"}
    assert services.app.max_position() == before


def test_version_beyond_int64_is_not_a_500(world: tuple[TestClient, Services]) -> None:
    client, _ = world
    response = client.get(f"/v1/deals/{DEAL}", params={"version": 2**63}, headers=AUTH)
    assert response.status_code in {404, 422}, response.text


def test_event_id_with_nul_is_refused(store_settings: StoreSettings) -> None:
    with live_client(store_settings) as (client, services):
        opened = client.post(
            f"/v1/deals/{DEAL}/events",
            json={"type": "opened", "event_id": "o", "pipeline_id": "default", "name": "N"},
            headers=AUTH,
        )
        assert opened.status_code == 201
        before = services.app.max_position()
        response = client.post(SINGLE, json=_event(event_id="a\x00b", name="n"), headers=AUTH)
        assert response.status_code == 422, response.text
        assert services.app.max_position() == before
