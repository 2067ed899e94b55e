"""Ranking by score from the kept static parts (issue 10, the dashboard at a million deals) gives
exactly the scan's answer: under point rules, under a model (whose time terms move with the
clock), and with no scoring at all; after deals move, close and the model is retrained; for
every page and stage. Both stores."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dealflow.http import create_app
from dealflow.runtime import build_services
from engine.domain.events import utcnow
from engine.persistence.settings import StoreSettings
from engine.scoring.service import MODEL, train
from engine.services import Services
from projections.queries import score_cache, scored
from projections.queries.common import Moment
from projections.readmodel.records import to_us
from tests.conftest import AUTH, TEST_TOKEN
from tests.revenue.conftest import post_events

STAGES = ["lead", "deal", "commit"]


def _pipeline(rules: bool) -> dict[str, Any]:
    def field(rule_id: str, name: str, op: str, value: Any) -> dict[str, Any]:
        return {"id": rule_id, "kind": "field", "field": name, "op": op, "value": value}

    scoring: dict[str, Any] = {"min_closed_deals": 40, "base": 40, "rules": []}
    if rules:
        scoring["rules"] = [
            {"id": "big", "points": 25, "when": field("big", "amount", "gte", 10000)},
            {"id": "retail", "points": -15, "when": field("retail", "industry", "in", ["retail"])},
            {"id": "budget", "points": 10, "when": {"id": "budget", "kind": "fact"}},
            {
                "id": "calls",
                "points": 5,
                "when": {"id": "calls", "kind": "activity", "activity": "call", "min_count": 2},
            },
        ]
    return {
        "name": "Ranked",
        "stages": [
            {"id": stage, "name": stage.title(), "probability": p}
            for stage, p in zip(STAGES, (0.2, 0.5, 0.8), strict=True)
        ],
        "scoring": scoring,
    }


def _open_deals(pipeline: str, n: int, seed: int) -> list[dict[str, Any]]:
    """Open deals of many ages and shapes; ids that sort differently by byte and by locale."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    events: list[dict[str, Any]] = []
    for i in range(n):
        deal = f"{rng.choice(['a', 'B', 'b', 'a_', 'A-'])}{i}"
        opened = now - timedelta(days=rng.uniform(1, 300), seconds=rng.randrange(86_400))
        events.append(
            {
                "deal_id": deal,
                "event_id": f"{deal}-o",
                "type": "opened",
                "pipeline_id": pipeline,
                "name": deal,
                "industry": rng.choice(["software", "retail", "medical", None]),
                "owner": rng.choice(["ann", "bob", "cy"]),
                "amount": str(rng.choice([500, 2500, 9999, 10000, 40000])),
                "occurred_at": opened.isoformat(),
            }
        )
        at = opened
        for k in range(rng.randrange(4)):
            at += timedelta(hours=rng.uniform(1, 200))
            kind = rng.choice(["move", "fact", "call"])
            event: dict[str, Any] = {"deal_id": deal, "event_id": f"{deal}-{k}"}
            if kind == "move":
                event |= {"type": "stage_changed", "to_stage": rng.choice(STAGES[1:])}
            elif kind == "fact":
                event |= {"type": "fact_recorded", "fact": "budget", "value": True}
            else:
                event |= {"type": "activity_logged", "activity": "call"}
            events.append({**event, "occurred_at": min(at, now).isoformat()})
    return events


def _open_pipeline(client: TestClient, pipeline: str, rules: bool, deals: int, seed: int) -> None:
    """Define the pipeline and open ``deals`` deals in it (read models caught up)."""
    assert client.put(f"/v1/pipelines/{pipeline}", json=_pipeline(rules)).status_code in (200, 201)
    post_events(client, _open_deals(pipeline, deals, seed))


