"""An operator's mistakes get one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ADMIN_URL
from tests.live import dealflow_env, free_port, run_dealflow


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return dealflow_env(
        tmp_path / "home", without=("TEMPORAL_ADDRESS", "DEALFLOW_BOOTSTRAP_TOKEN"), **extra
    )


def _one_clear_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _base(url: str) -> str:
    return url.rpartition("/")[0]


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("foo", "DATABASE_URL is malformed"),
        ("postgresql://postgres@127.0.0.1:notaport/postgres", "DATABASE_URL is malformed"),
        ("mysql://root@127.0.0.1:3306/test", "must be a postgresql:// URL"),
    ],
)
def test_a_malformed_database_url(tmp_path: Path, url: str, needle: str) -> None:
    _one_clear_line(run_dealflow(_env(tmp_path, DATABASE_URL=url), "migrate"), needle)


@pytest.mark.postgres
def test_a_database_that_does_not_exist(tmp_path: Path, postgres_available: bool) -> None:
    if not postgres_available:
        pytest.fail("PostgreSQL is not answering")
    url = f"{_base(ADMIN_URL)}/no_such_database_here"
    line = _one_clear_line(
        run_dealflow(_env(tmp_path, DATABASE_URL=url), "serve", "--port", str(free_port())),
        "'no_such_database_here' does not exist",
    )
    assert "createdb" in line


def test_a_refused_database_port(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    for command in (["migrate"], ["projections", "status"], ["tokens", "list"]):
        _one_clear_line(
            run_dealflow(_env(tmp_path, DATABASE_URL=url), *command),
            f"127.0.0.1:{port}",
            "start PostgreSQL",
        )


@pytest.mark.parametrize("command", ["serve", "demo", "dev"])
def test_a_busy_port(tmp_path: Path, busy_port: int, command: str) -> None:
    result = run_dealflow(_env(tmp_path), command, "--port", str(busy_port))
    _one_clear_line(result, f"port {busy_port}", "already in use", f"dealflow {command} --port")


def test_an_unreachable_temporal_address(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    line = _one_clear_line(
        run_dealflow(_env(tmp_path, TEMPORAL_ADDRESS=address), "worker"),
        f"no Temporal server answers at {address}",
    )
    assert "TEMPORAL_ADDRESS" in line
    _one_clear_line(
        run_dealflow(_env(tmp_path, TEMPORAL_ADDRESS="nohostport"), "worker"), "HOST:PORT"
    )


def test_serve_says_which_store_and_warns_without_any_token(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "dealflow", "serve", "--port", str(port), "--no-projections"],
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = ""
        deadline = time.monotonic() + 60
        assert process.stderr is not None
        while "Uvicorn running" not in seen and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            seen += line
        assert f"store embedded SQLite at {tmp_path / 'home'}" in seen, seen
        assert "no API token in this store and no DEALFLOW_BOOTSTRAP_TOKEN" in seen, seen
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dealflow", "--version"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stdout.startswith("dealflow ")
    assert result.stdout.split()[1][0].isdigit()


def test_a_bad_setting(tmp_path: Path) -> None:
    _one_clear_line(
        run_dealflow(_env(tmp_path, DEALFLOW_DB_POOL_SIZE="many"), "migrate"),
        "invalid setting",
        "DEALFLOW_DB_POOL_SIZE",
    )
