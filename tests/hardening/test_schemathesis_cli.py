"""The external check of issue 9, defect 12: ``schemathesis run --checks all`` -- every phase,
the stateful one included -- against the document a real ``dealflow serve`` serves, on SQLite
and on PostgreSQL, must report zero failures (not only zero 5xx).

The CLI runs as its own process against the served ``/openapi.json`` over HTTP, exactly as an
outside client would. Bounded (``--max-examples``) and reproducible (``--seed`` with
``--generation-deterministic``, one worker). Its configuration, ``schemathesis.toml`` next to
this file, narrows only what the binding contract requires, each item with its reason.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live import dealflow_env, serve_process

TOKEN = "schemathesis-bootstrap-token"
CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 10
SEED = 20261201
PHASES = "examples,coverage,fuzzing,stateful"


def schemathesis_command(url: str, report: Path) -> list[str]:
    exe = Path(sys.executable).with_name("schemathesis")
    return [
        str(exe),
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        PHASES,
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
    ]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def served_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    database_url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    env = dealflow_env(tmp_path / "home", database_url, DEALFLOW_BOOTSTRAP_TOKEN=TOKEN)
    with serve_process(env, tmp_path) as url:
        # Something for path parameters and links to reach: one deal on the built-in pipeline.
        opened = httpx.post(
            f"{url}/v1/deals/st-1/events",
            json={"type": "opened", "event_id": "st-open", "pipeline_id": "default", "name": "S"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert opened.status_code == 201, opened.text
        yield url


def test_schemathesis_run_all_checks_reports_no_failure(served_url: str, tmp_path: Path) -> None:
    started = time.monotonic()
    run = subprocess.run(
        schemathesis_command(served_url, tmp_path / "junit.xml"),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - started
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"schemathesis failed after {elapsed:.0f} s:\n{output[-20000:]}"
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert phase in output, f"the {phase} phase did not run:\n{output[-5000:]}"
