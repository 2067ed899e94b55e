"""ASGI middleware every dealflow HTTP app wears."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_BODY_TIMEOUT_S = 60.0  # engine.settings: DEALFLOW_HTTP_BODY_TIMEOUT


class BodySizeLimit:
    """Refuse a request body over the limit with 413, before it is read into memory; and one
    that takes longer than ``timeout_s`` after the request's head to arrive with 408 (a client
    sending a byte now and then would otherwise hold the connection and its task for ever).

    The deadline covers the body only: once it is complete (or the request had none), later
    ``receive`` calls -- a streaming response waiting for the client to go -- are passed on
    untouched."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _too_large(send, self.max_bytes)
            return
        received = 0
        complete = False
        responded = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s

        async def limited() -> Any:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    message = await receive()
            except TimeoutError:
                raise _TooSlow() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge()
                complete = not message.get("more_body", False)
            else:
                complete = True  # the client went away
            return message

        async def watched(message: Message) -> None:
            nonlocal responded
            responded = responded or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, watched)
        except _TooLarge:
            await _too_large(send, self.max_bytes)
        except _TooSlow:
            if responded:
                raise  # too late for an answer: uvicorn drops the connection
            await send_json(
                send,
                408,
                {
                    "error": "request_timeout",
                    "message": f"the request body did not arrive within {self.timeout_s:g} s",
                },
                # The rest of the body may still come: never read it as the next request.
                headers=[(b"connection", b"close")],
            )


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


async def send_json(
    send: Send,
    status: int,
    document: dict[str, Any],
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer from ASGI middleware (before FastAPI's handlers) in the contract's error shape."""
    body = json.dumps(document).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _too_large(send: Send, limit: int) -> None:
    await send_json(
        send,
        413,
        {"error": "body_too_large", "message": f"request body exceeds {limit} bytes"},
    )


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")
_access = logging.getLogger("dealflow.http")
_tracer = trace.get_tracer("dealflow.http")


def _without_token(query: bytes) -> bytes:
    """The query string less any ``token`` parameter: the dashboard's links may carry one for
    the page's JavaScript, which reads it from the URL in the browser; the server never needs
    it, so it is dropped before routing, logging or tracing can see it."""
    if b"token" not in query:
        return query
    kept = [
        (k, v)
        for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        if k != "token"
    ]
    return urlencode(kept).encode("latin-1")


class RequestLog:
    """One log line per request -- request id, method, route, status, latency and the token's
    name; never the token, never the query string -- and one OpenTelemetry server span,
    continuing the caller's trace (W3C ``traceparent``). FastAPI's own request span is switched
    off (see dealflow.http) because it records the raw query string, which may hold a
    dashboard token; its endpoint and dependency spans nest under this one.

    The request id is the caller's ``X-Request-ID`` when it is a plain token, else a new one;
    it is echoed in the response's ``X-Request-ID``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scope["query_string"] = _without_token(scope.get("query_string") or b"")
        offered = ""
        for key, value in scope["headers"]:
            if key.lower() == b"x-request-id":
                offered = value.decode("latin-1")
        request_id = offered if _REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        method = scope.get("method", "")
        status = 500

        async def respond(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        with _tracer.start_as_current_span(
            f"{method} request", context=propagate.extract(headers), kind=SpanKind.SERVER
        ) as span:
            try:
                await self.app(scope, receive, respond)
            finally:
                route = getattr(scope.get("route"), "path", None) or "(unmatched)"
                token = (scope.get("state") or {}).get("principal")
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                span.set_attribute("dealflow.request_id", request_id)
                if token:
                    span.set_attribute("dealflow.token", token)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                self._log(method, route, status, request_id, started, token)

    @staticmethod
    def _log(
        method: str, route: str, status: int, request_id: str, started: float, token: str | None
    ) -> None:
        _access.info(
            "%s %s %s",
            method,
            route,
            status,
            extra={
                "request_id": request_id,
                "method": method,
                "route": route,
                "status": status,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                "token": token,
            },
        )
