"""How dealflow's HTTP API is served: uvicorn with bounded waits on slow or idle clients.

uvicorn closes a keep-alive connection only some seconds after a response, and only while no
byte arrives. A connection that opens and sends nothing, or sends its request head a byte at a
time (slowloris), was held for ever: each costs a socket and memory, and enough of them starve
the process. :class:`BoundedH11Protocol` gives every request head ``DEALFLOW_HTTP_HEADER_TIMEOUT``
seconds, counted from the connection opening or, on a kept-alive connection, from the first
byte of the next request; a body has
``DEALFLOW_HTTP_BODY_TIMEOUT`` seconds after its head (``engine.api.middleware.BodySizeLimit``,
which answers 408); an idle keep-alive connection ``DEALFLOW_HTTP_KEEPALIVE_TIMEOUT`` seconds.
``dealflow serve``, ``dealflow dev`` and the tests' live server all take their uvicorn options
from :func:`uvicorn_options`, so the limits hold wherever the API runs.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from engine.settings import Settings


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol that closes a connection whose request head is overdue.

    On a new connection the head is awaited from ``connection_made``; on a kept-alive one
    from the first byte after the previous response (until then the connection is idle, and
    idleness is the keep-alive timeout's business: a proxy keeping connections open longer
    than the head timeout must not be cut off). The timer stops once the head has arrived
    (uvicorn then has a request cycle under way). A connection that sent part of a head is
    told 408 before it is closed; one that sent nothing is just closed, as uvicorn closes an
    idle keep-alive connection."""

    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head(started=True)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head(started=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Bytes of the next request may be buffered already (pipelining): they count.
        self._watch_head(started=bool(self.conn.trailing_data[0]))

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._stop_head_timer()  # the connection is another protocol's from here on
        super().handle_websocket_upgrade(event)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _awaiting_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _watch_head(self, started: bool) -> None:
        if self.transport is None or self.transport.is_closing() or not self._awaiting_head():
            self._stop_head_timer()
        elif started and self._head_timer is None:
            # Not restarted by each byte: a head dribbled in must still be whole in time.
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_overdue)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._awaiting_head():
            return
        if self.conn.trailing_data[0]:
            # Part of a head came: say why before closing (h11 cannot answer a request it has
            # not parsed, so the response is written directly).
            self.transport.write(_request_timeout(self.header_timeout))
        self.transport.close()


def _request_timeout(limit: float) -> bytes:
    body = json.dumps(
        {
            "error": "request_timeout",
            "message": f"the request head did not arrive within {limit:g} s",
        }
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def bounded_protocol(header_timeout: float) -> type[BoundedH11Protocol]:
    """The protocol class with this head timeout (uvicorn instantiates it per connection)."""
    return type("BoundedH11Protocol", (BoundedH11Protocol,), {"header_timeout": header_timeout})


class SettingsH11Protocol(BoundedH11Protocol):
    """:class:`BoundedH11Protocol` with the head timeout of this process's environment, for
    ``dealflow serve --workers N``: uvicorn pickles its options into each worker process, and
    only a class importable by name survives that (``bounded_protocol``'s classes do not)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = _environment_header_timeout()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # The supervisor's socket is made with protocol number 0, so asyncio, which sets
        # TCP_NODELAY only on sockets that say IPPROTO_TCP, leaves Nagle on for every accepted
        # connection: a response written in two parts then waits for the client's delayed ACK
        # (~40 ms a request). Set it here, as a single `serve` gets it from asyncio.
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


@functools.cache
def _environment_header_timeout() -> float:
    return Settings.load().http_header_timeout


def worker_options(settings: Settings) -> dict[str, Any]:
    """:func:`uvicorn_options` for worker processes (the same limits, from the environment)."""
    return {**uvicorn_options(settings), "http": SettingsH11Protocol}


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What ``uvicorn.run``/``uvicorn.Config`` take to apply dealflow's connection limits
    (the body's deadline is the app's: ``create_app(body_timeout_s=...)``)."""
    return {
        "http": bounded_protocol(settings.http_header_timeout),
        "timeout_keep_alive": settings.http_keepalive_timeout,
    }
