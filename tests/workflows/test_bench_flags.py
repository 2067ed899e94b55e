"""`dealflow bench workflows --sleeping N --workers 2`, tiny: the figures are there, and the extra
worker process stops cleanly."""

from __future__ import annotations

import pytest
from temporalio.testing import WorkflowEnvironment

from dealflow.bench import workflows as bench

pytestmark = pytest.mark.temporal


async def test_sleeping_bench_with_a_second_worker(
    temporal_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", temporal_env.client.service_client.config.target_host)
    monkeypatch.setattr(bench, "SLEEP_SAMPLE_SECONDS", 1.0)
    figures = await bench.run_bench(5, workers=2, sleeping=True)
    assert figures["sleeping_deals"] == 5
    assert figures["workflow_starts"] == 10  # an escalation and an enrollment per deal
    assert figures["time_to_start_all_s"] > 0
    assert figures["worker_rss_mb_while_sleeping"]["max"] > 0
    assert len(figures["other_workers_rss_mb"]) == 1 and figures["other_workers_rss_mb"][0] > 0
    assert figures["dev_server_rss_mb"] is None  # an explicit server: not the bench's to measure
