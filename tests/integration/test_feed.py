"""`GET /v1/feed` on both stores: log order, every field, definitions marked, filters,
long-poll, Server-Sent Events with Last-Event-ID, flat memory from position 0; and the
definition lists `GET /v1/pipelines` and `GET /v1/sequences`."""

from __future__ import annotations

import gc
import json
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from dealflow.http import create_app
from engine.application import Command, DealflowApp
from engine.feed import FeedFilter, FeedReader
from engine.persistence.settings import StoreSettings
from engine.services import Services
from tests.conftest import AUTH
from tests.helpers import HISTORY_FIELDS, api_services
from tests.live import dealflow_command, dealflow_env, served

PIPELINE = {
    "name": "Renewals",
    "stages": [
        {"id": "due", "name": "Due", "probability": 0.3},
        {"id": "talking", "name": "Talking", "probability": 0.6},
    ],
}
SEQUENCE = {
    "name": "Welcome",
    "steps": [{"after_days": 0, "channel": "email", "subject": "Hi {name}", "body": "..."}],
}


@pytest.fixture
def services(store_settings: StoreSettings) -> Iterator[Services]:
    with api_services(store_settings) as built:
        yield built


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services)) as c:
        yield c


def _post(client: TestClient, deal_id: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/v1/deals/{deal_id}/events", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _scenario(client: TestClient) -> None:
    assert client.put("/v1/pipelines/renewals", json=PIPELINE, headers=AUTH).status_code == 200
    assert client.put("/v1/sequences/welcome", json=SEQUENCE, headers=AUTH).status_code == 200
    _post(
        client,
        "a-1",
        {
            "type": "opened",
            "event_id": "a1",
            "pipeline_id": "default",
            "name": "A",
            "amount": "10.50",
        },
    )
    _post(
        client, "r-1", {"type": "opened", "event_id": "r1", "pipeline_id": "renewals", "name": "R"}
    )
    _post(client, "a-1", {"type": "fact_recorded", "event_id": "a2", "fact": "need", "value": True})
    _post(client, "r-1", {"type": "stage_changed", "event_id": "r2", "to_stage": "talking"})
    _post(client, "a-1", {"type": "lost", "event_id": "a3", "reason": "budget"})


def _feed(client: TestClient, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/feed", params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_feed_is_the_log_in_order_with_every_field(client: TestClient) -> None:
    _scenario(client)
    page = _feed(client, limit=5000)
    events = page["events"]
    positions = [e["position"] for e in events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert page["next_after"] == page["head"] == positions[-1] and page["has_more"] is False

    deal_events = [e for e in events if e["kind"] == "deal"]
    assert [(e["deal_id"], e["type"]) for e in deal_events] == [
        ("a-1", "opened"),
        ("r-1", "opened"),
        ("a-1", "fact_recorded"),
        ("r-1", "stage_changed"),
        ("a-1", "lost"),
    ]
    # Every field matches the deal's audited history, and the pipeline is named on every event.
    for deal_id, pipeline_id in (("a-1", "default"), ("r-1", "renewals")):
        history = client.get(f"/v1/deals/{deal_id}/history", headers=AUTH).json()["events"]
        mine = [e for e in deal_events if e["deal_id"] == deal_id]
        assert len(mine) == len(history)
        for item, past in zip(mine, history, strict=True):
            assert item["pipeline_id"] == pipeline_id
            for key in HISTORY_FIELDS:
                assert item[key] == past[key], (deal_id, key)
    assert deal_events[0]["data"]["amount"] == "10.50"

    definitions = [e for e in events if e["kind"] == "definition"]
    kinds = {(d["definition"]["kind"], d["definition"]["id"]) for d in definitions}
    assert {("pipeline", "renewals"), ("sequence", "welcome"), ("pipeline", "default")} <= kinds
    renewals = next(d for d in definitions if d["definition"]["id"] == "renewals")
    assert renewals["type"] == "pipeline_applied" and renewals["pipeline_id"] == "renewals"
    assert renewals["data"]["name"] == "Renewals" and renewals["pipeline_version"] == 1

    # Small pages walked with next_after give the same sequence as one large page.
    walked: list[dict[str, Any]] = []
    after = 0
    while True:
        small = _feed(client, after=after, limit=2)
        walked += small["events"]
        if not small["has_more"]:
            break
        after = small["next_after"]
    assert walked == events
    # Resuming from a position returns exactly what follows it.
    middle = positions[3]
    assert _feed(client, after=middle)["events"] == events[4:]


def test_feed_filters(client: TestClient) -> None:
    _scenario(client)
    renewals = _feed(client, pipeline_id="renewals")["events"]
    assert [(e["kind"], e["type"]) for e in renewals] == [
        ("definition", "pipeline_applied"),
        ("deal", "opened"),
        ("deal", "stage_changed"),
    ]
    typed = _feed(client, types="opened,lost")["events"]
    assert [(e["deal_id"], e["type"]) for e in typed] == [
        ("a-1", "opened"),
        ("r-1", "opened"),
        ("a-1", "lost"),
    ]
    assert [e["definition"]["id"] for e in _feed(client, types="sequence_applied")["events"]] == [
        "welcome"
    ]
    one = _feed(client, deal_id="a-1")
    assert [e["type"] for e in one["events"]] == ["opened", "fact_recorded", "lost"]
    assert one["has_more"] is False
    both = _feed(client, pipeline_id=["renewals", "default"], types="opened")["events"]
    assert {e["deal_id"] for e in both} == {"a-1", "r-1"}
    assert _feed(client, deal_id="nobody")["events"] == []

    bad = client.get("/v1/feed", params={"types": "opened,bogus"}, headers=AUTH)
    assert bad.status_code == 422 and bad.json()["error"] == "validation_error"
    assert "bogus" in bad.json()["message"]
    assert client.get("/v1/feed", params={"after": -1}, headers=AUTH).status_code == 422
    assert client.get("/v1/feed", params={"limit": 5001}, headers=AUTH).status_code == 422


def test_feed_needs_the_read_scope(client: TestClient, services: Services) -> None:
    ingest_only = services.tokens.create("writer", ["ingest"])
    assert client.get("/v1/feed").status_code == 401
    response = client.get("/v1/feed", headers={"Authorization": f"Bearer {ingest_only}"})
    assert response.status_code == 403 and response.json()["error"] == "forbidden"
    reader = services.tokens.create("reader", ["read"])
    assert client.get("/v1/feed", headers={"Authorization": f"Bearer {reader}"}).status_code == 200


def test_long_poll_waits_for_the_next_event(client: TestClient) -> None:
    _scenario(client)
    head = _feed(client)["head"]
    started = time.monotonic()
    empty = _feed(client, after=head, wait=0.5)
    assert empty["events"] == [] and time.monotonic() - started >= 0.45
    assert empty["next_after"] == head

    def later() -> None:
        time.sleep(0.6)
        _post(
            client,
            "late",
            {"type": "opened", "event_id": "late", "pipeline_id": "default", "name": "L"},
        )

    writer = threading.Thread(target=later)
    started = time.monotonic()
    writer.start()
    page = _feed(client, after=head, wait=10)
    waited = time.monotonic() - started
    writer.join()
    assert [e["deal_id"] for e in page["events"]] == ["late"]
    assert 0.5 <= waited < 5

    # A filtered long-poll keeps waiting through events it does not want.
    head = page["head"]

    def two_later() -> None:
        time.sleep(0.3)
        _post(
            client, "late", {"type": "fact_recorded", "event_id": "f", "fact": "x", "value": True}
        )
        time.sleep(0.3)
        _post(client, "late", {"type": "lost", "event_id": "l", "reason": "no"})

    writer = threading.Thread(target=two_later)
    writer.start()
    page = _feed(client, after=head, wait=10, types="lost")
    writer.join()
    assert [e["type"] for e in page["events"]] == ["lost"]


def _sse(
    url: str, headers: dict[str, str], count: int, params: dict[str, Any] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """Read ``count`` SSE messages (id, data) from the feed, then hang up."""
    received: list[tuple[str, dict[str, Any]]] = []
    event_id, data = "", ""
    with (
        httpx.Client(timeout=10) as http,
        http.stream(
            "GET",
            f"{url}/v1/feed",
            params=params or {},
            headers={**AUTH, "Accept": "text/event-stream", **headers},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
            elif line == "" and data:
                received.append((event_id, json.loads(data)))
                event_id, data = "", ""
                if len(received) == count:
                    break
    return received


def test_server_sent_events_resume_from_last_event_id(services: Services) -> None:
    with served(services) as url, TestClient(create_app(services)) as client:
        _scenario(client)
        everything = _feed(client)["events"]
        first = _sse(url, {}, 3)
        assert [int(i) for i, _ in first] == [e["position"] for e in everything[:3]]
        assert [d for _, d in first] == everything[:3]
        # Reconnecting with the last id seen continues right after it.
        rest = _sse(url, {"Last-Event-ID": first[-1][0]}, len(everything) - 3)
        assert [d for _, d in rest] == everything[3:]

        # A live stream delivers events written after it started.
        def later() -> None:
            time.sleep(0.5)
            _post(
                client,
                "live",
                {"type": "opened", "event_id": "live", "pipeline_id": "default", "name": "L"},
            )

        writer = threading.Thread(target=later)
        writer.start()
        live = _sse(url, {"Last-Event-ID": str(everything[-1]["position"])}, 1)
        writer.join()
        assert live[0][1]["deal_id"] == "live"
        # Filters apply to the stream too.
        lost = _sse(url, {}, 1, {"types": "lost"})
        assert lost[0][1]["type"] == "lost"
        bad = httpx.get(
            f"{url}/v1/feed",
            headers={**AUTH, "Accept": "text/event-stream", "Last-Event-ID": "x"},
        )
        assert bad.status_code == 422


def _fill(app: DealflowApp, deals: int, events_per_deal: int, prefix: str) -> None:
    batch: list[Command] = []
    for d in range(deals):
        deal_id = f"{prefix}-{d}"
        batch.append(
            Command.from_body(
                deal_id,
                {
                    "type": "opened",
                    "event_id": f"{deal_id}-o",
                    "pipeline_id": "default",
                    "name": f"Deal {d}",
                    "attributes": {"note": "x" * 200},
                },
                "filler",
            )
        )
        for e in range(events_per_deal - 1):
            batch.append(
                Command.from_body(
                    deal_id,
                    {
                        "type": "activity_logged",
                        "event_id": f"{deal_id}-{e}",
                        "activity": "call",
                        "summary": "y" * 200,
                    },
                    "filler",
                )
            )
        if len(batch) >= 4000:
            app.ingest(batch)
            batch = []
    if batch:
        app.ingest(batch)


def _peak_while_reading(app: DealflowApp) -> tuple[int, int]:
    gc.collect()
    reader = FeedReader(app, cache_size=1000)
    tracemalloc.start()
    count = 0
    for _ in reader.iterate(0, page=500):
        count += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return count, peak


@pytest.mark.slow
def test_reading_from_position_zero_has_flat_memory(services: Services) -> None:
    app = services.app
    _fill(app, 500, 6, "small")
    small_count, small_peak = _peak_while_reading(app)
    _fill(app, 5000, 6, "large")
    large_count, large_peak = _peak_while_reading(app)
    assert large_count >= 10 * small_count - 100
    # Ten times the events, about the same peak: the reader holds a page and a bounded cache.
    assert large_peak < 2 * small_peak, (small_peak, large_peak)


def test_pipeline_and_sequence_lists(client: TestClient, services: Services) -> None:
    _scenario(client)
    for n in range(5):
        body = {**PIPELINE, "name": f"Pipeline {n}"}
        assert client.put(f"/v1/pipelines/p-{n}", json=body, headers=AUTH).status_code == 200
    assert (
        client.put(
            "/v1/pipelines/p-2", json={**PIPELINE, "name": "Second"}, headers=AUTH
        ).status_code
        == 200
    )

    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        response = client.get("/v1/pipelines", params=params, headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["pipelines"]) <= 3
        seen += body["pipelines"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    ids = [p["pipeline_id"] for p in seen]
    assert ids == sorted(ids)
    assert {"default", "renewals", "p-0", "p-4"} <= set(ids)
    by_id = {p["pipeline_id"]: p for p in seen}
    assert by_id["p-2"] == {"pipeline_id": "p-2", "name": "Second", "version": 2}
    assert by_id["renewals"]["version"] == 1
    # The versions agree with GET /v1/pipelines/{id}.
    for pipeline_id in ids:
        single = client.get(f"/v1/pipelines/{pipeline_id}", headers=AUTH).json()
        assert single["version"] == by_id[pipeline_id]["version"]

    sequences = client.get("/v1/sequences", headers=AUTH).json()
    assert sequences == {
        "sequences": [{"sequence_id": "welcome", "name": "Welcome", "version": 1}],
        "next_cursor": None,
    }
    ingest_only = services.tokens.create("writer", ["ingest"])
    assert (
        client.get("/v1/pipelines", headers={"Authorization": f"Bearer {ingest_only}"}).status_code
        == 403
    )
    schema = client.get("/openapi.json").json()
    for path in ("/v1/feed", "/v1/pipelines", "/v1/sequences"):
        assert "get" in schema["paths"][path]


def test_pipelines_list_command(store_settings: StoreSettings) -> None:
    with api_services(store_settings) as services, TestClient(create_app(services)) as client:
        _scenario(client)
        body = {**PIPELINE, "name": "Renewals, again"}
        assert client.put("/v1/pipelines/renewals", json=body, headers=AUTH).status_code == 200
    env = dealflow_env(store_settings.home, store_settings.database_url)
    dealflow = dealflow_command()
    listed = subprocess.run(
        [*dealflow, "pipelines", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    by_id = {r["pipeline_id"]: r for r in rows}
    assert by_id["renewals"] == {"pipeline_id": "renewals", "name": "Renewals, again", "version": 2}
    assert "default" in by_id and [r["pipeline_id"] for r in rows] == sorted(by_id)
    table = subprocess.run(
        [*dealflow, "pipelines", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert table.returncode == 0 and "Renewals, again" in table.stdout
    assert table.stdout.splitlines()[0].split() == ["PIPELINE", "VERSION", "NAME"]


def test_one_deal_page_names_its_pipeline_for_a_reader_that_never_saw_the_opening(
    services: Services, client: TestClient
) -> None:
    """Read with ``deal_id`` from after the deal's ``opened`` by a fresh reader (a restarted
    process): the events still name their pipeline, so a pipeline filter still finds them."""
    opened = _post(
        client,
        "late-1",
        {"type": "opened", "event_id": "l1", "pipeline_id": "default", "name": "L"},
    )
    _post(
        client, "late-1", {"type": "fact_recorded", "event_id": "l2", "fact": "need", "value": True}
    )
    for pipeline_ids in ((), ("default",)):
        reader = FeedReader(services.app)  # knows no deal yet
        filters = FeedFilter.build(deal_id="late-1", pipeline_ids=pipeline_ids)
        events = reader.page(opened["position"], 100, filters).events
        assert [(e["type"], e["deal_id"], e["pipeline_id"]) for e in events] == [
            ("fact_recorded", "late-1", "default")
        ], pipeline_ids


def test_a_tiny_name_cache_names_every_event_as_a_large_one_does(services: Services) -> None:
    """Deals met on an earlier page and pushed out of the cache are named again, and a page with
    more deals than the cache holds names all of them."""
    app = services.app
    app.ingest(
        [
            Command.from_body(
                f"tiny-{d}",
                {
                    "type": "opened",
                    "event_id": f"tiny-{d}-o",
                    "pipeline_id": "default",
                    "name": "T",
                },
                "tester",
            )
            for d in range(12)
        ]
    )
    for e in range(3):  # one call a round, so that the deals' events interleave in the log
        app.ingest(
            [
                Command.from_body(
                    f"tiny-{d}",
                    {"type": "activity_logged", "event_id": f"tiny-{d}-{e}", "activity": "call"},
                    "tester",
                )
                for d in range(12)
            ]
        )
    tiny = list(FeedReader(app, cache_size=2).iterate(0, page=7))
    large = list(FeedReader(app).iterate(0, page=7))
    deal_items = [item for item in tiny if item["kind"] == "deal"]
    assert len(deal_items) == 48
    assert all(item["deal_id"].startswith("tiny-") for item in deal_items)
    assert all(item["pipeline_id"] == "default" for item in deal_items)
    assert tiny == large
