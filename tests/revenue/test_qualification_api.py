"""Issue 12, item 1 over HTTP on both stores: the qualification rule and the new operators in
exit criteria; unqualified deals are recorded, refused when they try to leave (naming the rule),
released by an update, and counted apart in the metrics."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.revenue.conftest import post_events

PIPELINE = {
    "name": "EU software",
    "currency": "EUR",
    "stages": [
        {
            "id": "lead",
            "name": "Lead",
            "probability": 0.1,
            "exit_criteria": [
                {"id": "dated", "kind": "field", "field": "expected_close_date", "op": "exists"},
            ],
        },
        {
            "id": "proposal",
            "name": "Proposal",
            "probability": 0.5,
            "exit_criteria": [
                {
                    "id": "this-year",
                    "kind": "field",
                    "field": "expected_close",
                    "op": "between",
                    "value": ["2017-01-01", "2017-12-31"],
                }
            ],
        },
        {"id": "closing", "name": "Closing", "probability": 0.9},
    ],
    "qualification": [
        {"id": "eu", "kind": "field", "field": "country", "op": "in", "value": ["DE", "FR", "NL"]},
        {
            "id": "vertical",
            "kind": "field",
            "field": "industry",
            "op": "in",
            "value": ["software", "medical"],
        },
        {"id": "size", "kind": "field", "field": "amount", "op": "gte", "value": 10000},
    ],
}


def _event(deal_id: str, event_id: str, type_: str, **body: object) -> dict[str, object]:
    return {"deal_id": deal_id, "event_id": event_id, "type": type_, **body}


def test_qualification_and_operators_end_to_end(client: TestClient) -> None:
    assert client.put("/v1/pipelines/eu", json=PIPELINE).status_code in (200, 201)
    results = post_events(
        client,
        [
            _event(
                "good",
                "g1",
                "opened",
                pipeline_id="eu",
                name="Good",
                country="DE",
                industry="software",
                amount="12000",
                expected_close_date="2017-03-15",
            ),
            _event(
                "far",
                "f1",
                "opened",
                pipeline_id="eu",
                name="Far",
                country="US",
                industry="retail",
                amount="50000",
            ),
        ],
    )
    assert [r["status"] for r in results] == ["recorded", "recorded"]

    far = client.get("/v1/deals/far").json()
    assert far["country"] == "US"
    assert far["qualification"] == {"qualified": False, "unmet": ["eu", "vertical"]}
    # Next best steps: the failing qualification criteria first, then the stage's criteria.
    assert [(s["kind"], s.get("criterion")) for s in far["next_steps"]] == [
        ("qualification", "eu"),
        ("qualification", "vertical"),
        ("exit_criterion", "dated"),
    ]
    board = client.get("/v1/pipelines/eu/board").json()
    cards = {d["deal_id"]: d["next_step"] for d in board["columns"][0]["deals"]}
    assert cards["far"]["text"] == "qualify: eu" and cards["good"] is None
    good = client.get("/v1/deals/good").json()
    assert good["qualification"] == {"qualified": True, "unmet": []}
    assert good["next_steps"] == []  # dated, qualified, no stage limit
    assert good["expected_close"] == "2017-03-15"

    metrics = client.get("/v1/pipelines/eu/metrics").json()
    assert (metrics["open_deals"], metrics["unqualified_deals"]) == (2, 1)
    assert metrics["unqualified_value"] == "50000.00"

    # Leaving the first stage is refused, naming the rule and its failing criteria.
    refused = client.post(
        "/v1/deals/far/events",
        json={"event_id": "f2", "type": "stage_changed", "to_stage": "proposal"},
    )
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["error"] == "exit_criteria_unmet"
    assert body["unmet"] == [
        {"rule": "qualification", "criterion": "eu"},
        {"rule": "qualification", "criterion": "vertical"},
    ]
    assert client.get("/v1/deals/far").json()["version"] == 1  # nothing recorded

    # An update that fixes one criterion leaves it unqualified; one that fixes both releases it.
    post_events(client, [_event("far", "f3", "updated", country="FR")])
    assert client.get("/v1/deals/far").json()["qualification"]["unmet"] == ["vertical"]
    post_events(
        client,
        [_event("far", "f4", "updated", industry="medical", expected_close_date="2018-02-01")],
    )
    assert client.get("/v1/deals/far").json()["qualification"]["qualified"] is True
    assert client.get("/v1/pipelines/eu/metrics").json()["unqualified_deals"] == 0

    # Now the exit criteria with the new operators decide: dated, then within 2017.
    moved = post_events(client, [_event("far", "f5", "stage_changed", to_stage="proposal")])
    assert moved[0]["status"] == "recorded"
    late = client.post(
        "/v1/deals/far/events",
        json={"event_id": "f6", "type": "stage_changed", "to_stage": "closing"},
    )
    assert late.status_code == 422
    assert late.json()["unmet"] == [{"stage": "proposal", "criterion": "this-year"}]

    # Both close-date names at once are refused; a malformed country too.
    both = client.post(
        "/v1/deals/good/events",
        json={
            "event_id": "g2",
            "type": "updated",
            "expected_close": "2017-01-01",
            "expected_close_date": "2017-01-02",
        },
    )
    assert both.status_code == 422
    bad = client.post(
        "/v1/deals/good/events", json={"event_id": "g3", "type": "updated", "country": "germany"}
    )
    assert bad.status_code == 422
    assert client.get("/v1/deals/good").json()["version"] == 1


def test_bad_operator_in_a_pipeline_is_refused(client: TestClient) -> None:
    body = {
        "name": "Bad",
        "stages": [{"id": "a", "name": "A", "probability": 0.1}],
        "qualification": [
            {"id": "x", "kind": "field", "field": "amount", "op": "between", "value": [5, 1]}
        ],
    }
    response = client.put("/v1/pipelines/bad", json=body)
    assert response.status_code == 422
    assert client.get("/v1/pipelines/bad").status_code == 404
