"""What every route needs: the wired services and the caller's identity and scopes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Depends, Request

from engine.api.errors import ApiError, unauthorized

if TYPE_CHECKING:
    from engine.runtime import Services

SCOPES = ("ingest", "read", "audit", "admin")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name and what it may do."""

    name: str
    scopes: frozenset[str] = field(default_factory=frozenset)

    def has(self, scope: str) -> bool:
        return scope in self.scopes


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("send Authorization: Bearer <token>")
    principal = get_services(request).tokens.authenticate(token.strip())
    if principal is None:
        raise unauthorized("unknown or revoked token", "invalid_token")
    return principal


def require(*scopes: str) -> Any:
    """A dependency that lets the call through only with every named scope."""

    def check(principal: Principal = Depends(authenticate)) -> Principal:
        missing = [s for s in scopes if not principal.has(s)]
        if missing:
            raise ApiError(
                403,
                "forbidden",
                f"this token lacks the scope(s): {', '.join(missing)}",
                required=list(scopes),
            )
        return principal

    return Depends(check)
