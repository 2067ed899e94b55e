"""A tiny HTTP side door for processes that are not the API (worker, projection runner):
``/healthz`` (alive), ``/readyz`` (the store answers) and ``/metrics`` (Prometheus text).

Started on ``DEALFLOW_METRICS_PORT`` when that is set, so probes and Prometheus scrape every
process of the topology the same way (see deploy/). It listens on ``DEALFLOW_METRICS_HOST``,
loopback unless a deployment opens it (as ``dealflow serve --host`` defaults to loopback), and
``/metrics`` asks for the same ``read`` token as the API's: one scrape configuration for
every process, and nothing readable by whoever can reach the port. The probes stay open:
kubelets and compose health checks carry no token, and they say nothing but up/ready.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from engine.settings import Settings
from engine.tokens import Principal

MetricsSource = Callable[[], dict[str, float]]
# A token's value -> who it is (None: unknown, expired or revoked); TokenStore.authenticate.
TokenCheck = Callable[[str], Principal | None]
METRICS_SCOPE = "read"


class OpsServer:
    def __init__(
        self,
        port: int,
        ready: Callable[[], bool],
        metrics: MetricsSource,
        authenticate: TokenCheck,
        host: str = "127.0.0.1",
        timeout: float = 10.0,
    ) -> None:
        outer = self
        read_timeout = timeout

        class Handler(BaseHTTPRequestHandler):
            # A timeout on each socket read: a client that connects and sends nothing (or
            # stops) frees its thread instead of holding it for ever. Requests are HTTP/1.0,
            # one per connection, so there is no keep-alive to bound.
            timeout = read_timeout

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path == "/healthz":
                    outer._reply(self, 200, "ok\n")
                elif self.path == "/readyz":
                    ok = outer._safe_ready()
                    outer._reply(self, 200 if ok else 503, "ready\n" if ok else "not ready\n")
                elif self.path == "/metrics":
                    refused = outer._refusal(self.headers.get("Authorization", ""))
                    if refused is not None:
                        status, body, headers = refused
                        outer._reply(self, status, body, "application/json", headers)
                        return
                    lines = [f"{name} {value}" for name, value in outer._safe_metrics().items()]
                    outer._reply(self, 200, "\n".join(lines) + "\n", "text/plain; version=0.0.4")
                else:
                    outer._reply(self, 404, "not found\n")

            def log_message(self, *_: object) -> None:  # probes every few seconds: keep logs quiet
                return

        self._ready = ready
        self._metrics = metrics
        self._authenticate = authenticate
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ops-server", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def _safe_ready(self) -> bool:
        try:
            return bool(self._ready())
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False

    def _safe_metrics(self) -> dict[str, float]:
        try:
            return self._metrics()
        except Exception:  # noqa: BLE001 - a scrape must not kill the process
            return {"dealflow_metrics_errors": 1}

    def _refusal(self, header: str) -> tuple[int, str, dict[str, str]] | None:
        """The API's answers (engine.api.deps) for a missing, unknown or too narrow token."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _error(
                401, "unauthorized", "send Authorization: Bearer <token>", 'realm="dealflow"'
            )
        try:
            principal = self._authenticate(token.strip())
        except Exception:  # noqa: BLE001 - the store is down: the token cannot be checked
            return _error(
                503, "store_unavailable", "cannot check the token: the store is unreachable"
            )
        if principal is None:
            return _error(
                401,
                "unauthorized",
                "unknown, expired or revoked token",
                'realm="dealflow", error="invalid_token"',
            )
        if not principal.has(METRICS_SCOPE):
            return _error(403, "forbidden", f"this token lacks the scope(s): {METRICS_SCOPE}")
        return None

    @staticmethod
    def _reply(
        handler: BaseHTTPRequestHandler,
        status: int,
        body: str,
        content_type: str = "text/plain",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def start(self) -> OpsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _error(
    status: int, code: str, message: str, challenge: str | None = None
) -> tuple[int, str, dict[str, str]]:
    headers = {"WWW-Authenticate": f"Bearer {challenge}"} if challenge else {}
    return status, json.dumps({"error": code, "message": message}), headers


def start_from_env(
    ready: Callable[[], bool], metrics: MetricsSource, authenticate: TokenCheck
) -> OpsServer | None:
    """Start the side door when DEALFLOW_METRICS_PORT is set; return None otherwise."""
    settings = Settings.load()
    if not settings.metrics_port:
        return None
    return OpsServer(
        int(settings.metrics_port),
        ready,
        metrics,
        authenticate,
        host=settings.metrics_host,
        timeout=settings.http_header_timeout,
    ).start()
