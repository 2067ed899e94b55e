"""A served ``dealflow serve`` for the HTTP benches: started on a free port as its own process
(N workers, no projections unless asked), ready once every worker answered, and stopped at the
end."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workflows.devserver import free_port


@contextmanager
def serving(database_url: str, workers: int, token: str) -> Iterator[int]:
    """``dealflow serve --workers N --no-projections`` on a free port until the block ends."""
    with served_process(database_url, workers, token) as (port, _):
        yield port


@contextmanager
def served_process(
    database_url: str, workers: int, token: str, projections: bool = False
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``dealflow serve --workers N`` (with its in-process projections when ``projections``)
    on a free port until the block ends: the port and the server process."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "DEALFLOW_BOOTSTRAP_TOKEN": token}
    exe = Path(sys.executable).with_name("dealflow")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "dealflow"]
    process = subprocess.Popen(
        [*cmd, "serve", "--port", str(port), "--workers", str(workers)]
        + ([] if projections else ["--no-projections"])
        + ["--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        asyncio.run(_wait_ready(port, process, workers))
        yield port, process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


async def _wait_ready(port: int, process: subprocess.Popen[bytes], workers: int) -> None:
    """Until every worker has answered /healthz (each names itself in X-Dealflow-Worker)."""
    deadline = time.monotonic() + 60
    seen: set[str] = set()
    while len(seen) < workers:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"dealflow serve --workers {workers} did not start")
        conns = []
        try:
            conns = [await Conn.open(port, "") for _ in range(4 * workers)]
            answers = await asyncio.gather(*(c.request("GET", "/healthz") for c in conns))
            seen.update(a[2].get("x-dealflow-worker", "") for a in answers if a[0] == 200)
        except OSError:
            await asyncio.sleep(0.1)
        finally:
            for conn in conns:
                conn.close()


class Conn:
    """One keep-alive HTTP/1.1 connection (JSON bodies, content-length framing)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str):
        self.reader, self.writer, self.token = reader, writer, token

    @classmethod
    async def open(cls, port: int, token: str) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, token)

    async def request(
        self, method: str, path: str, body: Any = None
    ) -> tuple[int, bytes, dict[str, str]]:
        """``body``: a JSON value, or bytes already encoded."""
        if isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode() if body is not None else b""
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            f"authorization: Bearer {self.token}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n\r\n"
        )
        self.writer.write(head.encode() + data)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        payload = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, payload, headers

    def close(self) -> None:
        self.writer.close()
