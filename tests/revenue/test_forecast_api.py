"""Issue 12, item 2: the forecast by expected close month, on both stores, now and as of a past
moment, checked against an independent computation from the events that were sent."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.revenue.conftest import post_events

STAGES = [
    {"id": "lead", "name": "Lead", "probability": 0.1},
    {"id": "discovery", "name": "Discovery", "probability": 0.3, "forecast_category": "pipeline"},
    {"id": "proposal", "name": "Proposal", "probability": 0.6, "forecast_category": "best_case"},
    {"id": "contract", "name": "Contract", "probability": 0.9, "forecast_category": "commit"},
    {"id": "parked", "name": "Parked", "probability": 0.05, "forecast_category": "omitted"},
]
PIPELINE = {"name": "Forecast", "currency": "EUR", "stages": STAGES}
CATEGORY = {s["id"]: s.get("forecast_category") or "pipeline" for s in STAGES}
PROBABILITY = {s["id"]: Decimal(str(s["probability"])) for s in STAGES}
MONTHS = [f"2017-{m:02d}" for m in range(1, 13)]


@dataclass
class Model:
    """What the test itself knows each deal to be (the independent side)."""

    stage: str
    amount: Decimal
    close: str | None
    status: str = "open"
    closed_month: str | None = None


def _expected(deals: dict[str, Model], target: Decimal) -> dict[str, Any]:
    rows = {}
    for month in MONTHS:
        won = [d for d in deals.values() if d.status == "won" and d.closed_month == month]
        row: dict[str, Any] = {
            "month": month,
            "closed_won": {"deals": len(won), "value": sum((d.amount for d in won), Decimal(0))},
        }
        for kind in ("commit", "best_case", "pipeline"):
            chosen = [
                d
                for d in deals.values()
                if d.status == "open"
                and d.close is not None
                and d.close[:7] == month
                and CATEGORY[d.stage] == kind
            ]
            row[kind] = {
                "deals": len(chosen),
                "value": sum((d.amount for d in chosen), Decimal(0)),
                "weighted_value": sum(
                    (d.amount * PROBABILITY[d.stage] for d in chosen), Decimal(0)
                ),
            }
        expected = row["closed_won"]["value"] + row["commit"]["value"]
        row["target"] = target
        row["gap"] = max(target - expected, Decimal(0))
        rows[month] = row
    undated = {
        kind: len(
            [
                d
                for d in deals.values()
                if d.status == "open" and d.close is None and CATEGORY[d.stage] == kind
            ]
        )
        for kind in ("commit", "best_case", "pipeline")
    }
    return {"months": rows, "undated": undated}


def _as_numbers(row: dict[str, Any]) -> dict[str, Any]:
    """The API's money strings as Decimals, to compare with the independent figures."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out[key] = {k: (v if k == "deals" else Decimal(v)) for k, v in value.items()}
        elif key in ("target", "gap"):
            out[key] = Decimal(value)
        else:
            out[key] = value
    return out


def _simulate(
    client: TestClient,
    deals: dict[str, Model],
    rng: random.Random,
    start: datetime,
    phase: str,
    n_new: int,
) -> None:
    events: list[dict[str, Any]] = []
    clock = start

    def tick() -> str:
        nonlocal clock
        clock += timedelta(minutes=7)
        return clock.isoformat()

    for i in range(n_new):
        deal_id = f"{phase}-{i}"
        amount = Decimal(rng.randrange(100, 5_000_000)) / 100
        close = (
            None
            if rng.random() < 0.2
            else f"2017-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
        )
        body: dict[str, Any] = {"pipeline_id": "fc", "name": deal_id, "amount": str(amount)}
        if close:
            body["expected_close_date"] = close
        events.append(
            {
                "deal_id": deal_id,
                "event_id": f"{deal_id}-o",
                "type": "opened",
                "occurred_at": tick(),
                **body,
            }
        )
        deals[deal_id] = Model("lead", amount, close)
    for deal_id, deal in sorted(deals.items()):
        if deal.status != "open":
            continue
        roll = rng.random()
        if roll < 0.4:
            target = rng.choice([s["id"] for s in STAGES if s["id"] != deal.stage])
            events.append(
                {
                    "deal_id": deal_id,
                    "event_id": f"{deal_id}-{phase}-m",
                    "type": "stage_changed",
                    "to_stage": target,
                    "occurred_at": tick(),
                }
            )
            deal.stage = target
        elif roll < 0.55:
            at = tick()
            events.append(
                {
                    "deal_id": deal_id,
                    "event_id": f"{deal_id}-{phase}-w",
                    "type": "won",
                    "occurred_at": at,
                }
            )
            deal.status, deal.closed_month = "won", at[:7]
        elif roll < 0.65:
            events.append(
                {
                    "deal_id": deal_id,
                    "event_id": f"{deal_id}-{phase}-l",
                    "type": "lost",
                    "reason": "budget",
                    "occurred_at": tick(),
                }
            )
            deal.status = "lost"
        elif roll < 0.8:
            close = f"2017-{rng.randrange(1, 13):02d}-15"
            events.append(
                {
                    "deal_id": deal_id,
                    "event_id": f"{deal_id}-{phase}-u",
                    "type": "updated",
                    "expected_close": close,
                    "occurred_at": tick(),
                }
            )
            deal.close = close
    results = post_events(client, events)
    assert all(r["status"] == "recorded" for r in results), results


