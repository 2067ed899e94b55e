"""Metrics, breakdown and the deals list against an independent reference model.

The reference replays the *event bodies that were sent* (not the read models, not the
projection code) with plain Python and Decimals and applies the contract's definitions
directly; the read models must agree now, as of past times, and within closed windows.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

DAY = timedelta(days=1)


@dataclass
class Stay:
    stage: str
    entered: datetime
    left: datetime | None = None
    how: str | None = None


@dataclass
class RefDeal:
    deal_id: str
    opened_at: datetime
    stage: str
    status: str = "open"
    amount: Decimal | None = None
    industry: str | None = None
    owner: str | None = None
    closed_at: datetime | None = None
    stays: list[Stay] = field(default_factory=list)


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def replay(bodies: list[dict[str, Any]], deal_id: str, at: datetime) -> RefDeal | None:
    deal: RefDeal | None = None
    for body in bodies:
        when = _t(body["occurred_at"])
        if when > at:
            break
        kind = body["type"]
        if kind == "opened":
            deal = RefDeal(
                deal_id,
                when,
                body.get("stage") or "lead",
                amount=Decimal(body["amount"]) if "amount" in body else None,
                industry=body.get("industry"),
                owner=body.get("owner"),
            )
            deal.stays.append(Stay(deal.stage, when))
            continue
        assert deal is not None
        if kind == "updated" and "amount" in body:
            deal.amount = Decimal(body["amount"]) if body["amount"] is not None else None
        elif kind == "stage_changed":
            deal.stays[-1].left, deal.stays[-1].how = when, _direction(deal.stage, body["to_stage"])
            deal.stage = body["to_stage"]
            deal.stays.append(Stay(deal.stage, when))
        elif kind in ("won", "lost"):
            deal.stays[-1].left, deal.stays[-1].how = when, kind
            deal.status, deal.closed_at = kind, when
            if kind == "won" and body.get("amount") is not None:
                deal.amount = Decimal(body["amount"])
        elif kind == "reopened":
            deal.status, deal.closed_at, deal.stage = "open", None, body["to_stage"]
            deal.stays.append(Stay(deal.stage, when))
    return deal


STAGE_ORDER: list[str] = []


def _direction(from_stage: str, to_stage: str) -> str:
    return "forward" if STAGE_ORDER.index(to_stage) > STAGE_ORDER.index(from_stage) else "backward"


def expected_metrics(
    scripts: dict[str, list[dict[str, Any]]],
    definition: dict[str, Any],
    at: datetime,
    closed_from: datetime | None = None,
    closed_to: datetime | None = None,
) -> dict[str, Any]:
    stages = definition["stages"]
    STAGE_ORDER[:] = [s["id"] for s in stages]
    deals = [d for d in (replay(b, k, at) for k, b in scripts.items()) if d is not None]
    prob = {s["id"]: Decimal(str(s["probability"])) for s in stages}
    limit = {
        s["id"]: timedelta(days=s["max_days_in_stage"])
        for s in stages
        if s.get("max_days_in_stage")
    }
    open_ = [d for d in deals if d.status == "open"]

    def in_window(d: RefDeal) -> bool:
        assert d.closed_at is not None
        return (closed_from is None or d.closed_at >= closed_from) and (
            closed_to is None or d.closed_at < closed_to
        )

    won = [d for d in deals if d.status == "won" and in_window(d)]
    lost = [d for d in deals if d.status == "lost" and in_window(d)]
    stale = [d for d in open_ if d.stage in limit and at - d.stays[-1].entered > limit[d.stage]]
    q_index = STAGE_ORDER.index(definition.get("qualified_after") or STAGE_ORDER[0])
    later = set(STAGE_ORDER[q_index + 1 :])
    qualified = [
        d
        for d in deals
        if any(s.stage in later for s in d.stays) or any(s.how == "won" for s in d.stays)
    ]
    won_days = [(d.closed_at - d.opened_at) / DAY for d in won]  # type: ignore[operator]
    per_stage = []
    for s in STAGE_ORDER:
        in_stage = [d for d in open_ if d.stage == s]
        value = sum((d.amount or Decimal(0) for d in in_stage), Decimal(0))
        done = [st for d in deals for st in d.stays if st.stage == s and st.left is not None]
        entered = [d for d in deals if any(st.stage == s for st in d.stays)]
        advanced = [
            d
            for d in deals
            if any(st.stage == s and st.how in ("forward", "won") for st in d.stays)
        ]
        per_stage.append(
            {
                "stage": s,
                "open_deals": len(in_stage),
                "open_value": value,
                "weighted_value": value * prob[s],
                "avg_days_in_stage": statistics.mean((st.left - st.entered) / DAY for st in done)
                if done
                else None,  # type: ignore[operator]
                "entered": len(entered),
                "advanced": len(advanced),
                "conversion_rate": len(advanced) / len(entered) if entered else None,
                "stale_deals": len([d for d in stale if d.stage == s]),
            }
        )
    return {
        "open_deals": len(open_),
        "open_value": sum((d.amount or Decimal(0) for d in open_), Decimal(0)),
        "weighted_value": sum((p["weighted_value"] for p in per_stage), Decimal(0)),
        "qualified_leads": len(qualified),
        "won": len(won),
        "lost": len(lost),
        "won_value": sum((d.amount or Decimal(0) for d in won), Decimal(0)),
        "win_rate": len(won) / (len(won) + len(lost)) if won or lost else None,
        "conversion_rate": len(won) / len(deals) if deals else None,
        "avg_days_to_close_won": statistics.mean(won_days) if won_days else None,
        "median_days_to_close_won": statistics.median(won_days) if won_days else None,
        "avg_open_deal_age_days": statistics.mean((at - d.opened_at) / DAY for d in open_)
        if open_
        else None,
        "stale_deals": len(stale),
        "stages": per_stage,
        "_deals": deals,
    }


def expected_breakdown(
    deals: list[RefDeal], key: str, closed_from: datetime | None, closed_to: datetime | None
) -> dict[Any, dict[str, Any]]:
    rows: dict[Any, dict[str, Any]] = {}
    for d in deals:
        row = rows.setdefault(
            getattr(d, key),
            {
                "deals": 0,
                "open_deals": 0,
                "won": 0,
                "lost": 0,
                "won_value": Decimal(0),
                "_days": [],
            },
        )
        row["deals"] += 1
        row["open_deals"] += d.status == "open"
        if (
            d.status in ("won", "lost")
            and (closed_from is None or d.closed_at >= closed_from)
            and (  # type: ignore[operator]
                closed_to is None or d.closed_at < closed_to  # type: ignore[operator]
            )
        ):
            row[d.status] += 1
            if d.status == "won":
                row["won_value"] += d.amount or Decimal(0)
                row["_days"].append((d.closed_at - d.opened_at) / DAY)  # type: ignore[operator]
    return rows


# ---------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------

import itertools  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from datetime import UTC  # noqa: E402

import pytest  # noqa: E402

from dealflow.bench.synthetic import BENCH_PIPELINE, BENCH_PIPELINE_ID, stream, to_command  # noqa: E402
from engine.application import DealflowApp  # noqa: E402
from engine.domain.pipeline import PipelineDefinition  # noqa: E402
from engine.persistence.settings import StoreSettings  # noqa: E402
from projections.queries.common import Moment  # noqa: E402
from projections.queries.deals import list_deals  # noqa: E402
from projections.queries.metrics import breakdown, metrics  # noqa: E402
from projections.readmodel.records import to_us  # noqa: E402
from projections.runtime import ProjectionsService  # noqa: E402


@pytest.fixture
def loaded(
    store_settings: StoreSettings,
) -> Iterator[tuple[DealflowApp, ProjectionsService, dict[str, list[dict[str, Any]]]]]:
    app = DealflowApp(store_settings)
    app.put_pipeline(BENCH_PIPELINE_ID, PipelineDefinition.model_validate(BENCH_PIPELINE), "test")
    service = ProjectionsService(app, run=False)
    scripts: dict[str, list[dict[str, Any]]] = {}
    pairs = list(stream(120, seed=3, wave=40))
    for start in range(0, len(pairs), 700):
        chunk = pairs[start : start + 700]
        outcomes = app.ingest([to_command(d, b) for d, b in chunk])
        assert all(o.status == "recorded" for o in outcomes), [
            o.error for o in outcomes if o.error
        ][:3]
        for deal_id, body in chunk:
            scripts.setdefault(deal_id, []).append(body)
    service.runner.page = 257  # many batches, so deals straddle batch boundaries
    service.catch_up()
    try:
        yield app, service, scripts
    finally:
        app.close()


def _close(actual: Any, expected: Any) -> bool:
    if expected is None or actual is None:
        return actual is expected
    if isinstance(expected, Decimal):
        return Decimal(actual) == expected.quantize(Decimal("0.000001"))
    if isinstance(expected, float) or isinstance(actual, float):
        return abs(float(actual) - float(expected)) <= 1e-5 * max(1.0, abs(float(expected)))
    return bool(actual == expected)


def _compare(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, value in expected.items():
        if key.startswith("_") or key == "stages":
            continue
        assert _close(actual[key], value), (key, actual[key], value)
    for got, want in zip(actual["stages"], expected["stages"], strict=True):
        for key, value in want.items():
            assert _close(got[key], value), (want["stage"], key, got[key], value)


def _times(scripts: dict[str, list[dict[str, Any]]]) -> list[datetime]:
    moments = sorted(_t(b["occurred_at"]) for b in itertools.chain.from_iterable(scripts.values()))
    first, last = moments[0], moments[-1]
    span = last - first
    # Before anything, early, the middle, exactly at an event, late, and well after the end.
    return [
        first - DAY,
        first + span / 10,
        first + span / 2,
        moments[len(moments) // 3],
        last,
        last + 400 * DAY,
    ]


def test_metrics_equal_the_reference_now_and_as_of(loaded: Any) -> None:
    app, _, scripts = loaded
    for at in _times(scripts):
        actual = metrics(app, BENCH_PIPELINE_ID, Moment(to_us(at), historical=True))
        _compare(actual, expected_metrics(scripts, BENCH_PIPELINE, at))
    now = datetime.now(UTC)
    live = metrics(app, BENCH_PIPELINE_ID, Moment(to_us(now), historical=False))
    _compare(live, expected_metrics(scripts, BENCH_PIPELINE, now))


def test_closed_window_and_breakdown_equal_the_reference(loaded: Any) -> None:
    app, _, scripts = loaded
    times = _times(scripts)
    at, lo, hi = times[4], times[1], times[2]
    actual = metrics(
        app, BENCH_PIPELINE_ID, Moment(to_us(at), True), closed_from=to_us(lo), closed_to=to_us(hi)
    )
    expected = expected_metrics(scripts, BENCH_PIPELINE, at, lo, hi)
    _compare(actual, expected)
    assert 0 < actual["won"] < expected_metrics(scripts, BENCH_PIPELINE, at)["won"]
    for key in ("industry", "owner"):
        result = breakdown(
            app,
            BENCH_PIPELINE_ID,
            key,
            Moment(to_us(at), True),
            closed_from=to_us(lo),
            closed_to=to_us(hi),
        )
        want = expected_breakdown(expected["_deals"], key, lo, hi)
        assert {r["key"] for r in result["rows"]} == set(want)
        if key == "industry":
            assert None in want  # deals without an industry have their own row
        for row in result["rows"]:
            ref = want[row["key"]]
            for field_ in ("deals", "open_deals", "won", "lost"):
                assert row[field_] == ref[field_], (key, row["key"], field_)
            assert Decimal(row["won_value"]) == ref["won_value"]
            won_lost = ref["won"] + ref["lost"]
            assert _close(row["win_rate"], ref["won"] / won_lost if won_lost else None)
            assert _close(
                row["avg_days_to_close_won"],
                statistics.mean(ref["_days"]) if ref["_days"] else None,
            )


def test_stream_has_the_hard_cases(loaded: Any) -> None:
    """The generated history really contains what the comparisons are meant to cover."""
    _, _, scripts = loaded
    bodies = list(itertools.chain.from_iterable(scripts.values()))
    kinds = {b["type"] for b in bodies}
    assert {"reopened", "won", "lost", "updated"} <= kinds
    assert any(b["type"] == "opened" and "industry" not in b for b in bodies)
    STAGE_ORDER[:] = [s["id"] for s in BENCH_PIPELINE["stages"]]
    backward = 0
    for script in scripts.values():
        stage = script[0].get("stage") or "lead"
        for b in script:
            if b["type"] == "stage_changed":
                backward += _direction(stage, b["to_stage"]) == "backward"
                stage = b["to_stage"]
            elif b["type"] == "reopened":
                stage = b["to_stage"]
    assert backward > 0


def test_deals_list_pages_and_filters_like_the_reference(loaded: Any) -> None:
    app, _, scripts = loaded
    at = _times(scripts)[2]
    moment = Moment(to_us(at), True)
    deals = expected_metrics(scripts, BENCH_PIPELINE, at)["_deals"]
    seen: list[str] = []
    cursor = None
    while True:
        page = list_deals(
            app, moment, pipeline_id=BENCH_PIPELINE_ID, status="open", limit=7, cursor=cursor
        )
        seen += [d["deal_id"] for d in page["deals"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    expected = sorted(
        (d for d in deals if d.status == "open"),
        key=lambda d: (d.opened_at, d.deal_id),
        reverse=True,
    )
    assert seen == [d.deal_id for d in expected]
    stale = list_deals(app, moment, pipeline_id=BENCH_PIPELINE_ID, stale=True, limit=500)["deals"]
    limits = {
        s["id"]: timedelta(days=s["max_days_in_stage"])
        for s in BENCH_PIPELINE["stages"]
        if s.get("max_days_in_stage")
    }
    want = {
        d.deal_id
        for d in deals
        if d.status == "open" and d.stage in limits and at - d.stays[-1].entered > limits[d.stage]
    }
    assert {d["deal_id"] for d in stale} == want and want
    assert all(d["stale"] for d in stale)


# ---------------------------------------------------------------------------------------------
# The summary tables (the "now" path) against the row scans and the reference
# ---------------------------------------------------------------------------------------------

from projections.queries.board import board  # noqa: E402
from projections.queries.common import snapshot  # noqa: E402
from projections.queries.metrics import BREAKDOWN_KEYS  # noqa: E402
from projections.queries.summary import summary_applies  # noqa: E402


def _scanned(call: Any) -> Any:
    """``call(fast=False)``: every figure from the row scans (the oracle)."""
    return call(fast=False)


def test_summary_path_equals_the_scan_path_exactly(loaded: Any) -> None:
    app, _, scripts = loaded
    now = Moment(to_us(datetime.now(UTC)), historical=False)
    with snapshot(app) as cur:
        assert summary_applies(cur, BENCH_PIPELINE_ID, now)
    times = _times(scripts)
    windows = [(None, None), (to_us(times[1]), to_us(times[2])), (to_us(times[2]), None)]
    windows.append((None, to_us(times[2])))
    for lo, hi in windows:

        def call(lo: int | None = lo, hi: int | None = hi, fast: bool = True) -> Any:
            return metrics(
                app,
                BENCH_PIPELINE_ID,
                now,
                closed_from=lo,
                closed_to=hi,
                target=Decimal("1e6"),
                fast=fast,
            )

        assert call() == _scanned(call), (lo, hi)
    for key in BREAKDOWN_KEYS:

        def by(key: str = key, fast: bool = True) -> Any:
            return breakdown(app, BENCH_PIPELINE_ID, key, now, fast=fast)

        assert by() == _scanned(by), key
    for limit in (3, 500):

        def columns(limit: int = limit, fast: bool = True) -> Any:
            return board(app, BENCH_PIPELINE_ID, now, limit=limit, fast=fast)

        fast = columns()
        assert fast == _scanned(columns)
        assert fast["stale_deals"] > 0  # the stale counts were really exercised


def test_now_with_a_closed_window_equals_the_reference(loaded: Any) -> None:
    app, _, scripts = loaded
    times = _times(scripts)
    now = datetime.now(UTC)
    for lo, hi in ((times[1], times[2]), (times[2], None), (None, times[1])):
        actual = metrics(
            app,
            BENCH_PIPELINE_ID,
            Moment(to_us(now), historical=False),
            closed_from=None if lo is None else to_us(lo),
            closed_to=None if hi is None else to_us(hi),
        )
        _compare(actual, expected_metrics(scripts, BENCH_PIPELINE, now, lo, hi))
    # The breakdown now, without a window, from the summary tables.
    deals = expected_metrics(scripts, BENCH_PIPELINE, now)["_deals"]
    for key in ("industry", "owner"):
        result = breakdown(app, BENCH_PIPELINE_ID, key, Moment(to_us(now), historical=False))
        want = expected_breakdown(deals, key, None, None)
        assert {r["key"] for r in result["rows"]} == set(want)
        for row in result["rows"]:
            ref = want[row["key"]]
            assert [row[f] for f in ("deals", "open_deals", "won", "lost")] == [
                ref[f] for f in ("deals", "open_deals", "won", "lost")
            ]
            assert Decimal(row["won_value"]) == ref["won_value"]


def test_a_now_before_the_latest_event_is_answered_from_the_rows(loaded: Any) -> None:
    """Events whose business time lies after the moment asked (a clock behind the data): the
    summaries hold them, so stays and qualified leads come from the business-time buckets, cut
    at the moment, and equal the scan."""
    app, _, scripts = loaded
    middle = Moment(to_us(_times(scripts)[2]), historical=False)
    with snapshot(app) as cur:
        assert not summary_applies(cur, BENCH_PIPELINE_ID, middle)
    fast = metrics(app, BENCH_PIPELINE_ID, middle)
    assert fast["open_deals"] > 0
    assert fast == metrics(app, BENCH_PIPELINE_ID, middle, fast=False)
