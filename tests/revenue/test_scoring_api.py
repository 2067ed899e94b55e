"""Issue 12, item 5 on both stores: point rules while too few deals are closed, then a model
learned from the closed deals (recorded, versioned, reproducible), its score and reasons on the
deal, and the open deals sorted by score."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from engine.scoring.history import closed_samples
from engine.scoring.model import predict
from engine.scoring.service import MODEL, train, train_model
from engine.services import Services
from tests.revenue.conftest import post_events

PIPELINE = {
    "name": "Scored",
    "stages": [
        {"id": "lead", "name": "Lead", "probability": 0.2},
        {"id": "deal", "name": "Deal", "probability": 0.6},
    ],
    "scoring": {
        "min_closed_deals": 40,
        "base": 40,
        "rules": [
            {
                "id": "big",
                "points": 25,
                "when": {
                    "id": "big",
                    "kind": "field",
                    "field": "amount",
                    "op": "gte",
                    "value": 10000,
                },
            },
            {
                "id": "retail",
                "points": -15,
                "when": {
                    "id": "retail",
                    "kind": "field",
                    "field": "industry",
                    "op": "in",
                    "value": ["retail"],
                },
            },
        ],
    },
}
T0 = datetime(2017, 1, 2, tzinfo=UTC)


def _opened(deal_id: str, industry: str, amount: str, at: datetime) -> dict[str, Any]:
    return {
        "deal_id": deal_id,
        "event_id": f"{deal_id}-o",
        "type": "opened",
        "pipeline_id": "sc",
        "name": deal_id,
        "industry": industry,
        "amount": amount,
        "occurred_at": at.isoformat(),
    }


def _history(n: int) -> list[dict[str, Any]]:
    """``n`` closed deals with a known signal: software wins 4 of 5, retail 1 of 5."""
    events = []
    for i in range(n):
        industry = "software" if i % 2 else "retail"
        won = (i // 2) % 5 != 0 if industry == "software" else (i // 2) % 5 == 0
        at = T0 + timedelta(days=i)
        events.append(_opened(f"h{i}", industry, "5000", at))
        close = {"type": "won"} if won else {"type": "lost", "reason": "no"}
        events.append(
            {
                "deal_id": f"h{i}",
                "event_id": f"h{i}-c",
                "occurred_at": (at + timedelta(days=10)).isoformat(),
                **close,
            }
        )
    return events


def test_rules_then_a_recorded_model(served: tuple[TestClient, Services]) -> None:
    client, services = served
    app = services.app
    assert client.put("/v1/pipelines/sc", json=PIPELINE).status_code in (200, 201)
    now = datetime.now(UTC)
    post_events(
        client,
        [
            _opened("big-soft", "software", "20000", now - timedelta(days=3)),
            _opened("small-retail", "retail", "500", now - timedelta(days=2)),
            _opened("small-soft", "software", "500", now - timedelta(days=1)),
        ],
    )
    post_events(client, _history(20))

    # 20 closed deals < 40: the point rules, and the answer says so.
    big = client.get("/v1/deals/big-soft").json()
    assert (big["score"], big["score_kind"], big["score_model"]) == (65, "rules", None)
    assert big["score_reasons"] == [{"rule": "big", "points": 25}]
    retail = client.get("/v1/deals/small-retail").json()
    assert (retail["score"], retail["score_reasons"]) == (25, [{"rule": "retail", "points": -15}])
    assert train(app, "sc")["status"] == "too_few"

    post_events(
        client,
        [
            {
                **e,
                "deal_id": e["deal_id"].replace("h", "k"),
                "event_id": e["event_id"].replace("h", "k"),
            }
            for e in _history(40)
        ],
    )
    result = train(app, "sc")
    assert (result["status"], result["version"], result["deals"]) == ("trained", 1, 60)
    # Unchanged history: the same model, the same version.
    assert train(app, "sc")["version"] == 1

    soft = client.get("/v1/deals/small-soft").json()
    retail = client.get("/v1/deals/small-retail").json()
    assert soft["score_kind"] == retail["score_kind"] == "model"
    assert soft["score_model"] == {"pipeline_id": "sc", "version": 1}
    assert soft["score"] > retail["score"]
    by_feature = {r["feature"]: r for r in soft["score_reasons"]}
    assert by_feature["industry"]["value"] == "software"
    assert by_feature["industry"]["contribution"] > 0
    assert {r["feature"]: r for r in retail["score_reasons"]}["industry"]["contribution"] < 0
    assert len(soft["score_reasons"]) <= 5

    # An auditor redoes the score from the recorded model and the recorded inputs.
    version, body = app.get_definition(MODEL, "sc", 1)
    probability, _ = predict(body["params"], soft["score_inputs"])
    assert round(probability, 6) == soft["score_probability"]
    assert round(100 * probability) == soft["score"]
    # ... and the training itself: the same samples give the same recorded body.
    samples, _ = closed_samples(app, "sc")
    again = train_model(samples)
    assert again["params"] == body["params"]
    assert again["trained_on"] == body["trained_on"]

    listed = client.get("/v1/deals?pipeline_id=sc&sort=score").json()
    scores = [d["score"] for d in listed["deals"]]
    assert [d["deal_id"] for d in listed["deals"]][0] in ("big-soft", "small-soft")
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert listed["model"] == {"pipeline_id": "sc", "version": 1}
    page = client.get("/v1/deals?pipeline_id=sc&sort=score&limit=2").json()
    rest = client.get(f"/v1/deals?pipeline_id=sc&sort=score&limit=2&cursor={page['next_cursor']}")
    assert [d["deal_id"] for d in page["deals"] + rest.json()["deals"]] == [
        d["deal_id"] for d in listed["deals"]
    ]
    assert client.get("/v1/deals?sort=score").status_code == 422
    assert client.get("/v1/deals?pipeline_id=sc&sort=score&stale=true").status_code == 422

    # A closed deal is not scored; one more closed deal makes a new model version.
    closed = client.get("/v1/deals/h1").json()
    assert (closed["score"], closed["score_kind"]) == (None, "closed")
    post_events(client, [{"deal_id": "small-soft", "event_id": "ss-w", "type": "won"}])
    assert train(app, "sc")["version"] == 2


def test_samples_are_the_deal_just_before_it_closed(served: tuple[TestClient, Services]) -> None:
    client, services = served
    assert client.put("/v1/pipelines/sc", json=PIPELINE).status_code in (200, 201)
    at = T0.isoformat()
    later = (T0 + timedelta(days=5)).isoformat()
    post_events(
        client,
        [
            # A fact recorded at the instant of the win says nothing the model may learn from.
            _opened("same", "software", "100", T0),
            {
                "deal_id": "same",
                "event_id": "s-f",
                "type": "fact_recorded",
                "fact": "budget",
                "value": True,
                "occurred_at": later,
            },
            {"deal_id": "same", "event_id": "s-w", "type": "won", "occurred_at": later},
            # One recorded earlier is part of what the deal was.
            _opened("before", "retail", "100", T0),
            {
                "deal_id": "before",
                "event_id": "b-f",
                "type": "fact_recorded",
                "fact": "budget",
                "value": True,
                "occurred_at": at,
            },
            {
                "deal_id": "before",
                "event_id": "b-a",
                "type": "activity_logged",
                "activity": "call",
                "occurred_at": (T0 + timedelta(days=1)).isoformat(),
            },
            {
                "deal_id": "before",
                "event_id": "b-l",
                "type": "lost",
                "reason": "x",
                "occurred_at": later,
            },
        ],
    )
    samples = {s.deal_id: s for s in closed_samples(services.app, "sc")[0]}
    assert samples["same"].won and samples["same"].features["facts"] == 0
    assert not samples["before"].won
    assert (samples["before"].features["facts"], samples["before"].features["activities"]) == (1, 1)
    assert samples["before"].features["days_in_stage"] == 5.0
