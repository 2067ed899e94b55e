"""The median of days to close won, walked inside its day bucket from the nearer end: for every
count of won deals (odd and even, the middle ranks low, high, and split across two buckets),
now and as of each moment, it equals the exact median and the scan (``fast=False``)."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta

from dealflow.bench.synthetic import BENCH_PIPELINE, BENCH_PIPELINE_ID, to_command
from engine.application import DealflowApp
from engine.domain.pipeline import PipelineDefinition
from projections.queries.common import Moment
from projections.queries.metrics import metrics
from projections.readmodel.records import to_us
from projections.runtime import ProjectionsService


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


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
        commands = [
            to_command(
                f"m-{n}",
                {
                    "type": "opened",
                    "pipeline_id": BENCH_PIPELINE_ID,
                    "name": f"m {n}",
                    "event_id": f"m-{n}-0",
                    "occurred_at": _iso(opened),
                },
            ),
            to_command(
                f"m-{n}", {"type": "won", "event_id": f"m-{n}-1", "occurred_at": _iso(won_at)}
            ),
        ]
        assert all(o.status == "recorded" for o in app.ingest(commands))
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
