"""A model-based test of the HTTP contract: hypothesis drives the API with random sequences of
writes, resends, reused keys, stale ``expected_version``s, batches and reads, and checks every
answer against a small reference model of the contract kept here. Runs on both stores.

The model knows one pipeline: ``s1`` (exit criterion: the fact ``ok`` recorded true) → ``s2``
→ ``s3``; won and lost close a deal, ``reopened`` opens it again.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from engine.persistence.settings import StoreSettings
from tests.conftest import AUTH
from tests.hardening.conftest import live_client

STAGES = ("s1", "s2", "s3")
PIPELINE = {
    "name": "Model",
    "stages": [
        {
            "id": "s1",
            "name": "One",
            "probability": 0.1,
            "exit_criteria": [{"id": "ok", "kind": "fact"}],
        },
        {"id": "s2", "name": "Two", "probability": 0.5},
        {"id": "s3", "name": "Three", "probability": 0.9},
    ],
}


@dataclass
class DealModel:
    version: int = 1
    stage: str = "s1"
    status: str = "open"
    facts: dict[str, bool] = field(default_factory=dict)


@dataclass
class Sent:
    """A write the model accepted: resending it must replay, reusing its key must be refused."""

    deal_id: str
    body: dict[str, Any]
    answer: dict[str, Any] | None  # the single-event answer (None when sent in a batch)
    version: int


class Contract:
    """What the contract says an event does to the model (or which error it gets)."""

    def __init__(self) -> None:
        self.deals: dict[str, DealModel] = {}
        self.sent: dict[str, Sent] = {}  # event_id -> first accepted send

    def outcome(self, deal_id: str, body: dict[str, Any]) -> tuple[str, str | None]:
        """("recorded" | "duplicate" | "rejected", error code or None), applying it if recorded."""
        first = self.sent.get(body["event_id"])
        if first is not None:
            same = first.deal_id == deal_id and first.body == body
            return ("duplicate", None) if same else ("rejected", "idempotency_key_reused")
        error = self._check(deal_id, body)
        if error is not None:
            return "rejected", error
        self._apply(deal_id, body)
        return "recorded", None

    def _check(self, deal_id: str, body: dict[str, Any]) -> str | None:
        deal = self.deals.get(deal_id)
        kind = body["type"]
        if kind == "opened":
            return "deal_exists" if deal is not None else None
        if deal is None:
            return "not_found"
        if body.get("expected_version") is not None and body["expected_version"] != deal.version:
            return "version_conflict"
        if kind == "reopened":
            return None if deal.status != "open" else "invalid_transition"
        if deal.status != "open":
            return "deal_closed"
        if kind == "stage_changed":
            target = body["to_stage"]
            if target == deal.stage:
                return "invalid_transition"
            forward = STAGES.index(target) > STAGES.index(deal.stage)
            if forward and deal.stage == "s1" and not deal.facts.get("ok"):
                return "exit_criteria_unmet"
        if kind == "won" and deal.stage == "s1" and not deal.facts.get("ok"):
            return "exit_criteria_unmet"
        return None

    def _apply(self, deal_id: str, body: dict[str, Any]) -> None:
        kind = body["type"]
        if kind == "opened":
            self.deals[deal_id] = DealModel()
            return
        deal = self.deals[deal_id]
        deal.version += 1
        if kind == "fact_recorded":
            deal.facts[body["fact"]] = body["value"]
        elif kind == "stage_changed":
            deal.stage = body["to_stage"]
        elif kind in ("won", "lost"):
            deal.status = kind
        elif kind == "reopened":
            deal.status, deal.stage = "open", body["to_stage"]


def bodies(deal_version: int | None) -> st.SearchStrategy[dict[str, Any]]:
    stale = st.one_of(st.none(), st.integers(0, 8), st.just(deal_version))
    return st.one_of(
        st.builds(lambda: {"type": "opened", "pipeline_id": "model", "name": "Deal"}),
        st.builds(
            lambda v, e: {"type": "fact_recorded", "fact": "ok", "value": v, "expected_version": e},
            st.booleans(),
            stale,
        ),
        st.builds(
            lambda s, e: {"type": "stage_changed", "to_stage": s, "expected_version": e},
            st.sampled_from(STAGES),
            stale,
        ),
        st.just({"type": "won"}),
        st.just({"type": "lost", "reason": "budget"}),
        st.builds(lambda s: {"type": "reopened", "to_stage": s}, st.sampled_from(STAGES)),
    )


def _clean(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


def machine_for(client: Any) -> type[RuleBasedStateMachine]:
    counter = itertools.count()

    class ContractMachine(RuleBasedStateMachine):
        sent = Bundle("sent")

        @initialize()
        def start(self) -> None:
            self.model = Contract()
            self.prefix = uuid.uuid4().hex[:8]
            self.deal_ids = [f"{self.prefix}-d{i}" for i in range(3)]

        def _event_id(self) -> str:
            return f"{self.prefix}-e{next(counter)}"

        def _single(self, deal_id: str, body: dict[str, Any]) -> tuple[str, Any]:
            expected, code = self.model.outcome(deal_id, body)
            response = client.post(f"/v1/deals/{deal_id}/events", headers=AUTH, json=body)
            if expected == "recorded":
                assert response.status_code == 201, (body, response.text)
                answer = response.json()
                assert answer["version"] == self.model.deals[deal_id].version
                self.model.sent[body["event_id"]] = Sent(deal_id, body, answer, answer["version"])
            elif expected == "duplicate":
                first = self.model.sent[body["event_id"]]
                assert response.status_code == 200, (body, response.text)
                assert response.headers.get("idempotent-replay") == "true"
                if first.answer is not None:
                    assert response.json() == first.answer
                else:
                    assert response.json()["version"] == first.version
            else:
                assert response.status_code in (404, 409, 422), (body, response.text)
                assert response.json()["error"] == code, (body, code, response.text)
            return expected, response

        @rule(target=sent, deal=st.integers(0, 2), data=st.data())
        def write(self, deal: int, data: st.DataObject) -> Any:
            deal_id = self.deal_ids[deal]
            model = self.model.deals.get(deal_id)
            body = {
                **_clean(data.draw(bodies(model.version if model else None))),
                "event_id": self._event_id(),
            }
            expected, _ = self._single(deal_id, body)
            return body["event_id"] if expected == "recorded" else None

        @rule(event_id=sent)
        def resend(self, event_id: str | None) -> None:
            if event_id is None:
                return
            first = self.model.sent[event_id]
            self._single(first.deal_id, dict(first.body))

        @rule(event_id=consumes(sent), deal=st.integers(0, 2))
        def reuse_the_key_for_another_event(self, event_id: str | None, deal: int) -> None:
            if event_id is None:
                return
            body = {"type": "activity_logged", "activity": "call", "event_id": event_id}
            self._single(self.deal_ids[deal], body)

        @rule(data=st.data(), size=st.integers(1, 6))
        def batch(self, data: st.DataObject, size: int) -> None:
            items, expected = [], []
            for _ in range(size):
                deal_id = self.deal_ids[data.draw(st.integers(0, 2))]
                if self.model.sent and data.draw(st.booleans()):
                    event_id = data.draw(st.sampled_from(sorted(self.model.sent)))
                    first = self.model.sent[event_id]
                    deal_id, body = first.deal_id, dict(first.body)
                else:
                    model = self.model.deals.get(deal_id)
                    body = {
                        **_clean(data.draw(bodies(model.version if model else None))),
                        "event_id": self._event_id(),
                    }
                status, code = self.model.outcome(deal_id, body)
                if status == "recorded":
                    version = self.model.deals[deal_id].version
                    self.model.sent[body["event_id"]] = Sent(deal_id, body, None, version)
                expected.append((status, code))
                items.append({"deal_id": deal_id, **body})
            response = client.post("/v1/events", headers=AUTH, json={"events": items})
            assert response.status_code == 200, response.text
            results = response.json()["results"]
            got = [(r["status"], (r.get("error") or {}).get("error")) for r in results]
            assert got == expected, (items, got, expected)

        @invariant()
        def reads_agree_with_the_model(self) -> None:
            if not hasattr(self, "model"):
                return
            for deal_id in self.deal_ids:
                model = self.model.deals.get(deal_id)
                response = client.get(f"/v1/deals/{deal_id}", headers=AUTH)
                if model is None:
                    assert response.status_code == 404
                    continue
                state = response.json()
                assert (state["version"], state["stage"], state["status"]) == (
                    model.version,
                    model.stage,
                    model.status,
                ), deal_id
                assert state["facts"] == model.facts
                history = client.get(f"/v1/deals/{deal_id}/history", headers=AUTH).json()
                assert [e["version"] for e in history["events"]] == list(
                    range(1, model.version + 1)
                )

    return ContractMachine


@pytest.mark.slow
def test_the_api_follows_the_contract_model(store_settings: StoreSettings) -> None:
    with live_client(store_settings) as (client, _):
        assert client.put("/v1/pipelines/model", headers=AUTH, json=PIPELINE).status_code == 200
        run_state_machine_as_test(
            machine_for(client),
            settings=settings(
                max_examples=20,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                derandomize=False,
            ),
        )