def _closed_history(pipeline: str, n: int) -> list[dict[str, Any]]:
    """``n`` closed deals: software mostly won, retail mostly lost (a model learns a signal)."""
    start = datetime.now(UTC) - timedelta(days=400)
    events: list[dict[str, Any]] = []
    for i in range(n):
        industry = "software" if i % 2 else "retail"
        won = (i // 2) % 5 != 0 if industry == "software" else (i // 2) % 5 == 0
        at = start + timedelta(days=i)
        events.append(
            {
                "deal_id": f"h{i}",
                "event_id": f"h{i}-o",
                "type": "opened",
                "pipeline_id": pipeline,
                "name": f"h{i}",
                "industry": industry,
                "amount": str(1000 * (1 + i % 7)),
                "occurred_at": at.isoformat(),
            }
        )
        close = {"type": "won"} if won else {"type": "lost", "reason": "no"}
        events.append(
            {
                "deal_id": f"h{i}",
                "event_id": f"h{i}-c",
                "occurred_at": (at + timedelta(days=3 + i % 11)).isoformat(),
                **close,
            }
        )
    return events


def _pages(app: Any, pipeline: str, moment: Moment, fast: bool, **options: Any) -> list[Any]:
    """Every page of the ranking, followed through its cursors."""
    pages, cursor = [], None
    while True:
        page = scored.deals_by_score(
            app, moment, pipeline_id=pipeline, cursor=cursor, fast=fast, **options
        )
        pages.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return pages


def _assert_fast_equals_scan(
    services: Services, pipeline: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = services.app
    # Both answers name the read models' position: let the runner take in what was recorded
    # last (a trained model is an event too).
    assert services.projections is not None
    assert services.projections.wait(app.max_position(), timeout=30)
    moment = Moment(to_us(utcnow()), historical=False)
    for options in (
        {"limit": 50},
        {"limit": 7},
        {"limit": 1000},
        {"limit": 5, "stage": "deal"},
        {"limit": 3, "stage": "commit"},
    ):
        expected = _pages(app, pipeline, moment, False, **options)
        with monkeypatch.context() as patched:
            # The fast path must answer on its own here, not fall back to the scan.
            patched.setattr(scored, "_scan", _no_scan)
            got = _pages(app, pipeline, moment, True, **options)
        assert got == expected, options


def _no_scan(*_: Any, **__: Any) -> Any:
    raise AssertionError("the ranking fell back to the scan")


def test_ranking_equals_the_scan_under_rules_and_a_model(
    served: tuple[TestClient, Services], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, services = served
    app = services.app
    _open_pipeline(client, "rk", rules=True, deals=60, seed=7)
    post_events(client, _closed_history("rk", 20))

    # Point rules (20 closed deals < 40): scores are few integers, so most order is by deal id.
    _assert_fast_equals_scan(services, "rk", monkeypatch)
    rows = app.db.fetchall(f"SELECT basis, COUNT(*) AS n FROM {score_cache.TABLE} GROUP BY basis")
    assert [(r["basis"], r["n"]) for r in rows] == [("rules:1", 60)]

    # Deals move on: their rows are recomputed (a stale row would keep the old score).
    first_id = _open_deals("rk", 60, seed=7)[0]["deal_id"]
    before = app.db.fetchone(
        f"SELECT deal_version FROM {score_cache.TABLE} WHERE deal_id = %s", (first_id,)
    )["deal_version"]
    post_events(
        client,
        [
            {
                "deal_id": first_id,
                "event_id": "more-1",
                "type": "stage_changed",
                "to_stage": "commit",
            },
            {
                "deal_id": first_id,
                "event_id": "more-2",
                "type": "activity_logged",
                "activity": "call",
            },
            {
                "deal_id": first_id,
                "event_id": "more-3",
                "type": "activity_logged",
                "activity": "call",
            },
        ],
    )
    _assert_fast_equals_scan(services, "rk", monkeypatch)
    after = app.db.fetchone(
        f"SELECT deal_version FROM {score_cache.TABLE} WHERE deal_id = %s", (first_id,)
    )["deal_version"]
    assert after == before + 3

    # A model (60 closed deals >= 40): scores move with the clock through the time terms.
    post_events(
        client,
        [
            {**e, "deal_id": "k" + e["deal_id"], "event_id": "k" + e["event_id"]}
            for e in _closed_history("rk", 40)
        ],
    )
    assert train(app, "rk")["status"] == "trained"
    _assert_fast_equals_scan(services, "rk", monkeypatch)
    kinds = {
        d["score_kind"]
        for d in scored.deals_by_score(
            app, Moment(to_us(utcnow()), False), pipeline_id="rk", limit=100
        )["deals"]
    }
    assert kinds == {"model"}

    # A deal won leaves the ranking; the refresher's pass prunes its row and the old basis.
    first = _pages(app, "rk", Moment(to_us(utcnow()), False), True, limit=1)[0]["deals"][0]
    post_events(client, [{"deal_id": first["deal_id"], "event_id": "win-top", "type": "won"}])
    _assert_fast_equals_scan(services, "rk", monkeypatch)
    assert score_cache.refresh_all(app) == 1
    rows = app.db.fetchall(
        f"SELECT basis, is_open, COUNT(*) AS n FROM {score_cache.TABLE}"
        " GROUP BY basis, is_open ORDER BY is_open"
    )
    assert [(r["basis"], r["is_open"], r["n"]) for r in rows] == [
        ("model:1", 0, 1),  # the deal just won: kept closed, so an older state can't reopen it
        ("model:1", 1, 59),
    ]
    marks = app.db.fetchall(f"SELECT basis, position FROM {score_cache.MARKS}")
    assert [(m["basis"], m["position"]) for m in marks] == [("model:1", app.max_position())]


def test_ranking_without_scoring_is_by_deal_id(
    served: tuple[TestClient, Services], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, services = served
    _open_pipeline(client, "nr", rules=False, deals=40, seed=3)
    _assert_fast_equals_scan(services, "nr", monkeypatch)
    page = scored.deals_by_score(
        services.app, Moment(to_us(utcnow()), False), pipeline_id="nr", limit=100
    )
    ids = [d["deal_id"] for d in page["deals"]]
    assert ids == sorted(ids) and {d["score_kind"] for d in page["deals"]} == {"none"}


def test_a_query_falls_back_to_the_scan_while_too_many_rows_are_missing(
    served: tuple[TestClient, Services], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, services = served
    _open_pipeline(client, "fb", rules=True, deals=30, seed=5)
    moment = Moment(to_us(utcnow()), historical=False)
    expected = scored.deals_by_score(services.app, moment, pipeline_id="fb", fast=False)
    monkeypatch.setattr(scored, "QUERY_FIRST_FILL", 10)
    assert scored.deals_by_score(services.app, moment, pipeline_id="fb") == expected
    held = services.app.db.fetchone(f"SELECT COUNT(*) AS n FROM {score_cache.TABLE}")["n"]
    assert held == 0  # nothing filled by the query: the refresher's job
    assert score_cache.refresh_all(services.app) == 1
    held = services.app.db.fetchone(f"SELECT COUNT(*) AS n FROM {score_cache.TABLE}")["n"]
    assert held == 30
    monkeypatch.setattr(scored, "_scan", _no_scan)
    assert scored.deals_by_score(services.app, moment, pipeline_id="fb") == expected


def test_the_projection_process_keeps_the_score_parts_following_the_log(
    store_settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEALFLOW_SCORE_REFRESH", "0.2")
    services = build_services(store_settings, bootstrap_token=TEST_TOKEN, run_projections=True)
    try:
        with TestClient(create_app(services)) as client:
            client.headers.update(AUTH)
            _open_pipeline(client, "bg", rules=True, deals=25, seed=11)
            app = services.app
            head = app.max_position()
            score_cache.ensure_tables(app)
            deadline = time.monotonic() + 30
            # No query asks: the refresher alone fills the rows and follows the log to its head.
            while time.monotonic() < deadline:
                basis = score_cache.current_basis(app, "bg")
                if score_cache.mark(app, "bg", basis) == head:
                    break
                time.sleep(0.1)
            assert score_cache.mark(app, "bg", basis) == head
            count = app.db.fetchone(
                f"SELECT COUNT(*) AS n FROM {score_cache.TABLE} WHERE is_open = 1"
            )["n"]
            assert count == 25
    finally:
        services.close()


def test_the_last_model_ranks_while_a_new_ones_parts_are_filled(
    served: tuple[TestClient, Services], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, services = served
    app = services.app
    _open_pipeline(client, "nm", rules=True, deals=40, seed=13)
    post_events(client, _closed_history("nm", 60))
    assert train(app, "nm")["version"] == 1
    now = Moment(to_us(utcnow()), historical=False)
    first = scored.deals_by_score(app, now, pipeline_id="nm", limit=100)
    assert first["model"] == {"pipeline_id": "nm", "version": 1}

    more = [
        {**e, "deal_id": "m" + e["deal_id"], "event_id": "m" + e["event_id"]}
        for e in _closed_history("nm", 30)
    ]
    post_events(client, more)
    assert train(app, "nm")["version"] == 2
    assert services.projections is not None
    assert services.projections.wait(app.max_position(), timeout=30)
    # The query may not fill model 2's rows itself (as at a million deals): model 1 ranks, and
    # says so; the answer is the scan's under model 1.
    monkeypatch.setattr(scored, "QUERY_FIRST_FILL", 0)
    now = Moment(to_us(utcnow()), historical=False)
    with monkeypatch.context() as patched:
        patched.setattr(scored, "_scan", _no_scan)
        answer = scored.deals_by_score(app, now, pipeline_id="nm", limit=100)
    assert answer["model"] == {"pipeline_id": "nm", "version": 1}
    assert {d["score_model"]["version"] for d in answer["deals"]} == {1}
    definition = app.pipeline_ref("nm").definition
    model_1 = app.get_definition(MODEL, "nm", 1)
    assert answer == scored._scan(app, now, "nm", None, 100, 0, definition, model_1)

    # Once the refresher has filled model 2's rows, model 2 ranks and model 1's rows are gone.
    assert score_cache.refresh_all(app) == 1
    answer = scored.deals_by_score(app, now, pipeline_id="nm", limit=100)
    assert answer["model"] == {"pipeline_id": "nm", "version": 2}
    bases = app.db.fetchall(f"SELECT DISTINCT basis FROM {score_cache.TABLE}")
    assert [b["basis"] for b in bases] == ["model:2"]
