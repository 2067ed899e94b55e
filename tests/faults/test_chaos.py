"""The scale-out crash test: two APIs, two workers and a projection runner as real processes
on PostgreSQL and the Temporal dev server, SIGKILLed under load and started again.

The short variant runs in CI; the long one (more rounds, more load) is marked ``chaos_long``:
``scripts/test -m chaos_long tests/faults``. What is checked is in dealflow.bench.chaos_checks;
the figures are printed (``-s``) as ``dealflow bench chaos`` prints them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dealflow.bench.chaos import ChaosConfig, run_chaos

pytestmark = [pytest.mark.postgres, pytest.mark.temporal, pytest.mark.slow]


def _assert_clean(config: ChaosConfig) -> None:
    rounds = config.rounds
    report = run_chaos(config)
    print(f"\n{report.render()}\n{report.events}")
    assert report.ok, report.violations
    figures = report.figures
    # Each round kills an API, a worker and the projection runner.
    assert figures["kills"] == 3 * rounds and figures["restarts"] == 3 * rounds
    assert figures["events_acknowledged"] > 0
    assert figures["events_found"] == figures["events_acknowledged"]
    assert figures["events_lost"] == 0 and figures["events_duplicated"] == 0
    # The kills were felt (clients saw broken connections and retried)...
    assert figures["transport_errors"] > 0
    # ...and automation ran through them: escalations and nurture touches were delivered.
    assert figures["escalations_fired"] > 0 and figures["nurture_touches"] > 0
    assert figures["smtp_received"] > 0 and figures["webhook_received"] > 0
    assert figures["smtp_duplicates"] == 0 and figures["webhook_duplicates"] == 0


@pytest.mark.timeout(600)
def test_crash_short(pg_url: str, tmp_path: Path) -> None:
    _assert_clean(
        ChaosConfig(
            database_url=pg_url,
            workdir=tmp_path,
            rounds=1,
            before=3.0,
            gap=1.0,
            after=3.0,
            threads=2,
            pause=0.05,
        ),
    )


@pytest.mark.chaos_long
@pytest.mark.timeout(1800)
def test_crash_long(pg_url: str, tmp_path: Path) -> None:
    _assert_clean(
        ChaosConfig(
            database_url=pg_url,
            workdir=tmp_path,
            rounds=4,
            before=8.0,
            gap=4.0,
            after=10.0,
            threads=3,
            pause=0.02,
            # Workers killed mid-activity leave it to Temporal's 30-60 s activity timeouts, and
            # thousands of timers come due at once on two shared cores.
            settle=360.0,
        ),
    )
