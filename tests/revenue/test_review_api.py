"""Issue 12, item 6 on both stores: the pipeline review as of a past moment, its figures checked
against what the test sent, in JSON, text and HTML; and `dealflow review`/`forecast`/`scoring`
on the command line agree with the HTTP answers."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from engine.services import Services
from tests.live import dealflow_env
from tests.revenue.conftest import post_events

PIPELINE = {
    "name": "Weekly",
    "currency": "EUR",
    "stages": [
        {"id": "lead", "name": "Lead", "probability": 0.1, "max_days_in_stage": 10},
        {"id": "demo", "name": "Demo", "probability": 0.4, "max_days_in_stage": 5},
        {"id": "close", "name": "Close", "probability": 0.8, "forecast_category": "commit"},
    ],
    "review": {"monthly_target": "10000", "near_limit_days": 2},
}
START = datetime(2017, 3, 1, tzinfo=UTC)
SINCE = datetime(2017, 3, 20, tzinfo=UTC)
UNTIL = datetime(2017, 3, 27, tzinfo=UTC)


def _at(days: float) -> str:
    return (START + timedelta(days=days)).isoformat()


def _scenario() -> list[dict[str, Any]]:
    def opened(deal: str, owner: str, day: float, amount: str = "1000") -> dict[str, Any]:
        return {
            "deal_id": deal,
            "event_id": f"{deal}-o",
            "type": "opened",
            "pipeline_id": "wk",
            "name": deal.title(),
            "owner": owner,
            "amount": amount,
            "occurred_at": _at(day),
            "expected_close": "2017-03-30",
        }

    def event(deal: str, tag: str, day: float, **body: Any) -> dict[str, Any]:
        return {"deal_id": deal, "event_id": f"{deal}-{tag}", "occurred_at": _at(day), **body}

    return [
        # Before the period: opened long ago, stale in lead by the end (limit 10 days).
        opened("old", "Ann", 0),
        # Opened before, moved forward during the period, then won during it.
        opened("mover", "Bob", 2, "3000"),
        event("mover", "m1", 21, type="stage_changed", to_stage="demo"),
        event("mover", "m2", 22, type="stage_changed", to_stage="close"),
        event("mover", "w", 23, type="won"),
        # Opened during the period, lost during it.
        opened("quick", "Ann", 20),
        event("quick", "l", 21, type="lost", reason="budget"),
        # Opened during the period; in demo (limit 5) for 4.5 days at the end: near its limit.
        opened("fresh", "Bob", 21, "500"),
        event("fresh", "m", 21.5, type="stage_changed", to_stage="demo"),
        # Opened during the period, in close (commit), no limit: not stuck.
        opened("sure", "Cy", 19.5, "2000"),
        event("sure", "m", 20, type="stage_changed", to_stage="demo"),
        event("sure", "n", 20.5, type="stage_changed", to_stage="close"),
        # After the period: not in this review.
        opened("future", "Ann", 27),
        event("future", "w", 28, type="won"),
    ]


def test_review_as_of_a_past_moment(served: tuple[TestClient, Services]) -> None:
    client, services = served
    assert client.put("/v1/pipelines/wk", json=PIPELINE).status_code in (200, 201)
    post_events(client, _scenario())
    query = f"since={SINCE.isoformat()}&as_of={UNTIL.isoformat()}".replace("+", "%2B")
    response = client.get(f"/v1/pipelines/wk/review?{query}")
    assert response.status_code == 200, response.text
    digest = response.json()

    assert digest["since"] == "2017-03-20T00:00:00Z" and digest["until"] == "2017-03-27T00:00:00Z"
    moved = [
        (d["deal_id"], d["from_stage"], d["to_stage"]) for d in digest["moved_forward"]["deals"]
    ]
    assert moved == [
        ("sure", "lead", "demo"),
        ("sure", "demo", "close"),
        ("mover", "lead", "demo"),
        ("fresh", "lead", "demo"),
        ("mover", "demo", "close"),
    ]
    closed = digest["closed"]
    assert (closed["won"], closed["lost"], closed["won_value"]) == (1, 1, "3000.00")
    assert [(d["deal_id"], d["status"]) for d in closed["deals"]] == [
        ("quick", "lost"),
        ("mover", "won"),
    ]
    new = digest["new_deals"]
    assert [d["deal_id"] for d in new["deals"]] == ["sure", "quick", "fresh"]
    assert (new["count"], new["value"]) == (3, "3500.00")
    stuck = digest["stuck"]
    assert (stuck["count"], stuck["stale"], stuck["near_limit"]) == (2, 1, 1)
    by_owner = {
        g["owner"]: [(d["deal_id"], d["stale"]) for d in g["deals"]] for g in stuck["by_owner"]
    }
    assert by_owner == {"Ann": [("old", True)], "Bob": [("fresh", False)]}
    fresh = stuck["by_owner"][[g["owner"] for g in stuck["by_owner"]].index("Bob")]["deals"][0]
    assert fresh["days_left"] == 0.5
    march = digest["forecast"]["months"][0]
    assert march["month"] == "2017-03"
    assert (march["closed_won"], march["commit"], march["target"]) == (
        "3000.00",
        "2000.00",
        "10000.00",
    )
    assert march["gap"] == "5000.00"
    assert [d["deal_id"] for d in digest["top_scored"]["deals"]] == ["fresh", "old", "sure"]
    assert {d["score_kind"] for d in digest["top_scored"]["deals"]} == {"none"}

    text = client.get(f"/v1/pipelines/wk/review?{query}&format=text").text
    assert text.startswith("Pipeline review: Weekly (wk), 2017-03-20 to 2017-03-27")
    assert "Closed: 1 won (3,000.00 EUR), 1 lost" in text and "Moved forward: 5" in text
    html = client.get(f"/v1/pipelines/wk/review?{query}&format=html")
    assert html.headers["content-type"].startswith("text/html")
    assert "<h2>Stuck: 2 (1 stale, 1 near their limit)</h2>" in html.text

    assert (
        client.get(f"/v1/pipelines/wk/review?since={UNTIL.date()}&as_of={SINCE.date()}").status_code
        == 422
    )
    assert client.get("/v1/pipelines/nope/review").status_code == 404

    # The command line reads the same store and prints the same digest and forecast.
    store = services.app.settings
    env = dealflow_env(store.home, store.database_url)
    out = _cli(
        env,
        "review",
        "--pipeline",
        "wk",
        "--since",
        SINCE.isoformat(),
        "--as-of",
        UNTIL.isoformat(),
        "--json",
    )
    assert {k: v for k, v in json.loads(out).items() if k != "position"} == {
        k: v for k, v in digest.items() if k != "position"
    }
    forecast = client.get(
        f"/v1/pipelines/wk/forecast?from=2017-03&to=2017-04&as_of={UNTIL.isoformat()}".replace(
            "+", "%2B"
        )
    ).json()
    out = _cli(
        env,
        "forecast",
        "--pipeline",
        "wk",
        "--from",
        "2017-03",
        "--to",
        "2017-04",
        "--as-of",
        UNTIL.isoformat(),
        "--json",
    )
    assert {k: v for k, v in json.loads(out).items() if k != "position"} == {
        k: v for k, v in forecast.items() if k != "position"
    }
    trained = json.loads(_cli(env, "scoring", "train", "--pipeline", "wk", "--json"))
    assert trained[0]["status"] == "too_few" and trained[0]["deals"] == 3


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dealflow.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
