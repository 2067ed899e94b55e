"""The read side over HTTP: the contract's shapes, scopes and errors, the pipeline-in-use guard,
and the pipeline as of any past moment (issue 5): snapshots of the board and the metrics taken
live while a stream is replayed equal what ``as_of`` answers later."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dealflow.bench.synthetic import stream
from dealflow.http import create_app
from dealflow.runtime import build_services
from engine.persistence.settings import StoreSettings
from tests.conftest import AUTH, TEST_TOKEN

PIPELINE = {
    "name": "Snapshot pipeline",
    "currency": "EUR",
    "qualified_after": "qualify",
    "stages": [
        {"id": "lead", "name": "Lead", "probability": 0.1, "max_days_in_stage": 30},
        # A stay limit of about 26 ms, so deals turn stale while the stream is being replayed.
        {"id": "qualify", "name": "Qualify", "probability": 0.2, "max_days_in_stage": 0.0000003},
        {"id": "demo", "name": "Demo", "probability": 0.4},
        {"id": "proposal", "name": "Proposal", "probability": 0.6, "max_days_in_stage": 20},
        {"id": "closing", "name": "Closing", "probability": 0.9},
    ],
}


@pytest.fixture
def client(store_settings: StoreSettings) -> Iterator[TestClient]:
    services = build_services(store_settings, bootstrap_token=TEST_TOKEN, run_projections=True)
    with TestClient(create_app(services)) as test_client:
        test_client.headers.update(AUTH)
        assert test_client.put("/v1/pipelines/snap", json=PIPELINE).status_code in (200, 201)
        yield test_client
    services.close()


def _without_position(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "position"}


def _post(
    client: TestClient, items: list[tuple[str, dict[str, Any]]], live_time: bool = True
) -> int:
    events = []
    for deal_id, body in items:
        event = {"deal_id": deal_id, **body}
        if live_time:
            event.pop("occurred_at")  # business time = now: the stream is replayed "live"
        events.append(event)
    response = client.post("/v1/events", json={"events": events})
    assert response.status_code == 200, response.text
    assert all(r["status"] == "recorded" for r in response.json()["results"])
    return int(response.json()["position"])


def test_board_and_metrics_as_of_equal_the_live_snapshots(client: TestClient) -> None:
    pairs = list(stream(40, seed=21, pipeline_id="snap", wave=40, prefix="snap"))
    snapshots = []
    for start in range(0, len(pairs), 45):
        position = _post(client, pairs[start : start + 45])
        time.sleep(0.05)  # let the deals that just entered "qualify" outstay its limit
        waited = client.get(f"/v1/projections/wait?position={position}&timeout=20").json()
        assert waited["reached"] is True
        snapshot = {
            "metrics": client.get("/v1/pipelines/snap/metrics?target=100000").json(),
            "board": client.get("/v1/pipelines/snap/board?limit=100").json(),
            "breakdown": client.get("/v1/pipelines/snap/metrics/breakdown?by=industry").json(),
            "deals": client.get("/v1/deals?pipeline_id=snap&limit=500").json(),
        }
        assert all(body["as_of"].endswith("Z") for body in snapshot.values())
        snapshots.append(snapshot)
    assert len(snapshots) >= 5
    assert any(s["metrics"]["stale_deals"] for s in snapshots)
    assert any(s["metrics"]["won"] for s in snapshots) and any(
        s["metrics"]["lost"] for s in snapshots
    )
    for snapshot in snapshots:
        for name, url in (
            ("metrics", "/v1/pipelines/snap/metrics?target=100000"),
            ("board", "/v1/pipelines/snap/board?limit=100"),
            ("breakdown", "/v1/pipelines/snap/metrics/breakdown?by=industry"),
            ("deals", "/v1/deals?pipeline_id=snap&limit=500"),
        ):
            at = snapshot[name]["as_of"]
            later = client.get(f"{url}&as_of={at}").json()
            assert _without_position(later) == _without_position(snapshot[name]), (name, at)


def test_shapes_scopes_and_errors(client: TestClient) -> None:
    position = _post(
        client, list(stream(40, seed=2, pipeline_id="snap", prefix="shape")), live_time=False
    )
    assert client.get(f"/v1/projections/wait?position={position}&timeout=20").json()["reached"]
    projections = client.get("/v1/projections").json()
    assert projections["projections"][0]["name"] == "deals"
    assert {"position", "lag"} <= set(projections["projections"][0])
    metrics = client.get(
        "/v1/pipelines/snap/metrics?closed_from=2023-01-01&closed_to=2024-01-01"
    ).json()
    contract = {
        "open_deals",
        "open_value",
        "weighted_value",
        "qualified_leads",
        "won",
        "lost",
        "won_value",
        "win_rate",
        "conversion_rate",
        "avg_days_to_close_won",
        "median_days_to_close_won",
        "avg_open_deal_age_days",
        "stale_deals",
        "stages",
    }
    assert contract <= set(metrics)
    assert {
        "stage",
        "open_deals",
        "open_value",
        "weighted_value",
        "avg_days_in_stage",
        "entered",
        "advanced",
        "conversion_rate",
        "stale_deals",
    } <= set(metrics["stages"][0])
    assert isinstance(metrics["open_value"], str) and "coverage_ratio" not in metrics
    assert metrics["shape"]["label"] in ("top-heavy", "balanced", "bottom-heavy", None)
    breakdown = client.get("/v1/pipelines/snap/metrics/breakdown?by=lead_source").json()
    assert breakdown["by"] == "lead_source"
    assert {
        "key",
        "deals",
        "open_deals",
        "won",
        "lost",
        "win_rate",
        "won_value",
        "avg_days_to_close_won",
    } <= set(breakdown["rows"][0])
    assert client.get("/v1/pipelines/snap/metrics/breakdown?by=color").status_code == 422
    assert client.get("/v1/pipelines/nope/metrics").status_code == 404
    assert client.get("/v1/pipelines/snap/metrics?as_of=yesterday").status_code == 422
    assert client.get("/v1/pipelines/snap/metrics?target=-5").status_code == 422
    assert client.get("/v1/deals?cursor=garbage!").status_code == 422
    board = client.get("/v1/pipelines/snap/board?limit=1").json()
    column = next(c for c in board["columns"] if c["next_cursor"])
    rest = client.get(
        f"/v1/pipelines/snap/board?stage={column['stage']}&limit=100&cursor={column['next_cursor']}"
    ).json()
    assert len(rest["columns"]) == 1 and len(rest["columns"][0]["deals"]) == column["count"] - 1

    token = client.post("/v1/tokens", json={"name": "reader", "scopes": ["read"]}).json()["token"]
    reader = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/deals?as_of=2023-06-01", headers=reader).status_code == 403
    assert client.get("/v1/deals", headers=reader).status_code == 200
    assert (
        client.get("/v1/pipelines/snap/board?as_of=2023-06-01", headers=reader).status_code == 200
    )
    assert (
        client.get("/v1/projections", headers={"Authorization": "Bearer nope"}).status_code == 401
    )


def test_a_pipeline_cannot_drop_a_stage_with_open_deals(client: TestClient) -> None:
    _post(
        client,
        [
            (
                "occupied",
                {
                    "type": "opened",
                    "event_id": "o1",
                    "occurred_at": "x",
                    "pipeline_id": "snap",
                    "name": "Occupied",
                    "stage": "demo",
                },
            )
        ],
    )
    smaller = {**PIPELINE, "stages": [s for s in PIPELINE["stages"] if s["id"] != "demo"]}
    response = client.put("/v1/pipelines/snap", json=smaller)
    assert response.status_code == 409 and response.json()["error"] == "pipeline_in_use"
    emptier = {**PIPELINE, "stages": [s for s in PIPELINE["stages"] if s["id"] != "proposal"]}
    assert client.put("/v1/pipelines/snap", json=emptier).status_code in (200, 201)
