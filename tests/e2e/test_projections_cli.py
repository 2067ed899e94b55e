"""`dealflow projections run|status|rebuild` as separate processes (embedded SQLite store)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from dealflow.bench.synthetic import BENCH_PIPELINE, BENCH_PIPELINE_ID, stream, to_command
from engine.application import DealflowApp
from engine.domain.pipeline import PipelineDefinition
from engine.persistence.settings import StoreSettings
from tests.live import dealflow_env, run_dealflow


def _dealflow(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_dealflow(dealflow_env(home), *args, timeout=60)


def test_run_follows_the_log_and_stops_on_sigterm_then_rebuild(tmp_path: Path) -> None:
    home = tmp_path / "home"
    app = DealflowApp(StoreSettings(database_url=None, home=home))
    app.put_pipeline(BENCH_PIPELINE_ID, PipelineDefinition.model_validate(BENCH_PIPELINE), "test")
    app.ingest([to_command(d, b) for d, b in stream(20, seed=4)])
    head = app.max_position()
    runner = subprocess.Popen(
        [sys.executable, "-m", "dealflow", "projections", "run"],
        env=dealflow_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Generous: on a loaded machine each `status` is a new interpreter taking seconds, and
        # the runner's own start as long (30 s was once not enough in CI).
        deadline = time.monotonic() + 120
        status: list[dict[str, object]] = []
        failures: list[str] = []  # a `status` that failed is reported, not a JSON error
        while time.monotonic() < deadline and runner.poll() is None:
            answer = _dealflow(home, "projections", "status", "--json")
            if answer.returncode != 0 or not answer.stdout.strip():
                failures.append(f"exit {answer.returncode}: {answer.stderr[-500:]}")
            else:
                status = json.loads(answer.stdout)
                if status[0]["position"] == head:
                    break
            time.sleep(0.3)
        assert runner.poll() is None, f"the runner exited early: {runner.communicate()}"
        assert status and status[0]["position"] == head and status[0]["lag"] == 0, failures
    finally:
        runner.send_signal(signal.SIGTERM)
        out, err = runner.communicate(timeout=30)
    assert runner.returncode == 0, err
    assert "projections stopped" in out
    rebuilt = _dealflow(home, "projections", "rebuild", "--name", "deals")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"rebuilt up to position {head}" in rebuilt.stdout
    assert _dealflow(home, "projections", "rebuild", "--name", "nope").returncode == 2
    app.close()
