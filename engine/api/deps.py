"""What every route needs: the wired services and the caller's identity and scopes."""

from __future__ import annotations

import math
from typing import Any

from fastapi import Depends, Request

from engine.api.errors import ApiError
from engine.services import Services
from engine.tokens import Principal, RateLimited


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "unauthorized",
            "send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": 'Bearer realm="dealflow"'},
        )
    tokens = get_services(request).tokens
    principal = tokens.authenticate(token.strip())
    if principal is None:
        raise ApiError(
            401,
            "unauthorized",
            "unknown, expired or revoked token",
            headers={"WWW-Authenticate": 'Bearer realm="dealflow", error="invalid_token"'},
        )
    try:
        tokens.admit(principal)
    except RateLimited as limited:
        raise ApiError(
            429,
            "rate_limited",
            str(limited),
            headers={"Retry-After": str(max(1, math.ceil(limited.retry_after)))},
            limit_per_minute=limited.limit,
        ) from limited
    # Read by the request log (engine.api.middleware): who made the request, never the token.
    request.state.principal = principal.name
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

    check.scopes = scopes  # type: ignore[attr-defined]  # read by engine.api.openapi
    return Depends(check)
