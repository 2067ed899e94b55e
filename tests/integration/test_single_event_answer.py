"""The single-event answer is built from the deal ``ingest`` just decided (no second read of the
history), and a replay (read back from the history) answers the very same body, for every type
a sender can write, on both stores."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from engine.application import DealflowApp
from engine.persistence.settings import StoreSettings
from tests.hardening.conftest import AUTH, TestClient, live_client
from tests.helpers import command

FACTS = ["contact_made", "need", "budget", "authority", "timeline", "verbal_commit"]
STEPS: list[dict[str, Any]] = [
    {
        "type": "opened",
        "pipeline_id": "default",
        "name": "Every field",
        "amount": "1200.50",
        "currency": "EUR",
        "owner": "Ann",
        "account": "Acme",
        "industry": "retail",
        "lead_source": "web",
        "decision_maker_role": "cfo",
        "expected_close": "2024-06-30",
        "attributes": {"tier": "gold", "seats": 12, "ratio": 0.25, "nested": {"x": None}},
        "occurred_at": "2024-01-01T09:00:00Z",
    },
    *[{"type": "fact_recorded", "fact": f, "value": True, "note": f} for f in FACTS],
    {
        "type": "updated",
        "amount": "99.999999",
        "expected_close": "2024-07-01",
        "attributes": {"tier": None, "seats": 13, "deep": {"list": [1, 2.5, "x", True]}},
        "owner": None,
    },
    {"type": "stage_changed", "to_stage": "qualification"},
    {"type": "stage_changed", "to_stage": "meeting"},
    {"type": "activity_logged", "activity": "demo", "summary": "went well"},
    {"type": "stage_changed", "to_stage": "proposal"},
    {"type": "activity_logged", "activity": "proposal"},
    {"type": "stage_changed", "to_stage": "negotiation"},
    {"type": "stage_changed", "to_stage": "contract"},
    {"type": "fact_recorded", "fact": "contract_signed", "value": True},
    {"type": "won", "amount": "2000.10"},  # opens the post-purchase follow-up in the same batch
    {"type": "reopened", "to_stage": "proposal"},
    {"type": "stage_changed", "to_stage": "prospecting"},  # backward
    {"type": "lost", "reason": "budget cut"},
]


@pytest.fixture
def client(store_settings: StoreSettings) -> Iterator[TestClient]:
    with live_client(store_settings) as (test_client, _):
        yield test_client


def test_first_answer_and_replay_are_the_same_body_for_every_sender_type(
    client: TestClient,
) -> None:
    for i, step in enumerate(STEPS):
        body = {**step, "event_id": f"step-{i}"}
        first = client.post("/v1/deals/every/events", headers=AUTH, json=body)
        assert first.status_code == 201, (step, first.text)
        assert first.json()["version"] == len(
            client.get("/v1/deals/every/history", headers=AUTH).json()["events"]
        )
        replay = client.post("/v1/deals/every/events", headers=AUTH, json=body)
        assert replay.status_code == 200 and replay.headers["Idempotent-Replay"] == "true"
        assert replay.json() == first.json(), step["type"]
    final = client.get("/v1/deals/every", headers=AUTH).json()
    assert (final["status"], final["lost_reason"]) == ("lost", "budget cut")


def test_outcome_carries_the_decided_deal_only_where_it_is_exact(app: DealflowApp) -> None:
    opened = {"type": "opened", "pipeline_id": "default", "name": "Two steps"}
    outcomes = app.ingest(
        [
            command("two", opened),
            command("two", {"type": "activity_logged", "activity": "call"}),
            command("other", opened),
        ]
    )
    first, second, other = outcomes
    # A later event of the same batch moved "two" on: the first outcome has no exact deal.
    assert first.deal is None
    assert second.deal is not None and second.deal.version == second.version == 2
    assert other.deal is not None and other.deal.deal_id == "other"
    assert all("deal" not in o.to_dict(i) for i, o in enumerate(outcomes))
    again = app.ingest([command("two", {"type": "activity_logged", "activity": "call"})])[0]
    assert again.deal is not None
    assert app.recorded_state(again.deal) == app.recorded_state(app.deal("two"))
