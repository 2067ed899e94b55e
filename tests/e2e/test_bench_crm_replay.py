"""`dealflow bench crm-replay`: a small replay of the CRM export through a real `serve` with its
projections prints and writes every figure, each computed from what was measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_crm_replay_records_every_event_and_reports_the_growth(pg_url: str, tmp_path: Path) -> None:
    out = tmp_path / "replay.json"
    done = subprocess.run(
        [sys.executable, "-m", "dealflow", "bench", "crm-replay", "--copies", "3"]
        + ["--deals", "400", "--batch", "1000", "--poll", "0.5", "--json", str(out)]
        + ["--db-prefix", "dealflow_test_"],
        env={**os.environ, "DATABASE_URL": pg_url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    r = json.loads(out.read_text())
    per_copy = r["events_per_copy"]
    assert r["copies_done"] == 3 and not r["stopped_by_max_seconds"]
    assert r["deals"] == 3 * 400 and per_copy > 400
    # Every event of every copy recorded (new ids per copy), every request answered 200.
    assert r["events"] == r["recorded"] == 3 * per_copy
    assert r["item_statuses"] == {"recorded": r["events"]}
    assert set(r["http_statuses"]) == {"200"}
    assert sum(r["http_statuses"].values()) == 3 * r["requests_per_copy"]
    # The log holds them all (plus the automation's follow-ups on won deals).
    assert r["head_position"] >= r["events"]
    rows = r["windows"]
    assert sorted(w["copy"] for w in rows) == [0, 1, 2]
    assert all(w["events_per_s"] > 0 and w["seconds"] > 0 for w in rows)
    assert r["empty_store_events_per_s"] == rows[0]["events_per_s"]
    # Windows' seconds are kept to the millisecond: a window of a few tenths of a second moves
    # its rate by up to ~0.3% between the two roundings.
    assert r["last_copies"] == 1 and r["last_copies_events_per_s"] == pytest.approx(
        rows[-1]["events_per_s"], rel=1e-2
    )
    assert r["last_ratio_vs_empty"] == pytest.approx(
        r["last_copies_events_per_s"] / r["empty_store_events_per_s"], abs=1e-3
    )
    assert r["average_events_per_s"] == pytest.approx(r["events"] / r["write_seconds"], rel=1e-2)
    # The projections caught up; sustained counts that time too.
    assert r["projection_drain_s"] is not None
    assert 0 < r["sustained_events_per_s"] <= r["average_events_per_s"]
    assert r["sustained_ratio_vs_empty"] == pytest.approx(
        r["sustained_events_per_s"] / r["empty_store_events_per_s"], abs=1e-3
    )
    # Where the server's CPU went while writing, by process and by thread.
    assert r["cpu_s_total"]["server"] > 0 and r["server_threads_cpu_s"]
    assert r["lag_samples"] and all(lag >= 0 for _, _, lag in r["lag_samples"])
    sizes = r["sizes_end"]
    assert sizes["events"] > 0 and sizes["keys"] > 0 and sizes["read_models"] > 0
    assert sizes["database"] >= sizes["events"]
    assert "ratio vs empty" in done.stdout and "sustained" in done.stdout
