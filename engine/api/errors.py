"""JSON errors with the contract's codes: ``{"error": code, "message": text, ...details}``."""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from engine.domain.errors import (
    DealClosed,
    DealExists,
    DomainError,
    ExitCriteriaUnmet,
    IdempotencyKeyReused,
    InvalidTransition,
    NotFound,
    PipelineInUse,
    ValidationFailed,
    VersionConflict,
)
from engine.persistence.outage import StoreUnavailable

# The one place a domain error becomes an HTTP status (the domain carries a code and details).
STATUS: dict[type[DomainError], int] = {
    DomainError: 422,
    ValidationFailed: 422,
    ExitCriteriaUnmet: 422,
    InvalidTransition: 422,
    DealClosed: 422,
    DealExists: 409,
    VersionConflict: 409,
    IdempotencyKeyReused: 409,
    PipelineInUse: 409,
    NotFound: 404,
}


def http_status(error: DomainError) -> int:
    """The status of the nearest class of ``error`` in :data:`STATUS`."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 422


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}


def validation_details(error: ValidationError | RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for item in error.errors():
        loc = [str(p) for p in item.get("loc", ()) if p not in ("body",)]
        details.append(
            {"field": ".".join(loc), "message": item.get("msg", ""), "type": item.get("type", "")}
        )
    return details


def validation_error(error: ValidationError | RequestValidationError, prefix: str = "") -> ApiError:
    details = validation_details(error)
    if prefix:
        for d in details:
            d["field"] = f"{prefix}.{d['field']}" if d["field"] else prefix
    first = details[0] if details else {"field": "", "message": "invalid"}
    where = f" at {first['field']}" if first["field"] else ""
    return ApiError(
        422, "validation_error", f"invalid request{where}: {first['message']}", details=details
    )


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path. Starlette's 405 names only the first route
    whose path matched (``/v1/directory`` said ``Allow: PUT`` though GET is served too)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        original = route.original_route
        if isinstance(original, Route) and original.path_regex.fullmatch(request.url.path):
            methods |= original.methods or set()
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(DomainError)
    async def _domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=http_status(exc))

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_error(exc).to_dict(), status_code=422)

    @app.exception_handler(ValidationError)
    async def _model_invalid(_: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse(validation_error(exc).to_dict(), status_code=422)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(_: Request, exc: Exception) -> JSONResponse:
        # The store is unreachable or restarting: nothing was recorded, and trying again later
        # (same event_id) is safe.
        return JSONResponse(
            {"error": "store_unavailable", "message": f"the store is unavailable: {exc}"[:500]},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            404: "not_found",
            405: "method_not_allowed",
            413: "body_too_large",
            400: "malformed_json",
        }
        code = codes.get(exc.status_code, "http_error")
        # Keep the exception's headers: a 405 must say what is Allowed.
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(
            {"error": code, "message": str(exc.detail)},
            status_code=exc.status_code,
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
        # Last resort: still the contract's JSON shape (the exception is logged by Starlette).
        return JSONResponse(
            {"error": "internal_error", "message": "an unexpected error; nothing was recorded"},
            status_code=500,
        )
