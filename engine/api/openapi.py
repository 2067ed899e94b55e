"""The OpenAPI document, made to say what the API does (issue 9, defect 12).

FastAPI's generated document knows only the success status and its own 422. This module
rewrites it once, from what the code actually does:

- **errors**: every operation declares the statuses it can answer with, all in the contract's
  body ``{"error", "message", ...details}`` (the ``Error`` component, built from the error
  codes of :data:`engine.api.errors.STATUS`): 401/403/429 where a token is needed (the
  ``require`` dependency), 400/413 where a body is read, 404 where a path names a resource,
  409 where a conflict can happen, 422 everywhere (:class:`engine.api.edge.StorableParams`
  refuses unstorable parameters before routing), 503 wherever the store is touched;
- **security**: a ``bearer`` scheme, and ``security`` on exactly the operations that take a
  token (with the scope in the description); public operations have none;
- **idempotent writes**: the replay's 200 with ``Idempotent-Replay: true``;
- **media types**: the export's NDJSON and CSV, the review's text and HTML;
- **times**: business-time query parameters as ``date-time`` (or ``date``), deal state and
  history with ``date-time`` fields.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from engine.api.bodies import COMPONENT_SCHEMAS
from engine.api.errors import STATUS
from engine.api.schemas import (
    AMOUNT,
    EXPORT_CONTENT,
    REVIEW_CONTENT,
    SCHEMAS,
    SUCCESS_SCHEMAS,
    time_parameter,
)
from engine.feed import FEED_TYPES

SECURITY_SCHEME = "bearer"
ERROR_REF = {"$ref": "#/components/schemas/Error"}

# Writes that carry an `event_id`: a second send answers 200 with Idempotent-Replay: true.
IDEMPOTENT_WRITES = {
    ("post", "/v1/deals/{deal_id}/events"),
    ("post", "/v1/deals/{deal_id}/nurture"),
}
# Where a 409 can come from, beyond the idempotent writes (deal_exists, version_conflict,
# idempotency_key_reused): a new pipeline version may not drop a stage open deals sit in.
CONFLICTS = {("put", "/v1/pipelines/{pipeline_id}"): ["pipeline_in_use"]}
# Query parameters that are business times (engine.api.helpers.parse_time), by operation; a
# name alone means every operation having it.
TIME_PARAMETERS = {"as_of", "closed_from", "closed_to", "since"}
TIME_PARAMETERS_OF = {("get", "/v1/audit/export"): {"from", "to"}}
# Operations whose query parameters name a resource which must exist (else 404).
RESOURCE_PARAMETERS = {("get", "/v1/audit/verify"), ("get", "/v1/deals")}
# Query parameters documented otherwise than FastAPI infers them. The feed's `pipeline_id` is
# any text, repeated or comma-separated: as an array of strings, a generator's "schema-violating"
# boolean reaches the wire as the valid string "true". Its `types`: each value a comma-separated
# list of feed types, blanks around them and empty pieces ignored (engine.api.routes_feed).
_FEED_TYPE = "(?:" + "|".join(FEED_TYPES) + ")"
_FEED_TYPES_PATTERN = rf"^\s*{_FEED_TYPE}?\s*(?:,\s*{_FEED_TYPE}?\s*)*$"
PARAMETER_SCHEMAS: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("get", "/v1/feed"): {
        "pipeline_id": {
            "type": "string",
            "description": "only these pipelines, comma-separated (or the parameter repeated)",
        },
        "types": {
            "type": "array",
            "items": {"type": "string", "pattern": _FEED_TYPES_PATTERN},
            "description": "only these event types, comma-separated or repeated: "
            + ", ".join(FEED_TYPES),
        },
    }
}
# Public operations that touch the store (503 while it is unreachable).
PUBLIC_STORE_READS = {("get", "/readyz")}
# Operations that answer with more than JSON.
CONTENT = {
    ("get", "/v1/audit/export"): EXPORT_CONTENT,
    ("get", "/v1/pipelines/{pipeline_id}/review"): REVIEW_CONTENT,
}

_DOMAIN_CODES: dict[int, list[str]] = {}
for _cls, _status in STATUS.items():
    if _cls.code != "invalid":
        _DOMAIN_CODES.setdefault(_status, []).append(_cls.code)


def _error(description: str, *headers: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": ERROR_REF}},
    }
    if headers:
        response["headers"] = {name: HEADERS[name] for name in headers}
    return response


HEADERS: dict[str, dict[str, Any]] = {
    "WWW-Authenticate": {
        "description": 'the Bearer challenge: `Bearer realm="dealflow"`',
        "required": True,
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "seconds to wait before trying again (same event_id: safe)",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "Idempotent-Replay": {
        "description": "`true`: this event_id was recorded before; nothing new was recorded",
        "required": True,
        "schema": {"type": "string", "enum": ["true"]},
    },
}


def scopes_of(route: Any) -> tuple[str, ...] | None:
    """The scopes a route's token must carry (``()`` for any valid token), or None when it
    needs no token: read from its ``engine.api.deps.require`` dependency."""

    def walk(dependant: Dependant) -> Iterator[Callable[..., Any]]:
        for sub in dependant.dependencies:
            if sub.call is not None:
                yield sub.call
            yield from walk(sub)

    found: tuple[str, ...] | None = None
    for call in walk(route.dependant):
        if hasattr(call, "scopes"):
            return tuple(call.scopes)
        if getattr(call, "__name__", "") == "authenticate":
            found = ()
    return found


def _operations(api: FastAPI) -> Iterator[tuple[Any, str]]:
    """Every documented operation: (the route as included, with its prefix, method)."""
    for route in routing.iter_route_contexts(api.routes):
        if isinstance(route.original_route, APIRoute) and route.include_in_schema:
            for method in sorted((route.methods or set()) - {"HEAD", "OPTIONS"}):
                yield route, method.lower()


def _describe_errors(
    key: tuple[str, str], operation: dict[str, Any], scopes: tuple[str, ...] | None
) -> None:
    method, path = key
    responses = operation.setdefault("responses", {})
    params = operation.get("parameters", [])
    has_body = "requestBody" in operation
    errors: dict[str, dict[str, Any]] = {}
    if has_body:
        errors["400"] = _error("`malformed_json`: the body is not a JSON object")
    if scopes is not None:
        errors["401"] = _error("`unauthorized`: no token, or an unknown one", "WWW-Authenticate")
        needs = ", ".join(scopes) or "any"
        errors["403"] = _error(f"`forbidden`: the token lacks a scope ({needs})")
    if any(p["in"] == "path" for p in params) or key in RESOURCE_PARAMETERS:
        errors["404"] = _error("`not_found`: no such resource")
    conflicts = list(CONFLICTS.get(key, []))
    if key in IDEMPOTENT_WRITES:
        conflicts += [c for c in _DOMAIN_CODES[409] if c != "pipeline_in_use"]
    if conflicts:
        note = " (`version_conflict` carries `current_version`)" * ("version_conflict" in conflicts)
        errors["409"] = _error("conflict: " + ", ".join(f"`{c}`" for c in conflicts) + note)
    if has_body:
        errors["413"] = _error("`body_too_large`: the body is over the server's limit")
    invalid = ["validation_error"]
    if key in IDEMPOTENT_WRITES:  # a batch answers these per item, inside its 200
        invalid += [c for c in _DOMAIN_CODES[422] if c != "validation_error"]
    errors["422"] = _error(
        "invalid: " + ", ".join(f"`{c}`" for c in invalid) + " (`details` lists each problem)"
    )
    if scopes is not None:
        errors["429"] = _error("`rate_limited`: the token's rate limit is spent", "Retry-After")
    if path.startswith("/v1") or key in PUBLIC_STORE_READS:
        errors["503"] = _error(
            "`store_unavailable` (nothing was recorded; retry), or `projections_unavailable`",
            "Retry-After",
        )
    for status, response in errors.items():
        responses[status] = response  # replaces FastAPI's HTTPValidationError 422
    operation["responses"] = dict(sorted(responses.items()))
    if scopes is not None:
        operation["security"] = [{SECURITY_SCHEME: []}]
        scope_text = f"Scope: {', '.join(scopes)}." if scopes else "Any valid token."
        operation["description"] = f"{operation.get('description', '')}\n\n{scope_text}".strip()


def _describe_success(key: tuple[str, str], operation: dict[str, Any]) -> None:
    responses = operation["responses"]
    success = next(s for s in sorted(responses) if s.startswith("2"))
    name = SUCCESS_SCHEMAS.get(key)
    if name is not None:
        responses[success]["content"] = {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
        }
    if key in CONTENT:
        responses[success]["content"] = copy.deepcopy(CONTENT[key])
    if key in IDEMPOTENT_WRITES:
        responses["200"] = {
            "description": "Idempotent replay: this `event_id` was recorded before with the "
            "same body; the first outcome again, and nothing new recorded",
            "headers": {"Idempotent-Replay": HEADERS["Idempotent-Replay"]},
            "content": copy.deepcopy(responses[success]["content"]),
        }
    if key == ("put", "/v1/subscriptions/{subscription_id}"):
        responses["201"] = {**copy.deepcopy(responses["200"]), "description": "Created"}
        responses["200"]["description"] = "Replaced"
    if success == "204":
        responses[success].pop("content", None)
    operation["responses"] = dict(sorted(responses.items()))


def _describe_parameters(key: tuple[str, str], operation: dict[str, Any]) -> None:
    times = TIME_PARAMETERS | TIME_PARAMETERS_OF.get(key, set())
    if key[1] == "/v1/pipelines/{pipeline_id}/forecast":
        times = times - {"from", "to"}  # months there (YYYY-MM), not times
    for param in operation.get("parameters", []):
        if param["in"] == "query" and param["name"] in times:
            param["schema"] = time_parameter(param["schema"])
        if param["in"] == "query" and param["name"] in PARAMETER_SCHEMAS.get(key, {}):
            param["schema"] = PARAMETER_SCHEMAS[key][param["name"]]
        if param["in"] == "query" and param["name"] == "target":
            # projections.api.parse_target: the rule of an amount, as a string
            param["schema"] = {**AMOUNT, "description": param.get("description", "")}


def truthful(api: FastAPI, document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (FastAPI's) rewritten to declare what ``api``'s routes really answer."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name, schema in COMPONENT_SCHEMAS.items():
        schemas.setdefault(name, schema)
    schemas.update(copy.deepcopy(SCHEMAS))
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "`Authorization: Bearer <token>`; scopes ingest, read, audit, admin",
        }
    }
    for route, method in _operations(api):
        key = (method, route.path_format)
        operation = document["paths"][route.path_format][method]
        _describe_parameters(key, operation)
        _describe_errors(key, operation, scopes_of(route))
        _describe_success(key, operation)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def describe_openapi(api: FastAPI) -> None:
    """Serve the truthful document at /openapi.json (built once, on first use)."""
    build = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = truthful(api, build())
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


__all__ = ["describe_openapi", "scopes_of", "truthful"]
