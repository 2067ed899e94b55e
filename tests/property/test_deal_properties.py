"""Property-based: random command sequences against the default pipeline never reach a state that
breaks the pipeline's rules, and replaying any deal's history reproduces its state exactly."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st

from engine.application import DealflowApp, deal_view, replay
from engine.domain.deal import LOST, OPEN, WON, Reopened, StageChanged, Won
from engine.domain.events import GENESIS_HASH
from engine.domain.pipeline import evaluate_criteria
from engine.persistence.settings import StoreSettings
from tests.helpers import command

STAGES = ["prospecting", "qualification", "meeting", "proposal", "negotiation", "contract"]
FACTS = [
    "contact_made",
    "need",
    "budget",
    "authority",
    "timeline",
    "verbal_commit",
    "contract_signed",
]
START = datetime(2023, 1, 1, tzinfo=UTC)
_deals = itertools.count(1)

# What satisfies each stage's exit criteria in the default pipeline (one command per item).
SATISFY: dict[str, list[dict[str, Any]]] = {
    "prospecting": [{"type": "fact_recorded", "fact": "contact_made", "value": True}],
    "qualification": [
        {"type": "fact_recorded", "fact": f, "value": True}
        for f in ("need", "budget", "authority", "timeline")
    ],
    "meeting": [{"type": "activity_logged", "activity": "demo"}],
    "proposal": [
        {"type": "updated", "amount": "1200"},
        {"type": "activity_logged", "activity": "proposal"},
    ],
    "negotiation": [{"type": "fact_recorded", "fact": "verbal_commit", "value": True}],
    "contract": [{"type": "fact_recorded", "fact": "contract_signed", "value": True}],
}

actions = st.one_of(
    # Steer towards progress (satisfy a stage's criteria, then try the next stage), so forward
    # moves and wins really happen; everything else is noise that the rules must withstand.
    st.tuples(st.just("satisfy"), st.integers(min_value=0, max_value=1)),
    st.tuples(st.just("advance")),
    st.tuples(st.just("advance")),
    st.tuples(st.just("fact"), st.sampled_from(FACTS), st.booleans()),
    st.tuples(st.just("activity"), st.sampled_from(["demo", "proposal", "call"])),
    st.tuples(st.just("amount"), st.sampled_from(["0", "0.01", "1500.50", None])),
    st.tuples(st.just("move"), st.sampled_from([*STAGES, "nowhere"])),
    st.tuples(st.just("won"), st.sampled_from([None, "999.99"])),
    st.tuples(st.just("lost"), st.sampled_from(["price", "timing"])),
    st.tuples(st.just("reopen"), st.sampled_from(STAGES)),
)
# Minutes between events; a negative step tries to run business time backwards.
steps = st.integers(min_value=-30, max_value=600)
scripts = st.lists(st.tuples(actions, steps), min_size=1, max_size=40)
batch_sizes = st.lists(st.integers(min_value=1, max_value=8), min_size=1, max_size=10)


def _body(action: tuple[Any, ...], at: datetime) -> dict[str, Any]:
    kind = action[0]
    when = {"occurred_at": at.isoformat()}
    if kind == "fact":
        return {"type": "fact_recorded", "fact": action[1], "value": action[2], **when}
    if kind == "activity":
        return {"type": "activity_logged", "activity": action[1], **when}
    if kind == "amount":
        return {"type": "updated", "amount": action[1], **when}
    if kind == "move":
        return {"type": "stage_changed", "to_stage": action[1], **when}
    if kind == "won":
        return {"type": "won", **({"amount": action[1]} if action[1] else {}), **when}
    if kind == "lost":
        return {"type": "lost", "reason": action[1], **when}
    return {"type": "reopened", "to_stage": action[1], **when}


@pytest.fixture(scope="module")
def sqlite_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DealflowApp]:
    app = DealflowApp(StoreSettings(database_url=None, home=Path(tmp_path_factory.mktemp("prop"))))
    yield app
    app.close()


def _bodies(script: list[tuple[tuple[Any, ...], int]], start_stage: str) -> list[dict[str, Any]]:
    at = START
    bodies = [
        {
            "type": "opened",
            "pipeline_id": "default",
            "name": "P",
            "stage": start_stage,
            "occurred_at": at.isoformat(),
        }
    ]
    guess = STAGES.index(start_stage)  # where the deal would be if every advance succeeded
    for action, minutes in script:
        at = at + timedelta(minutes=minutes)
        if action[0] == "satisfy":
            stage = STAGES[min(guess + action[1], len(STAGES) - 1)]
            bodies += [{**body, "occurred_at": at.isoformat()} for body in SATISFY[stage]]
            continue
        if action[0] == "advance":
            if guess == len(STAGES) - 1:
                bodies.append({"type": "won", "occurred_at": at.isoformat()})
                continue
            guess += 1
            action = ("move", STAGES[guess])
        elif action[0] in ("move", "reopen") and action[1] in STAGES:
            guess = STAGES.index(action[1])
        bodies.append(_body(action, at))
    return bodies


def _drive(
    app: DealflowApp,
    script: list[tuple[tuple[Any, ...], int]],
    batches: list[int],
    start_stage: str,
) -> tuple[str, list[Any]]:
    deal_id = f"prop-{next(_deals)}-{uuid.uuid4().hex[:6]}"
    commands = [command(deal_id, body) for body in _bodies(script, start_stage)]
    outcomes: list[Any] = []
    sizes = itertools.cycle(batches)
    i = 0
    while i < len(commands):
        size = next(sizes)
        outcomes += app.ingest(commands[i : i + size])
        i += size
    return deal_id, outcomes


def _check_rules(app: DealflowApp, deal_id: str, outcomes: list[Any]) -> None:
    events = app.deal_events(deal_id)
    definition = app.pipeline_ref("default").definition
    recorded = [o for o in outcomes if o.status == "recorded"]
    # version == number of events, every accepted command is there, in order.
    assert [e.originator_version for e in events] == list(range(1, len(events) + 1))
    assert [o.version for o in recorded] == list(range(1, len(events) + 1))
    assert [o.event_id for o in recorded] == [e.event_id for e in events]
    assert all(o.error is not None for o in outcomes if o.status == "rejected")
    previous_hash, previous_time = GENESIS_HASH, None
    state = None
    for event in events:
        # Business time never runs backwards; the hash chain links every event.
        assert previous_time is None or event.occurred_at >= previous_time
        assert event.content_hash(previous_hash) == event.hash
        previous_hash, previous_time = event.hash, event.occurred_at
        if state is not None:
            if state.status != OPEN:
                assert isinstance(event, Reopened), f"{event.TYPE} on a {state.status} deal"
            if isinstance(event, StageChanged):
                here, there = STAGES.index(state.stage), STAGES.index(event.to_stage)
                assert here != there
                assert event.direction == ("forward" if there > here else "backward")
                if there > here:
                    # Re-check independently against the state just before the move.
                    checked = evaluate_criteria(definition, STAGES[here:there], state)
                    assert all(c["held"] for c in checked), checked
                    assert event.criteria == checked
            if isinstance(event, Won):
                here = STAGES.index(state.stage)
                checked = evaluate_criteria(definition, STAGES[here:], state)
                assert all(c["held"] for c in checked), checked
            if isinstance(event, Reopened):
                assert state.status in (WON, LOST)
        state = event.mutate(state)
        # status / closed_at / lost_reason stay consistent after every event.
        assert (state.status == OPEN) == (state.closed_at is None)
        assert (state.status == LOST) == (state.lost_reason is not None)
        assert state.stage in STAGES
    assert state is not None and state.version == len(events)
    forward = sum(isinstance(e, StageChanged) and e.direction == "forward" for e in events)
    note_event(f"forward moves: {min(forward, 3)}{'+' if forward >= 3 else ''}")
    note_event(f"final status: {state.status}")


def _check_replay(app: DealflowApp, deal_id: str) -> None:
    definition = app.pipeline_ref("default").definition
    at = START + timedelta(days=400)
    loaded = app.deal(deal_id)
    replayed = replay(app.deal_events(deal_id))
    assert replayed is not None
    assert deal_view(replayed, definition, at) == deal_view(loaded, definition, at)
    assert replayed.last_hash == loaded.last_hash
    fresh = DealflowApp(app.settings)
    try:
        assert deal_view(fresh.deal(deal_id), definition, at) == deal_view(loaded, definition, at)
        # Every version view equals the replay of that prefix.
        events = fresh.deal_events(deal_id)
        for v in {1, len(events) // 2 or 1, len(events)}:
            prefix = replay(events[:v])
            assert prefix is not None
            assert deal_view(fresh.deal(deal_id, version=v), definition, at) == deal_view(
                prefix, definition, at
            )
    finally:
        fresh.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=scripts, batches=batch_sizes, start_stage=st.sampled_from(STAGES))
def test_random_sequences_keep_the_rules_and_replay_exactly(
    sqlite_app: DealflowApp, script: list[Any], batches: list[int], start_stage: str
) -> None:
    deal_id, outcomes = _drive(sqlite_app, script, batches, start_stage)
    _check_rules(sqlite_app, deal_id, outcomes)
    _check_replay(sqlite_app, deal_id)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=scripts, batches=batch_sizes, start_stage=st.sampled_from(STAGES))
def test_random_sequences_on_postgres(
    pg_url: str, tmp_path: Path, script: list[Any], batches: list[int], start_stage: str
) -> None:
    app = DealflowApp(StoreSettings(database_url=pg_url, home=tmp_path))
    try:
        deal_id, outcomes = _drive(app, script, batches, start_stage)
        _check_rules(app, deal_id, outcomes)
        _check_replay(app, deal_id)
    finally:
        app.close()


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scripts=st.lists(scripts, min_size=5, max_size=7), batches=batch_sizes)
def test_interleaved_deals_in_one_batch_match_one_by_one(
    sqlite_app: DealflowApp, scripts: list[Any], batches: list[int]
) -> None:
    """The many-deal batch path (>4 deals at once loads deals differently) decides exactly as
    sending every command alone does."""
    tag = uuid.uuid4().hex[:6]
    per_deal: dict[str, list[Any]] = {}
    for n, script in enumerate(scripts):
        per_deal[f"{tag}-{n}"] = _bodies(script, STAGES[n % 3])
    # Round-robin interleave, sent in batches (as the HTTP batch does) to one set of deals...
    interleaved = [
        (deal, body)
        for group in itertools.zip_longest(*[[(d, b) for b in bs] for d, bs in per_deal.items()])
        for deal, body in [g for g in group if g is not None]
    ]
    cmds = [command(f"batch-{d}", b) for d, b in interleaved]
    sizes, i, batched = itertools.cycle([b * 20 for b in batches]), 0, []
    while i < len(cmds):
        size = next(sizes)
        batched += sqlite_app.ingest(cmds[i : i + size])
        i += size
    # ...and one by one to a twin set.
    single = [sqlite_app.ingest([command(f"single-{d}", b)])[0] for d, b in interleaved]
    assert [(o.status, o.version, o.error and o.error.code) for o in batched] == [
        (o.status, o.version, o.error and o.error.code) for o in single
    ]
    definition = sqlite_app.pipeline_ref("default").definition
    at = START + timedelta(days=400)
    for d in per_deal:
        a, b = (
            deal_view(sqlite_app.deal(f"batch-{d}"), definition, at),
            deal_view(sqlite_app.deal(f"single-{d}"), definition, at),
        )
        a.pop("deal_id"), b.pop("deal_id")
        a.pop("attributes"), b.pop("attributes")
        assert a == b
