"""Reading request bodies: JSON with exact decimals, and clear errors for everything else."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from fastapi import Request

from engine.api.errors import ApiError
from engine.storable import NotStorable, check_storable


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def read_json_object(request: Request, *, per_item: str | None = None) -> dict[str, Any]:
    """The body as a JSON object whose values both stores can hold (else 422).

    ``per_item`` names a list member (a batch's ``events``) whose items are checked one by one
    later, so that one bad item is rejected alone."""
    raw = await request.body()
    try:
        # Numbers with a fraction become Decimal: money is never a float, not even in transit.
        # NaN and Infinity are not JSON: refuse them rather than store something else.
        body = json.loads(raw or b"null", parse_float=Decimal, parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {error}") from error
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "the body must be a JSON object")
    try:
        check_storable({k: v for k, v in body.items() if k != per_item})
    except NotStorable as error:
        raise ApiError(
            422,
            "validation_error",
            f"invalid request at {error.where}: {error.why}",
            details=[{"field": error.where, "message": error.why}],
        ) from error
    return body


# Schemas that hand-read bodies refer to (``#/components/schemas/<name>``); engine.api.openapi
# merges them into the OpenAPI document's components.
COMPONENT_SCHEMAS: dict[str, Any] = {}


def register_schemas(schema: dict[str, Any]) -> dict[str, Any]:
    """Move a pydantic schema's ``$defs`` into the shared components and return the rest."""
    schema = dict(schema)
    COMPONENT_SCHEMAS.update(schema.pop("$defs", {}))
    return schema


def json_schema_body(
    schema: dict[str, Any], example: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its body by hand, so /openapi.json still shows it.

    Build ``schema`` with ``ref_template="#/components/schemas/{model}"``."""
    content: dict[str, Any] = {"schema": register_schemas(schema)}
    if example is not None:
        content["example"] = example
    return {"requestBody": {"required": True, "content": {"application/json": content}}}
