"""A real HTTP webhook receiver on 127.0.0.1 for tests: records every request, and can be told
to go down, answer slowly, answer with a status, or hold a request until released."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.live import free_port


@dataclass
class Received:
    delivery_id: str
    body: bytes
    headers: dict[str, str]
    at: float

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]

    @property
    def position(self) -> int:
        return int(self.payload["data"]["position"])


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    status: int = 200
    delay: float = 0.0  # seconds before answering
    slow_once: set[str] = field(default_factory=set)  # delivery ids answered slowly the first time
    hold: threading.Event | None = None  # when set up, requests wait for it before answering
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                item = Received(headers.get("webhook-id", ""), body, headers, time.monotonic())
                with receiver._lock:
                    receiver.received.append(item)
                    first = item.delivery_id in receiver.slow_once
                    receiver.slow_once.discard(item.delivery_id)
                if receiver.hold is not None:
                    receiver.hold.wait(60)
                if receiver.delay or first:
                    time.sleep(max(receiver.delay, 3.0 if first else 0.0))
                try:
                    self.send_response(receiver.status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up (timeout, or killed)

            def log_message(self, *_: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Go down: connections are refused until start() again (same port)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def positions(self) -> set[int]:
        return {r.position for r in self.snapshot()}