def _check(client: TestClient, deals: dict[str, Model], as_of: str | None) -> None:
    target = Decimal("40000")
    query = "from=2017-01&to=2017-12&target=40000" + (f"&as_of={as_of}" if as_of else "")
    response = client.get(f"/v1/pipelines/fc/forecast?{query}")
    assert response.status_code == 200, response.text
    body = response.json()
    expected = _expected(deals, target)
    assert [row["month"] for row in body["months"]] == MONTHS
    for row in body["months"]:
        assert _as_numbers(row) == expected["months"][row["month"]], row["month"]
    assert {k: v["deals"] for k, v in body["undated"].items()} == expected["undated"]
    totals = _as_numbers(body["totals"])
    assert totals["commit"]["value"] == sum(
        (expected["months"][m]["commit"]["value"] for m in MONTHS), Decimal(0)
    )
    assert totals["target"] == target * 12


def test_forecast_matches_an_independent_computation_now_and_as_of(client: TestClient) -> None:
    assert client.put("/v1/pipelines/fc", json=PIPELINE).status_code in (200, 201)
    rng = random.Random(12)
    deals: dict[str, Model] = {}
    _simulate(client, deals, rng, datetime(2017, 1, 3, tzinfo=UTC), "a", 60)
    before = {k: Model(**vars(v)) for k, v in deals.items()}
    _simulate(client, deals, rng, datetime(2017, 6, 2, tzinfo=UTC), "b", 30)
    _check(client, deals, None)
    _check(client, before, "2017-05-01T00:00:00Z")
    # Something is in each category, so the comparison above is not trivially of zeros.
    assert {CATEGORY[d.stage] for d in deals.values() if d.status == "open"} >= {
        "commit",
        "best_case",
        "pipeline",
    }
    assert any(d.status == "won" for d in deals.values())


def test_forecast_input_errors(client: TestClient) -> None:
    assert client.put("/v1/pipelines/fc", json=PIPELINE).status_code in (200, 201)
    for query in (
        "from=2017-13",
        "from=2017-05&to=2017-01",
        "to=17-01&from=2017-01",
        "from=2017-01&target=-1",
        "from=2000-01&to=2030-01",
    ):
        response = client.get(f"/v1/pipelines/fc/forecast?{query}")
        assert response.status_code == 422, query
        assert response.json()["error"] == "validation_error"
    assert client.get("/v1/pipelines/nope/forecast").status_code == 404
    default = client.get("/v1/pipelines/fc/forecast?from=2017-03").json()
    assert (default["from"], default["to"], len(default["months"])) == ("2017-03", "2018-02", 12)


@pytest.mark.parametrize("target", ["1e30", "1e400", "1.0000001", "x"])
def test_forecast_and_review_refuse_targets_money_cannot_be(
    client: TestClient, target: str
) -> None:
    """These were 500s: a target past what money holds crashed the formatting."""
    assert client.put("/v1/pipelines/fc", json=PIPELINE).status_code in (200, 201)
    for path in (
        f"/v1/pipelines/fc/forecast?from=2017-01&target={target}",
        f"/v1/pipelines/fc/review?since=2017-01-01&target={target}",
    ):
        response = client.get(path)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"] == "validation_error"
