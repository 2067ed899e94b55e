"""Regression tests for issue 9's defects at the edge: what a store cannot hold, sizes, loose
types, plain-text 500s. Each runs on both stores: both must answer the same."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from engine.domain.errors import NotFound
from engine.limits import limits
from engine.persistence.settings import StoreSettings
from engine.services import Services
from tests.hardening.conftest import AUTH, TestClient, live_client
from tests.workflows.conftest import sequence_body


@pytest.fixture
def client(store_settings: StoreSettings) -> Iterator[tuple[TestClient, Services]]:
    with live_client(store_settings) as pair:
        yield pair


def _opened(event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "opened",
        "event_id": event_id,
        "pipeline_id": "default",
        "name": "Deal",
        **fields,
    }


def _count(services: Services, deal_id: str) -> int:
    try:
        return len(services.app.history(deal_id)["events"])
    except NotFound:
        return 0


def _batch(client: TestClient, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = client.post("/v1/events", json={"events": events}, headers=AUTH)
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


# -- defect 8: NUL and other text no store can hold -------------------------------------------


def test_nul_in_an_event_is_refused_alone(client: tuple[TestClient, Services]) -> None:
    http, services = client
    response = http.post("/v1/deals/n1/events", json=_opened("n1", name="a\u0000b"), headers=AUTH)
    assert response.status_code == 422, response.text
    assert "NUL" in response.json()["message"]
    assert "name" in response.json()["message"]
    # A lone surrogate, escaped as JSON allows (PostgreSQL cannot store it either).
    raw = '{"type":"opened","event_id":"n1","pipeline_id":"default","name":"a\\ud800"}'
    lone = http.post(
        "/v1/deals/n1/events",
        content=raw,
        headers={**AUTH, "content-type": "application/json"},
    )
    assert lone.status_code == 422, lone.text
    results = _batch(
        http,
        [
            {"deal_id": "n2", **_opened("n2", attributes={"k\u0000": 1})},
            {"deal_id": "n3", **_opened("n3")},
        ],
    )
    assert [r["status"] for r in results] == ["rejected", "recorded"]
    assert _count(services, "n1") == 0 and _count(services, "n2") == 0
    # The read side is not poisoned: a later write and a pipeline PUT still work.
    pipeline = http.get("/v1/pipelines/default", headers=AUTH).json()
    definition = {k: v for k, v in pipeline.items() if k not in ("pipeline_id", "version")}
    put = http.put("/v1/pipelines/default", json=definition, headers=AUTH)
    assert put.status_code in (200, 201), put.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/outbox?deal_id=%00"),
        ("GET", "/v1/deals?stage=%00"),
        ("GET", "/v1/audit/verify?deal_id=%00"),
        ("GET", "/v1/deals/a%00b"),
        ("GET", "/v1/deals?stage=%ff"),
        ("DELETE", "/v1/tokens/%00"),
    ],
)
def test_unstorable_parameters_are_a_422(
    client: tuple[TestClient, Services], method: str, path: str
) -> None:
    http, _ = client
    response = http.request(method, path, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error"


def test_nul_in_a_token_name_is_refused(client: tuple[TestClient, Services]) -> None:
    http, _ = client
    response = http.post("/v1/tokens", json={"name": "x\u0000", "scopes": ["read"]}, headers=AUTH)
    assert response.status_code == 422, response.text


# -- defect 3: integers beyond 64 bits, metrics targets ---------------------------------------


def test_integers_beyond_64_bits_reject_only_their_item(
    client: tuple[TestClient, Services],
) -> None:
    http, services = client
    single = http.post(
        "/v1/deals/i1/events", json=_opened("i1", attributes={"n": 2**70}), headers=AUTH
    )
    assert single.status_code == 422, single.text
    assert "64 bits" in single.json()["message"]
    results = _batch(
        http,
        [
            {"deal_id": "i2", **_opened("i2", attributes={"deep": [{"n": -(2**64)}]})},
            {"deal_id": "i3", **_opened("i3", expected_version=2**64)},
            {"deal_id": "i4", **_opened("i4", attributes={"n": 2**63 - 1})},
        ],
    )
    assert [r["status"] for r in results] == ["rejected", "rejected", "recorded"]
    assert _count(services, "i4") == 1


@pytest.mark.parametrize("target", ["1e30", "1e400", "-0", " 5 ", "1_000"])
def test_metrics_target_must_be_an_amount(client: tuple[TestClient, Services], target: str) -> None:
    http, _ = client
    response = http.get("/v1/pipelines/default/metrics", params={"target": target}, headers=AUTH)
    assert response.status_code == 422, response.text
    ok = http.get("/v1/pipelines/default/metrics", params={"target": "1000.50"}, headers=AUTH)
    assert ok.status_code == 200 and ok.json()["target"] == "1000.50"


# -- defect 1: sizes ----------------------------------------------------------------------------


def test_event_and_attribute_sizes_are_bounded(client: tuple[TestClient, Services]) -> None:
    http, services = client
    big = "x" * (limits().max_attributes_bytes + 1)
    response = http.post(
        "/v1/deals/s1/events", json=_opened("s1", attributes={"blob": big}), headers=AUTH
    )
    assert response.status_code == 422, response.text
    assert "DEALFLOW_MAX_ATTRIBUTES_BYTES" in response.json()["message"]
    huge = "x" * (limits().max_event_bytes + 1)
    response = http.post("/v1/deals/s1/events", json=_opened("s1", summary=huge), headers=AUTH)
    assert response.status_code == 422 and "DEALFLOW_MAX_EVENT_BYTES" in response.text
    results = _batch(
        http,
        [
            {"deal_id": "s2", **_opened("s2", attributes={"blob": big})},
            {"deal_id": "s3", **_opened("s3", attributes={"blob": "y" * 1000})},
        ],
    )
    assert [r["status"] for r in results] == ["rejected", "recorded"]
    assert _count(services, "s1") == 0 and _count(services, "s2") == 0


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize(("events", "size"), [(1, 6_000_000), (40, 250_000)])
def test_large_writes_cannot_stop_every_write(
    pg_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, events: int, size: int
) -> None:
    """A 6 MB event or 40 x 250 kB (within raised limits) used to hang on the pipelined INSERT
    while holding the table lock. Now both are written, and a small write goes through after."""
    monkeypatch.setenv("DEALFLOW_MAX_EVENT_BYTES", str(8_000_000))
    monkeypatch.setenv("DEALFLOW_MAX_ATTRIBUTES_BYTES", str(8_000_000))
    limits.cache_clear()
    try:
        settings = StoreSettings(database_url=pg_url, home=tmp_path)
        with live_client(settings, max_body_bytes=64 * 1024 * 1024) as (http, services):
            answers: list[Any] = []
            body = {
                "events": [
                    {"deal_id": f"L{i}", **_opened(f"L{i}", attributes={"blob": "y" * size})}
                    for i in range(events)
                ]
            }
            sender = threading.Thread(
                target=lambda: answers.append(http.post("/v1/events", json=body, headers=AUTH))
            )
            sender.start()
            sender.join(30)
            assert not sender.is_alive(), "the large write hung"
            assert answers[0].status_code == 200, answers[0].text[:300]
            assert {r["status"] for r in answers[0].json()["results"]} == {"recorded"}
            small = http.post("/v1/deals/after/events", json=_opened("after"), headers=AUTH)
            assert small.status_code == 201
            assert _count(services, "L0") == 1
    finally:
        limits.cache_clear()


# -- defect 5: business time and amounts --------------------------------------------------------


def test_far_future_business_time_is_refused_configurably(
    client: tuple[TestClient, Services], monkeypatch: pytest.MonkeyPatch
) -> None:
    http, services = client
    far = http.post(
        "/v1/deals/t1/events", json=_opened("t1", occurred_at="9999-12-31"), headers=AUTH
    )
    assert far.status_code == 422 and "DEALFLOW_MAX_CLOCK_SKEW" in far.text
    assert http.post("/v1/deals/t1/events", json=_opened("t1"), headers=AUTH).status_code == 201
    activity = {"type": "activity_logged", "event_id": "t1-a", "activity": "call"}
    assert http.post("/v1/deals/t1/events", json=activity, headers=AUTH).status_code == 201
    monkeypatch.setenv("DEALFLOW_MAX_CLOCK_SKEW", str(10 * 366 * 86400))
    limits.cache_clear()
    try:
        later = http.post(
            "/v1/deals/t2/events", json=_opened("t2", occurred_at="2030-01-01"), headers=AUTH
        )
        assert later.status_code == 201, later.text
    finally:
        limits.cache_clear()
    assert _count(services, "t1") == 2


@pytest.mark.parametrize("amount", [" 5 ", "1_000", "-0", "-0.0", -0.0, "1e3", True, "+5"])
def test_loose_amounts_are_refused(client: tuple[TestClient, Services], amount: Any) -> None:
    http, services = client
    response = http.post("/v1/deals/m1/events", json=_opened("m1", amount=amount), headers=AUTH)
    assert response.status_code == 422, response.text
    assert _count(services, "m1") == 0


@pytest.mark.parametrize("when", [1_700_000_000, 1_700_000_000_000, "1700000000", 1.5])
def test_epoch_numbers_are_not_times(client: tuple[TestClient, Services], when: Any) -> None:
    http, _ = client
    response = http.post("/v1/deals/e1/events", json=_opened("e1", occurred_at=when), headers=AUTH)
    assert response.status_code == 422, response.text
    assert "ISO 8601" in response.text


def test_exact_amounts_still_accepted(client: tuple[TestClient, Services]) -> None:
    http, _ = client
    for n, amount in enumerate(["1200", "1200.50", 1200, 0]):
        response = http.post(
            f"/v1/deals/ok{n}/events", json=_opened(f"ok{n}", amount=amount), headers=AUTH
        )
        assert response.status_code == 201, response.text


# -- defects 10 and 11 ------------------------------------------------------------------------


def test_405_keeps_the_allow_header(client: tuple[TestClient, Services]) -> None:
    http, _ = client
    response = http.delete("/v1/pipelines/default", headers=AUTH)
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    # Starlette names the methods of the route that matched the path (PUT here).
    assert "PUT" in response.headers["allow"]


@pytest.mark.parametrize("hour", [False, "9", 9.0])
def test_definitions_do_not_coerce_types(client: tuple[TestClient, Services], hour: Any) -> None:
    http, _ = client
    window = {"timezone": "UTC", "weekdays": [1, 2, 3, 4, 5], "start_hour": hour, "end_hour": 17}
    response = http.put(
        "/v1/sequences/strict", json=sequence_body([0], send_window=window), headers=AUTH
    )
    assert response.status_code == 422, response.text
    window["start_hour"] = 9
    response = http.put(
        "/v1/sequences/strict", json=sequence_body([0, 2.5], send_window=window), headers=AUTH
    )
    assert response.status_code in (200, 201), response.text


# -- defect 7: loose identifiers ----------------------------------------------------------------


@pytest.mark.parametrize(
    "event_id",
    ["pad ", " pad", "a\x7fb", "a\x85b", "abc\u202e", "cafe\u0301", "a\u2066b"],
)
def test_loose_event_ids_are_refused(client: tuple[TestClient, Services], event_id: str) -> None:
    http, services = client
    response = http.post("/v1/deals/k1/events", json=_opened(event_id), headers=AUTH)
    assert response.status_code == 422, response.text
    assert "event_id" in response.text
    assert _count(services, "k1") == 0


def test_padded_and_plain_keys_no_longer_collide(client: tuple[TestClient, Services]) -> None:
    http, services = client
    assert http.post("/v1/deals/k2/events", json=_opened("pad"), headers=AUTH).status_code == 201
    padded = {"type": "activity_logged", "event_id": "pad ", "activity": "call"}
    response = http.post("/v1/deals/k2/events", json=padded, headers=AUTH)
    assert response.status_code == 422 and "whitespace" in response.text  # not key_reused
    nfc = http.post("/v1/deals/k3/events", json=_opened("caf\u00e9"), headers=AUTH)
    assert nfc.status_code == 201, nfc.text
    assert _count(services, "k2") == 1 and _count(services, "k3") == 1


# -- defect 6 (part): a 401 says how to authenticate ---------------------------------------------


def test_401_carries_www_authenticate(client: tuple[TestClient, Services]) -> None:
    http, _ = client
    missing = http.get("/v1/deals")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="dealflow"'
    wrong = http.get("/v1/deals", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
