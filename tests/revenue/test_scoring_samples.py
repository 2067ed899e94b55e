"""Training samples hold only open deals while reading the log (a closed deal's state is dropped
and read again from its own events if it is reopened): the samples equal those of a fold that
keeps every deal, on random histories with reopenings, closes and reopenings at one instant,
several pipelines and activity between them. Both stores."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from engine.domain.deal_basics import WON
from engine.domain.deal_events import DealEvent, Lost, Opened, Reopened, Won
from engine.scoring.features import Snapshot, features, snapshot
from engine.scoring.history import Sample, closed_samples
from engine.services import Services
from tests.revenue.conftest import post_events

STAGES = [{"id": s, "name": s.title(), "probability": p} for s, p in (("a", 0.2), ("b", 0.6))]


def _history(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    events: list[dict[str, Any]] = []
    for i in range(40):
        deal, at, n, stage = f"d{seed}-{i}", start + timedelta(days=rng.randrange(100)), 0, "a"

        def add(body: dict[str, Any], same_instant: bool = False, deal: str = deal) -> None:
            nonlocal at, n
            if not same_instant:
                at += timedelta(hours=rng.randrange(1, 90))
            n += 1
            events.append(
                {"deal_id": deal, "event_id": f"{deal}-{n}", "occurred_at": at.isoformat(), **body}
            )

        add(
            {
                "type": "opened",
                "pipeline_id": rng.choice(["p1", "p1", "p2"]),
                "name": deal,
                "industry": rng.choice(["x", "y"]),
                "amount": str(rng.choice([100, 5000])),
            }
        )
        closed = False
        for _ in range(rng.randrange(1, 7)):
            roll = rng.random()
            if closed:
                if roll < 0.6:
                    add({"type": "reopened", "to_stage": "a"}, same_instant=rng.random() < 0.3)
                    closed, stage = False, "a"
                continue
            if roll < 0.3:
                add({"type": "activity_logged", "activity": "call"}, rng.random() < 0.3)
            elif roll < 0.45:
                add({"type": "fact_recorded", "fact": "need", "value": True}, rng.random() < 0.3)
            elif roll < 0.6:
                stage = "b" if stage == "a" else "a"
                add({"type": "stage_changed", "to_stage": stage})
            else:
                kind = rng.choice(["won", "lost"])
                body = {"type": kind} if kind == "won" else {"type": "lost", "reason": "r"}
                add(body, same_instant=rng.random() < 0.3)
                closed = True
    return events


def _every_deal_held(app: Any, pipeline_id: str) -> list[Sample]:
    """The fold as it was: every deal of the pipeline held to the end (the oracle)."""
    deals: dict[UUID, Any] = {}
    before: dict[UUID, Snapshot] = {}
    samples: dict[UUID, Sample] = {}
    for notification in app.recorder.select_notifications(1, 10**6):
        event = app.mapper.to_domain_event(notification)
        if not isinstance(event, DealEvent):
            continue
        key = event.originator_id
        if isinstance(event, Opened):
            if event.pipeline_id == pipeline_id and key not in deals:
                deals[key] = event.mutate(None)
                before[key] = snapshot(deals[key])
            continue
        deal = deals.get(key)
        if deal is None or event.originator_version != deal.version + 1:
            continue
        if deal.last_occurred_at is not None and event.occurred_at > deal.last_occurred_at:
            before[key] = snapshot(deal)
        event.mutate(deal)
        if isinstance(event, (Won, Lost)):
            samples[key] = Sample(
                deal.deal_id,
                event.occurred_at,
                deal.status == WON,
                features(before[key], event.occurred_at),
            )
        elif isinstance(event, Reopened):
            samples.pop(key, None)
    return sorted(samples.values(), key=lambda s: s.deal_id)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_samples_equal_a_fold_that_holds_every_deal(
    served: tuple[TestClient, Services], seed: int
) -> None:
    client, services = served
    for pipeline in ("p1", "p2"):
        body = {"name": pipeline, "stages": STAGES}
        assert client.put(f"/v1/pipelines/{pipeline}", json=body).status_code in (200, 201)
    t0, t1 = "2025-03-01T09:00:00+00:00", "2025-03-02T09:00:00+00:00"
    # Closed, reopened and closed again within one instant that also logged an activity: the
    # sample is the deal before that instant, the activity not included.
    same_instant = [
        {"type": "opened", "pipeline_id": "p1", "name": "s", "occurred_at": t0},
        {"type": "activity_logged", "activity": "call", "occurred_at": t1},
        {"type": "won", "occurred_at": t1},
        {"type": "reopened", "to_stage": "a", "occurred_at": t1},
        {"type": "lost", "reason": "r", "occurred_at": t1},
    ]
    events = _history(seed) + [
        {"deal_id": f"s{seed}", "event_id": f"s{seed}-{k}", **e} for k, e in enumerate(same_instant)
    ]
    results = post_events(client, events)
    assert all(r["status"] != "rejected" for r in results), [
        r for r in results if r["status"] == "rejected"
    ][:3]
    assert any(e["type"] == "reopened" for e in events)
    for pipeline in ("p1", "p2"):
        samples, _ = closed_samples(services.app, pipeline)
        assert samples == _every_deal_held(services.app, pipeline)
        assert samples  # the comparison is not of two empty lists
    held = {s.deal_id: s for s in closed_samples(services.app, "p1")[0]}[f"s{seed}"]
    assert (held.won, held.features["activities"]) == (False, 0)
