"""A process started while PostgreSQL goes away, or before it accepts connections, says so in
one line and exits 2 (issue 9 item 6): never a traceback.

A cluster of the test's own (never the shared one). To hit the window between the preflight
(which passed) and the process being up, the child process runs ``dealflow.cli.main`` with the
preflight wrapped: once it has passed, the wrapper stops the cluster (``-m immediate``), so
building the services meets a database that is gone, as in a restart or failover.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.conftest import PG_VERSION, OwnPostgres
from tests.live import dealflow_env

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

# Runs in the child: the real CLI, with the database stopped right after the preflight passed.
STOP_AFTER_PREFLIGHT = """
import subprocess, sys
import dealflow.cli as cli

passed = cli.check_store

def check_then_stop(settings):
    passed(settings)
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", sys.argv[1], sys.argv[2], "stop",
         "-m", "immediate"],
        check=True, capture_output=True, timeout=60,
    )

cli.check_store = check_then_stop
cli.main(sys.argv[3:])
"""


@pytest.fixture
def temporal_port() -> Iterator[int]:
    """Something that accepts TCP on a port, so that the worker's Temporal preflight passes
    and the process goes on to open the store."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


def _assert_one_line(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for part in expected:
        assert part in lines[0], output


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "command",
    [["serve", "--port", "0"], ["projections", "run"], ["worker"]],
    ids=["serve", "projections-run", "worker"],
)
def test_store_gone_after_the_preflight(
    own_postgres: OwnPostgres, temporal_port: int, tmp_path: Path, command: list[str]
) -> None:
    env = dealflow_env(tmp_path, own_postgres.url, TEMPORAL_ADDRESS=f"127.0.0.1:{temporal_port}")
    result = subprocess.run(
        [sys.executable, "-c", STOP_AFTER_PREFLIGHT, PG_VERSION, own_postgres.name, *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    _assert_one_line(
        result,
        f"while `dealflow {' '.join(command[:2] if command[0] == 'projections' else command[:1])}`",
        f"nothing accepts connections at 127.0.0.1:{own_postgres.port}",
    )


@pytest.mark.timeout(300)
def test_store_not_accepting_connections(own_postgres: OwnPostgres, tmp_path: Path) -> None:
    """A server that is up but refuses sessions (here a standby without hot standby: "the
    database system is not accepting connections"; "starting up" and "shutting down" are
    the same kind of answer) is one line from the preflight."""
    own_postgres.stop_immediately()
    data = Path(f"/var/lib/postgresql/{PG_VERSION}/{own_postgres.name}")
    (data / "standby.signal").touch()
    subprocess.run(["chown", "postgres", str(data / "standby.signal")], check=True)
    conf = Path(f"/etc/postgresql/{PG_VERSION}/{own_postgres.name}/postgresql.conf")
    conf.write_text(conf.read_text() + "\nhot_standby = off\n")
    own_postgres.start()
    for command in (["serve", "--port", "0"], ["projections", "run"]):
        result = subprocess.run(
            [sys.executable, "-m", "dealflow", *command],
            env=dealflow_env(tmp_path, own_postgres.url),
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        _assert_one_line(result, f"127.0.0.1:{own_postgres.port}", "does not accept connections")
