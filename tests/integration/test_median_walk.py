"""The median of days to close won, walked inside its day bucket from the nearer end: for every
count of won deals (odd and even, the middle ranks low, high, and split across two buckets),
now and as of each moment, it equals the exact median and the scan (``fast=False``)."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dealflow.bench.synthetic import BENCH_PIPELINE, BENCH_PIPELINE_ID, to_command
from engine.application import DealflowApp
from engine.domain.pipeline import PipelineDefinition
from engine.persistence import db as db_module
from projections.queries.common import Moment
from projections.queries.metrics import metrics
from projections.readmodel.records import to_us
from projections.runtime import ProjectionsService


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _open_and_win(app: DealflowApp, deal_id: str, opened: datetime, won_at: datetime) -> None:
    commands = [
        to_command(
            deal_id,
            {
                "type": "opened",
                "pipeline_id": BENCH_PIPELINE_ID,
                "name": deal_id.replace("-", " "),
                "event_id": f"{deal_id}-0",
                "occurred_at": _iso(opened),
            },
        ),
        to_command(
            deal_id, {"type": "won", "event_id": f"{deal_id}-1", "occurred_at": _iso(won_at)}
        ),
    ]
    assert all(o.status == "recorded" for o in app.ingest(commands))


def test_the_median_walk_equals_the_exact_median(app: DealflowApp) -> None:
    app.put_pipeline(BENCH_PIPELINE_ID, PipelineDefinition.model_validate(BENCH_PIPELINE), "test")
    service = ProjectionsService(app, run=False)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=60)
    # Most durations inside one day bucket (3 days and some minutes, in a shuffled order),
    # a few in the buckets either side, so the middle moves through the crowded bucket.
    minutes = [(i * 37) % 23 * 50 for i in range(23)]
    durations = [timedelta(days=3, minutes=m, seconds=i) for i, m in enumerate(minutes)]
    # Longer ones early put the middle in the crowded bucket's upper half (walked backwards),
    # shorter ones later bring it down to the lower half (walked forwards).
    durations[3:3] = [timedelta(days=d, hours=d) for d in range(5, 11)]
    durations[20:20] = [timedelta(days=1, hours=h) for h in (2, 5, 9, 13, 17, 21, 23)]
    durations.insert(25, timedelta(days=2, hours=23, minutes=59))
    won_days: list[float] = []
    last_won = start
    for n, duration in enumerate(durations):
        opened = start + timedelta(hours=n)
        won_at = opened + duration
        _open_and_win(app, f"m-{n}", opened, won_at)
        service.catch_up()
        won_days.append(duration / timedelta(days=1))
        last_won = max(last_won, won_at)
        expected = round(statistics.median(won_days), 6)
        now = Moment(to_us(datetime.now(UTC)), historical=False)
        as_of = Moment(to_us(last_won), historical=True)  # every deal so far had won by then
        for moment in (now, as_of):
            fast = metrics(app, BENCH_PIPELINE_ID, moment)
            oracle = metrics(app, BENCH_PIPELINE_ID, moment, fast=False)
            assert fast["won"] == n + 1
            assert fast["median_days_to_close_won"] == oracle["median_days_to_close_won"]
            assert fast["median_days_to_close_won"] == expected, (n, moment)
    # Early in the history: only the deals won by then count.
    for hours in (80, 90, 100, 120):
        moment = Moment(to_us(start + timedelta(hours=hours)), historical=True)
        done = [
            d / timedelta(days=1)
            for n, d in enumerate(durations)
            if start + timedelta(hours=n) + d <= start + timedelta(hours=hours)
        ]
        answer = metrics(app, BENCH_PIPELINE_ID, moment)
        assert answer["won"] == len(done) > 0
        assert answer["median_days_to_close_won"] == round(statistics.median(done), 6), hours


def test_whole_day_buckets_and_windows_need_no_walk(
    app: DealflowApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole-day durations (a CRM export's dates: every event at midnight) fill a bucket with
    one value: the median takes it from two index probes, without walking the bucket, now, as
    of a time and in a closed window; one odd value in the bucket brings the walk back. Every
    answer equals the exact median and the scan."""
    app.put_pipeline(BENCH_PIPELINE_ID, PipelineDefinition.model_validate(BENCH_PIPELINE), "test")
    service = ProjectionsService(app, run=False)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = midnight - timedelta(days=90)
    plan = [(n, 3 if n % 3 else 5) for n in range(11)]  # opened on day n, won after 3 or 5 days

    for n, days in plan:
        opened = start + timedelta(days=n)
        _open_and_win(app, f"w-{n}", opened, opened + timedelta(days=days))
    service.catch_up()

    walks: list[str] = []
    original = db_module.Cursor.execute

    def recording(self: db_module.Cursor, sql: str, params: Any = ()) -> db_module.Cursor:
        if "OFFSET" in sql:
            walks.append(sql)
        return original(self, sql, params)

    monkeypatch.setattr(db_module.Cursor, "execute", recording)
    now = Moment(to_us(datetime.now(UTC)), historical=False)
    as_of = Moment(to_us(start + timedelta(days=12, hours=5)), historical=True)
    # Windows with edges inside a day (the edge days come from the rows) and on midnights.
    windows = [
        (None, None),
        (to_us(start + timedelta(days=4, hours=7)), to_us(start + timedelta(days=13, hours=1))),
        (to_us(start + timedelta(days=6)), to_us(start + timedelta(days=11))),
        (to_us(start + timedelta(days=8, hours=1)), to_us(start + timedelta(days=8, hours=2))),
        (None, to_us(start + timedelta(days=9, hours=12))),
    ]

    def check(expect_walk: bool) -> None:
        for moment in (now, as_of):
            for lo, hi in windows if not moment.historical else [(None, None)]:
                walks.clear()
                fast = metrics(app, BENCH_PIPELINE_ID, moment, closed_from=lo, closed_to=hi)
                probes = len(walks)
                oracle = metrics(
                    app, BENCH_PIPELINE_ID, moment, closed_from=lo, closed_to=hi, fast=False
                )
                assert fast == oracle, (moment, lo, hi)
                if not expect_walk:
                    assert probes == 0, (moment, lo, hi)

    check(expect_walk=False)
    assert metrics(app, BENCH_PIPELINE_ID, now)["median_days_to_close_won"] == 3.0
    # Three days and an hour: the 3-day bucket no longer holds a single value.
    _open_and_win(app, "w-99", start + timedelta(days=20), start + timedelta(days=23, hours=1))
    service.catch_up()
    check(expect_walk=True)
    walks.clear()
    assert metrics(app, BENCH_PIPELINE_ID, now)["median_days_to_close_won"] == 3.0
    assert walks  # the bucket is walked again
