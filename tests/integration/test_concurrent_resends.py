"""Resends racing their original (issue 9, defect 2): a retry that arrives while the original is
still in flight gets the replay answer, never the refusal the original's own effect would cause.

Twenty clients send the same request at the same moment to a served API (uvicorn, real
threads), on SQLite and on PostgreSQL. Exactly one records; the other nineteen answer as
replays (200 with ``Idempotent-Replay: true``, the same body; in a batch, ``duplicate``).
Before the fix, some answered ``409 deal_exists``, ``422 invalid_transition`` or
``422 deal_closed``: they read the idempotency keys before the original committed and the deal
after it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from engine.persistence.settings import StoreSettings
from tests.conftest import AUTH
from tests.helpers import api_services
from tests.live import served

CLIENTS = 20
ROUNDS = 3


@pytest.fixture
def api(store_settings: StoreSettings) -> Iterator[str]:
    """The whole app, served on a free port of this machine."""
    with api_services(store_settings) as services, served(services) as url:
        yield url


def _all_at_once(base: str, path: str, body: dict[str, Any]) -> list[httpx.Response]:
    """POST the same body from CLIENTS threads, released together, each on its own connection."""
    barrier = threading.Barrier(CLIENTS)
    responses: list[httpx.Response | None] = [None] * CLIENTS
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with httpx.Client(base_url=base, headers=AUTH, timeout=60) as client:
                client.get("/healthz")  # connect first, so the sends leave together
                barrier.wait()
                responses[i] = client.post(path, json=body)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return [r for r in responses if r is not None]


def _one_recorded_the_rest_replayed(responses: list[httpx.Response], what: str) -> None:
    answers = sorted((r.status_code, r.text[:200]) for r in responses if r.status_code != 200)
    assert [status for status, _ in answers] == [201], f"{what}: {answers}"
    first = next(r for r in responses if r.status_code == 201)
    for replay in (r for r in responses if r.status_code == 200):
        assert replay.headers.get("Idempotent-Replay") == "true", what
        assert replay.json() == first.json(), what


def test_simultaneous_identical_single_events_answer_as_replays(api: str) -> None:
    for r in range(ROUNDS):
        deal = f"resend-{r}"
        bursts: list[tuple[str, dict[str, Any]]] = [
            # A resend that sees the deal: 409 deal_exists before the fix.
            (
                "opened",
                {
                    "type": "opened",
                    "event_id": f"o-{r}",
                    "pipeline_id": "default",
                    "name": "Racing deal",
                    "stage": "qualification",
                },
            ),
            # ... that sees the deal in that stage already: 422 invalid_transition.
            (
                "stage_changed",
                {"type": "stage_changed", "event_id": f"s-{r}", "to_stage": "prospecting"},
            ),
            # ... that sees the deal closed: 422 deal_closed.
            ("lost", {"type": "lost", "event_id": f"l-{r}", "reason": "no budget"}),
        ]
        for what, body in bursts:
            responses = _all_at_once(api, f"/v1/deals/{deal}/events", body)
            _one_recorded_the_rest_replayed(responses, f"round {r}, {what}")
        with httpx.Client(base_url=api, headers=AUTH) as client:
            history = client.get(f"/v1/deals/{deal}/history").json()["events"]
        assert [e["event_id"] for e in history] == [f"o-{r}", f"s-{r}", f"l-{r}"]


def test_simultaneous_identical_batches_mark_items_duplicate(api: str) -> None:
    for r in range(ROUNDS):
        deal = f"batch-{r}"
        batch = {
            "events": [
                {
                    "deal_id": deal,
                    "type": "opened",
                    "event_id": f"bo-{r}",
                    "pipeline_id": "default",
                    "name": "Racing batch deal",
                },
                {
                    "deal_id": deal,
                    "type": "fact_recorded",
                    "event_id": f"bf-{r}",
                    "fact": "contact_made",
                    "value": True,
                },
                {"deal_id": deal, "type": "lost", "event_id": f"bl-{r}", "reason": "went quiet"},
            ]
        }
        responses = _all_at_once(api, "/v1/events", batch)
        assert {r.status_code for r in responses} == {200}, [r.text[:200] for r in responses]
        for index in range(3):
            items = [response.json()["results"][index] for response in responses]
            statuses = sorted(item["status"] for item in items)
            assert statuses == ["duplicate"] * (CLIENTS - 1) + ["recorded"], (r, index, items)
            assert {item["version"] for item in items} == {index + 1}
        with httpx.Client(base_url=api, headers=AUTH) as client:
            history = client.get(f"/v1/deals/{deal}/history").json()["events"]
        assert [e["event_id"] for e in history] == [f"bo-{r}", f"bf-{r}", f"bl-{r}"]
