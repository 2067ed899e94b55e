"""A tiny HTTP side door for processes that are not the API (worker, projection runner):
``/healthz`` (alive), ``/readyz`` (the store answers) and ``/metrics`` (Prometheus text).

Started on ``DEALFLOW_METRICS_PORT`` when that is set, so probes and Prometheus scrape every
process of the topology the same way (see deploy/).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from engine.settings import Settings

MetricsSource = Callable[[], dict[str, float]]


class OpsServer:
    def __init__(
        self, port: int, ready: Callable[[], bool], metrics: MetricsSource, host: str = "0.0.0.0"
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path == "/healthz":
                    outer._reply(self, 200, "ok\n")
                elif self.path == "/readyz":
                    ok = outer._safe_ready()
                    outer._reply(self, 200 if ok else 503, "ready\n" if ok else "not ready\n")
                elif self.path == "/metrics":
                    lines = [f"{name} {value}" for name, value in outer._safe_metrics().items()]
                    outer._reply(self, 200, "\n".join(lines) + "\n", "text/plain; version=0.0.4")
                else:
                    outer._reply(self, 404, "not found\n")

            def log_message(self, *_: object) -> None:  # probes every few seconds: keep logs quiet
                return

        self._ready = ready
        self._metrics = metrics
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

    @staticmethod
    def _reply(
        handler: BaseHTTPRequestHandler, status: int, body: str, content_type: str = "text/plain"
    ) -> None:
        data = body.encode()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def start(self) -> OpsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def start_from_env(ready: Callable[[], bool], metrics: MetricsSource) -> OpsServer | None:
    """Start the side door when DEALFLOW_METRICS_PORT is set; return None otherwise."""
    port = Settings.load().metrics_port
    if not port:
        return None
    return OpsServer(int(port), ready, metrics).start()
