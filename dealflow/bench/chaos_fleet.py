"""The processes of a scale-out installation on this machine, and receivers that count.

``Fleet`` starts real ``dealflow`` processes (API replicas, workers, one projection runner)
against one PostgreSQL database and one Temporal server, kills them with SIGKILL and starts
them again. ``CountingSmtp`` and ``CountingWebhook`` stand in for the mail server and the
webhook receiver and remember every delivery, duplicates included.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from workflows.devserver import free_port


def dealflow_command() -> str:
    """The ``dealflow`` script next to this interpreter (the same virtualenv)."""
    beside = Path(sys.executable).with_name("dealflow")
    return str(beside) if beside.exists() else (shutil.which("dealflow") or "dealflow")


@dataclass
class Member:
    """One process of the fleet: its command line, and the running child if any."""

    name: str
    argv: list[str]
    log: Path
    port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    log_offset: int = 0  # the log's size when the latest start began

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Fleet:
    env: dict[str, str]
    workdir: Path
    members: dict[str, Member] = field(default_factory=dict)

    def add(self, name: str, *args: str, port: int | None = None) -> Member:
        argv = [dealflow_command(), *args]
        if port is not None:
            argv += ["--port", str(port)]
        member = Member(name, argv, self.workdir / f"{name}.log", port)
        self.members[name] = member
        return member

    def start(self, name: str) -> None:
        member = self.members[name]
        if member.alive:
            return
        member.log.parent.mkdir(parents=True, exist_ok=True)
        member.log_offset = member.log.stat().st_size if member.log.exists() else 0
        with member.log.open("ab") as log:
            member.process = subprocess.Popen(
                member.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        member.starts += 1

    def kill(self, name: str) -> None:
        """SIGKILL: no goodbye, no flush, no rollback by the process itself."""
        member = self.members[name]
        if member.process is not None and member.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(member.process.pid, signal.SIGKILL)
            member.process.wait(10)
            member.kills += 1

    def stop_all(self, timeout: float = 15.0) -> None:
        for member in self.members.values():
            if member.alive and member.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(member.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for member in self.members.values():
            if member.process is None:
                continue
            try:
                member.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(member.process.pid, signal.SIGKILL)
                member.process.wait(10)

    def wait_ready(self, name: str, token: str, timeout: float = 60.0) -> None:
        """Until an API member answers ``/readyz`` with 200."""
        member = self.members[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not member.alive:
                raise RuntimeError(f"{name} exited: {tail(member.log)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{member.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready after {timeout} s: {tail(member.log)}")

    def wait_running(self, name: str, marker: str, timeout: float = 60.0) -> None:
        """Until a member's log shows ``marker`` (a line it prints once it runs)."""
        member = self.members[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not member.alive:
                raise RuntimeError(f"{name} exited: {tail(member.log)}")
            if member.log.exists():
                with member.log.open("rb") as log:
                    log.seek(member.log_offset)
                    if marker.encode() in log.read():
                        return
            time.sleep(0.2)
        raise TimeoutError(f"{name} did not print {marker!r}: {tail(member.log)}")


def tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class CountingWebhook:
    """An HTTP receiver that counts every POST by its ``Idempotency-Key``."""

    def __init__(self) -> None:
        self.received: collections.Counter[str] = collections.Counter()
        self.bodies: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        counter = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                key = self.headers.get("Idempotency-Key") or str(body.get("id"))
                with counter.lock:
                    counter.received[key] += 1
                    counter.bodies[key] = body
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> CountingWebhook:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


class CountingSmtp:
    """An SMTP server (aiosmtpd) that counts every message by dealflow's message id."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.received: collections.Counter[str] = collections.Counter()
        self.subjects: dict[str, str] = {}
        self.lock = threading.Lock()
        counter = self

        class Handler:
            async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
                mail = message_from_bytes(envelope.content)
                key = str(mail.get("X-Dealflow-Message") or mail.get("Message-ID"))
                with counter.lock:
                    counter.received[key] += 1
                    counter.subjects[key] = str(mail.get("Subject"))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def __enter__(self) -> CountingSmtp:
        self.controller.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.controller.stop()
