"""Live dealflow for tests: the API served by uvicorn in a thread of the test process (for
streaming clients and browsers), and real ``dealflow`` processes with their environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from dealflow.http import create_app
from dealflow.server import uvicorn_options
from engine.services import Services
from engine.settings import Settings
from workflows.devserver import free_port

__all__ = [
    "dealflow_command",
    "dealflow_env",
    "free_port",
    "run_dealflow",
    "serve_process",
    "served",
    "stop_process",
    "wait_healthy",
]


@contextmanager
def served(services: Services, settings: Settings | None = None) -> Iterator[str]:
    """The whole HTTP app over ``services`` on a free port of this machine until the block
    ends, served as ``dealflow serve`` serves it (connection limits from ``settings``, by
    default the environment's); yields its base URL."""
    import uvicorn

    settings = settings or Settings.load()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(services, body_timeout_s=settings.http_body_timeout),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            **uvicorn_options(settings),
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# -- dealflow as a separate process --------------------------------------------------------------


def dealflow_command() -> list[str]:
    """The ``dealflow`` console script of this interpreter's environment."""
    exe = Path(sys.executable).with_name("dealflow")
    return [str(exe)] if exe.exists() else [shutil.which("dealflow") or "dealflow"]


def dealflow_env(
    home: Path, database_url: str | None = None, *, without: Iterable[str] = (), **extra: str
) -> dict[str, str]:
    """This process's environment for a ``dealflow`` child on the store at ``home`` (SQLite, or
    PostgreSQL at ``database_url``): an inherited DATABASE_URL never leaks in; the variables in
    ``without`` are dropped and ``extra`` is set last."""
    dropped = {"DATABASE_URL", *without}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["DEALFLOW_HOME"] = str(home)
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(extra)
    return env


def run_dealflow(
    env: dict[str, str], *args: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``python -m dealflow ARGS`` to completion, its output captured (exit code not checked)."""
    return subprocess.run(
        [sys.executable, "-m", "dealflow", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def wait_healthy(
    url: str, process: subprocess.Popen[Any], timeout: float = 60.0, log: Path | None = None
) -> None:
    """Poll ``{url}/healthz`` until it answers 200; fail if ``process`` exits first (with its
    log, when it writes one) or nothing answers within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            output = log.read_text() if log is not None else ""
            raise AssertionError(
                f"dealflow exited ({process.returncode}) before /healthz: {output}"
            )
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url}/healthz did not answer within {timeout:.0f} s")
        time.sleep(0.1)


def stop_process(process: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if the process is still there after ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@contextmanager
def serve_process(env: dict[str, str], workdir: Path, *args: str) -> Iterator[str]:
    """``dealflow serve ARGS`` on a free port, its output in ``workdir/serve.log``; yields the
    base URL once /healthz answers and stops the process when the block ends."""
    port = free_port()
    log = workdir / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*dealflow_command(), "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log=log)
        yield url
    finally:
        stop_process(process)
