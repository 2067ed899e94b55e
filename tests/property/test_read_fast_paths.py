"""Property-based: every fast read path equals the scan (the oracle) exactly.

Random histories over several pipelines (one continues won deals in another, so follow-up deals
appear), with reopenings, backward moves, stale flags, deals without industry or owner, business
times from a year ago to a year ahead of now (so "now" has events after it), several events at
one instant, and deals arriving interleaved out of business-time order. For random moments
(exact event times, a microsecond either side, day boundaries, now) and closed windows, the
metrics, the breakdown and the board from the summary tables and the business-time buckets must
equal ``fast=False``, which scans the history rows as the read side always did.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dealflow.bench.synthetic import to_command
from engine.application import Command, DealflowApp, automation_command
from engine.domain.pipeline import PipelineDefinition
from engine.limits import limits as event_limits
from engine.persistence.settings import StoreSettings
from projections.queries.board import board
from projections.queries.common import Moment
from projections.queries.metrics import BREAKDOWN_KEYS, breakdown, metrics
from projections.readmodel.compare import comparable_rows
from projections.readmodel.rebuild import parallel_rebuild
from projections.readmodel.records import to_us
from projections.readmodel.timeline import DAY_US
from projections.runtime import ProjectionsService

STAGES = ["lead", "qualify", "demo", "proposal", "closing"]
NOW = datetime.now(UTC).replace(microsecond=0)
_examples = itertools.count(1)


def _definition(after_won: str | None, limits: tuple[float | None, ...]) -> PipelineDefinition:
    return PipelineDefinition.model_validate(
        {
            "name": "Property pipeline",
            "qualified_after": "qualify",
            "after_won": after_won,
            "stages": [
                {"id": s, "name": s.title(), "probability": round(0.1 + i * 0.2, 1)}
                | ({"max_days_in_stage": limit} if limit else {})
                for i, (s, limit) in enumerate(zip(STAGES, limits, strict=True))
            ],
        }
    )


def _command(deal_id: str, body: dict[str, Any]) -> Command:
    if body["type"] != "flagged_stale":
        return to_command(deal_id, body)
    # Escalation's stale flag is dealflow's own automation, not a sender's event body.
    return automation_command(
        deal_id,
        "flagged_stale",
        {"stage": body["stage"]},
        event_id=body["event_id"],
        actor="system:automation",
        occurred_at=datetime.fromisoformat(body["occurred_at"].replace("Z", "+00:00")),
    )


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@st.composite
def deal_scripts(draw: st.DrawFn, pipelines: int) -> list[tuple[int, list[dict[str, Any]]]]:
    """Per deal: its pipeline index and its event bodies in order (valid for the domain)."""
    out = []
    for _ in range(draw(st.integers(2, 9))):
        pipeline = draw(st.integers(0, pipelines - 1))
        clock = NOW + timedelta(hours=draw(st.integers(-24 * 300, 24 * 300)))
        stage = draw(st.integers(0, len(STAGES) - 1))
        opened: dict[str, Any] = {"type": "opened", "stage": STAGES[stage], "name": "deal"}
        if draw(st.booleans()):
            opened["amount"] = f"{draw(st.integers(0, 90_000))}.{draw(st.integers(0, 99)):02d}"
        for field, values in (
            ("industry", ["retail", "energy"]),
            ("owner", ["ann", "bob", "cy"]),
            ("lead_source", ["web"]),
        ):
            value = draw(st.sampled_from([None, *values]))
            if value is not None:
                opened[field] = value
        bodies = [(clock, opened)]
        status, flagged = "open", False
        for _ in range(draw(st.integers(0, 8))):
            # Zero (same instant), minutes, hours or weeks to the next event.
            clock += timedelta(
                minutes=draw(st.sampled_from([0, 0, 7, 90, 60 * 30, 60 * 24 * 12, 60 * 24 * 40]))
            )
            if status != "open":
                if not draw(st.booleans()):
                    break
                stage = draw(st.integers(0, len(STAGES) - 1))
                bodies.append((clock, {"type": "reopened", "to_stage": STAGES[stage]}))
                status, flagged = "open", False
                continue
            kind = draw(
                st.sampled_from(["forward", "back", "won", "lost", "update", "flag", "activity"])
            )
            if kind == "forward" and stage < len(STAGES) - 1:
                stage = draw(st.integers(stage + 1, len(STAGES) - 1))
                bodies.append((clock, {"type": "stage_changed", "to_stage": STAGES[stage]}))
                flagged = False
            elif kind == "back" and stage > 0:
                stage = draw(st.integers(0, stage - 1))
                bodies.append((clock, {"type": "stage_changed", "to_stage": STAGES[stage]}))
                flagged = False
            elif kind in ("won", "lost"):
                body: dict[str, Any] = {"type": kind}
                if kind == "won" and draw(st.booleans()):
                    body["amount"] = f"{draw(st.integers(1, 50_000))}.50"
                if kind == "lost":
                    body["reason"] = "price"
                bodies.append((clock, body))
                status = kind
            elif kind == "update":
                bodies.append((clock, {"type": "updated", "amount": "123.45"}))
            elif kind == "flag" and not flagged:
                flagged = True
                bodies.append((clock, {"type": "flagged_stale", "stage": STAGES[stage]}))
            else:
                bodies.append((clock, {"type": "activity_logged", "activity": "call"}))
        out.append((pipeline, [{**b, "occurred_at": _iso(t)} for t, b in bodies]))
    return out


@pytest.fixture
def store(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[DealflowApp, ProjectionsService]]:
    # Histories reach a year past now on purpose (the "now" path must hold whatever the data
    # holds), so the clock-skew bound on incoming events is widened for this test.
    monkeypatch.setenv("DEALFLOW_MAX_CLOCK_SKEW", str(2 * 366 * 86400))
    event_limits.cache_clear()
    app = DealflowApp(StoreSettings(database_url=pg_url, home=tmp_path / "home"))
    service = ProjectionsService(app, run=False)
    try:
        yield app, service
    finally:
        app.close()
        monkeypatch.undo()
        event_limits.cache_clear()


def _moments(data: st.DataObject, times: list[int]) -> list[int]:
    """Exact event times, a microsecond either side, the start of an event's day, and more."""
    picks = []
    for _ in range(3):
        t = data.draw(st.sampled_from(times))
        how = data.draw(st.sampled_from(["exact", "before", "after", "day", "next-day"]))
        picks.append(
            {
                "exact": t,
                "before": t - 1,
                "after": t + 1,
                "day": t // DAY_US * DAY_US,
                "next-day": (t // DAY_US + 1) * DAY_US - 1,
            }[how]
        )
    return picks


def _load_history(
    app: DealflowApp, service: ProjectionsService, data: st.DataObject
) -> tuple[list[str], tuple[float | None, ...], list[tuple[int, list[dict[str, Any]]]]]:
    """Three pipelines (won deals of the first follow up in the third), a random history
    ingested in random arrival order and folded by the runner in random page sizes, with a
    new definition version mid-stream. Returns (pipeline ids, stage limits, deal scripts)."""
    example = next(_examples)
    ids = [f"e{example}-main", f"e{example}-side", f"e{example}-after"]
    limits = data.draw(st.tuples(*[st.sampled_from([None, 0.5, 3, 20])] * len(STAGES)))
    app.put_pipeline(ids[2], _definition(None, limits), "test")
    app.put_pipeline(ids[1], _definition(None, limits), "test")
    app.put_pipeline(ids[0], _definition(ids[2], limits), "test")  # won deals follow up in [2]
    scripts = data.draw(deal_scripts(3))
    # Interleave the deals in a random order (each deal's own events stay in order): arrival
    # order is not business-time order across deals.
    queues = [
        [
            _command(f"e{example}-d{n}", {**b, "event_id": f"e{example}-d{n}-{i}"})
            for i, b in enumerate([{**bodies[0], "pipeline_id": ids[p]}, *bodies[1:]])
        ]
        for n, (p, bodies) in enumerate(scripts)
    ]
    order = data.draw(
        st.permutations([n for n, q in enumerate(queues) for _ in q]), label="arrival"
    )
    cursors = [0] * len(queues)
    commands = []
    for n in order:
        commands.append(queues[n][cursors[n]])
        cursors[n] += 1
    redefine_at = data.draw(st.integers(0, len(commands)))
    for part, chunk in enumerate((commands[:redefine_at], commands[redefine_at:])):
        if part == 1:  # a new definition version mid-stream (as-of answers pick by time)
            app.put_pipeline(ids[1], _definition(None, tuple(reversed(limits))), "test")
        for start in range(0, len(chunk), 7):
            outcomes = app.ingest(chunk[start : start + 7], allow_automation=True)
            assert all(o.status == "recorded" for o in outcomes), [o.error for o in outcomes]
        service.runner.page = data.draw(st.sampled_from([3, 50]))
        service.catch_up()
    return ids, limits, scripts


_SETTINGS = settings(
    max_examples=int(os.environ.get("DEALFLOW_PROPERTY_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_SETTINGS
@given(data=st.data())
def test_fast_reads_equal_the_scan(
    store: tuple[DealflowApp, ProjectionsService], data: st.DataObject
) -> None:
    app, service = store
    ids, limits, scripts = _load_history(app, service, data)

    times = sorted(
        to_us(datetime.fromisoformat(b["occurred_at"].replace("Z", "+00:00")))
        for _, bodies in scripts
        for b in bodies
    )
    now = Moment(to_us(datetime.now(UTC)), historical=False)
    moments = [now, *(Moment(t, historical=True) for t in _moments(data, times))]
    # "Now" read from a clock at other times too (the current rows, cut at that clock), often
    # exactly a stage limit after an event, where a deal turns stale.
    for t in _moments(data, times)[:2]:
        limit = data.draw(st.sampled_from([0, *(int(x * DAY_US) for x in limits if x)]))
        moments.append(Moment(t + limit + data.draw(st.sampled_from([-1, 0, 1])), False))
    for moment in moments:
        # Windows "now" sum whole days from the closed-day table and their edge days from the
        # rows: ends at event times, a microsecond off, at midnight, inside a single day.
        ends = [None, times[0], times[-1], now.at, *_moments(data, times)]
        window = data.draw(
            st.sampled_from([(None, None), (times[0], None), (None, times[-1]), (times[0], now.at)])
            | st.tuples(st.sampled_from(ends), st.sampled_from(ends))
        )
        for pipeline_id in ids:
            for lo, hi in ((None, None), window):
                fast = metrics(app, pipeline_id, moment, closed_from=lo, closed_to=hi)
                oracle = metrics(app, pipeline_id, moment, closed_from=lo, closed_to=hi, fast=False)
                assert fast == oracle, (pipeline_id, moment, lo, hi)
            by = data.draw(st.sampled_from(BREAKDOWN_KEYS))
            assert breakdown(app, pipeline_id, by, moment) == breakdown(
                app, pipeline_id, by, moment, fast=False
            ), (pipeline_id, moment, by)
            first = board(app, pipeline_id, moment, limit=2)
            assert first == board(app, pipeline_id, moment, limit=2, fast=False), (
                pipeline_id,
                moment,
            )
            # The next page of every column that has one (as of a time the page's keys come
            # from a covering index, then the rows: the keyset must hold there too).
            for column in first["columns"]:
                if column["next_cursor"] is not None:
                    page = {"limit": 1, "stage": column["stage"], "cursor": column["next_cursor"]}
                    assert board(app, pipeline_id, moment, **page) == board(
                        app, pipeline_id, moment, fast=False, **page
                    ), (pipeline_id, moment, page)


@_SETTINGS
@given(data=st.data())
def test_rebuild_equals_the_incremental_read_models(
    store: tuple[DealflowApp, ProjectionsService], data: st.DataObject
) -> None:
    """The bulk rebuild (rows folded per deal, summaries computed from the rows in SQL) holds
    exactly the rows the runner built batch by batch: every table, every summary key, with the
    same shapes as above (follow-ups, reopenings, stale flags, times either side of now,
    several definition versions, several events at one instant)."""
    app, service = store
    _load_history(app, service, data)
    incremental = comparable_rows(app)
    assert incremental["rm_deals"] and incremental["rm_stage_stats_t"]
    parallel_rebuild(app, service.view, workers=1)
    assert comparable_rows(app) == incremental
    assert service.view.position() == app.max_position()
