"""Refuse, before routing, path and query parameters the stores cannot hold.

PostgreSQL cannot compare a text column with a value holding NUL or invalid UTF-8: such a
parameter (``/v1/outbox?deal_id=%00``, ``DELETE /v1/tokens/%00``) used to be a 500 there while
SQLite answered normally. Both stores now get a 422 naming the parameter.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from engine.api.middleware import send_json
from engine.storable import text_problem


def _problem(raw: bytes) -> str | None:
    if b"\x00" in raw:
        return "NUL characters (\\u0000) cannot be stored"
    try:
        return text_problem(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "not valid UTF-8"


def params_problem(scope: Scope) -> tuple[str, str] | None:
    """(where, why) for the first unstorable path or query parameter, or None."""
    path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
    why = _problem(unquote_to_bytes(path))
    if why is not None:
        return "path", why
    for pair in (scope.get("query_string") or b"").split(b"&"):
        name, _, value = pair.partition(b"=")
        for part in (name, value):
            why = _problem(unquote_to_bytes(part.replace(b"+", b" ")))
            if why is not None:
                return f"query.{unquote_to_bytes(name).decode('utf-8', 'replace')}", why
    return None


class StorableParams:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = params_problem(scope) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        where, why = found
        await send_json(
            send,
            422,
            {
                "error": "validation_error",
                "message": f"invalid request at {where}: {why}",
                "details": [{"field": where, "message": why}],
            },
        )
