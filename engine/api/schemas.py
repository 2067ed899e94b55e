"""Response shapes of the contract for the OpenAPI document (see engine.api.openapi).

Written from what the code returns (engine.application.views, engine.application.messages,
workflows.outbox): every time is UTC ISO 8601 with a ``Z`` (``engine.domain.events.iso``), so
``date-time``; ``expected_close`` is a ``date``. Objects stay open (``additionalProperties``):
the contract lets the API add fields.
"""

from __future__ import annotations

from typing import Any

from engine.commands import AMOUNT_PATTERN

TIME = {"type": "string", "format": "date-time"}
_DATE = {"type": "string", "format": "date"}


def _maybe(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def time_parameter(schema: dict[str, Any]) -> dict[str, Any]:
    """A business-time query parameter (engine.api.helpers.parse_time): a time with an offset,
    or a bare date (midnight UTC)."""
    described = {k: v for k, v in schema.items() if k not in ("anyOf", "type")}
    return {
        **described,
        "anyOf": [TIME, _DATE],
        "description": (
            schema.get("description", "business time")
            + "; ISO 8601 with an offset (`2017-03-01T00:00:00Z`), or a date (midnight UTC)"
        ),
    }


# An amount as a string (engine.commands.Money).
AMOUNT: dict[str, Any] = {"type": "string", "pattern": AMOUNT_PATTERN}

_TEXT = {"type": "string"}
_NAME = _maybe(_TEXT)

ERROR: dict[str, Any] = {
    "type": "object",
    "description": "Every error answer: a stable `error` code, a human `message`, and the "
    "code's details (`details` for `validation_error`, `current_version` for "
    "`version_conflict`, `unmet` for `exit_criteria_unmet`, `required` for `forbidden`...).",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "minLength": 1, "examples": ["validation_error"]},
        "message": {"type": "string"},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": _TEXT, "message": _TEXT, "type": _TEXT},
            },
        },
        "current_version": {"type": "integer"},
        "unmet": {
            "type": "array",
            "items": {"type": "object", "properties": {"stage": _TEXT, "criterion": _TEXT}},
        },
        "required": {"type": "array", "items": _TEXT},
    },
    "additionalProperties": True,
}

DEAL_STATE: dict[str, Any] = {
    "type": "object",
    "required": [
        "deal_id",
        "pipeline_id",
        "name",
        "stage",
        "status",
        "amount",
        "currency",
        "owner",
        "account",
        "industry",
        "lead_source",
        "decision_maker_role",
        "facts",
        "opened_at",
        "stage_entered_at",
        "closed_at",
        "lost_reason",
        "stale",
        "version",
    ],
    "properties": {
        "deal_id": _TEXT,
        "pipeline_id": _TEXT,
        "pipeline_version": _maybe({"type": "integer"}),
        "name": _TEXT,
        "stage": _TEXT,
        "status": {"type": "string", "enum": ["open", "won", "lost"]},
        "amount": _maybe({"type": "string", "description": "a decimal, as a string"}),
        "currency": _NAME,
        "owner": _NAME,
        "account": _NAME,
        "industry": _NAME,
        "lead_source": _NAME,
        "decision_maker_role": _NAME,
        "expected_close": _maybe(_DATE),
        "attributes": _maybe({"type": "object"}),
        "facts": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "activities_in_stage": {"type": "object", "additionalProperties": {"type": "integer"}},
        "opened_at": _maybe(TIME),
        "stage_entered_at": _maybe(TIME),
        "closed_at": _maybe(TIME),
        "lost_reason": _NAME,
        "stale": {"type": "boolean"},
        "nurture": {"type": "array", "items": _TEXT},
        "version": {"type": "integer", "minimum": 1},
    },
    "additionalProperties": True,
}

DEAL_WRITTEN: dict[str, Any] = {
    "allOf": [
        {"$ref": "#/components/schemas/DealState"},
        {
            "type": "object",
            "required": ["position"],
            "properties": {"position": _maybe({"type": "integer", "description": "log position"})},
        },
    ]
}

HISTORY: dict[str, Any] = {
    "type": "object",
    "required": ["deal_id", "events"],
    "properties": {
        "deal_id": _TEXT,
        "events": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["version", "type", "occurred_at", "recorded_at", "data"],
                "properties": {
                    "version": {"type": "integer"},
                    "type": _TEXT,
                    "occurred_at": TIME,
                    "recorded_at": TIME,
                    "event_id": _NAME,
                    "actor": _NAME,
                    "pipeline_version": _maybe({"type": "integer"}),
                    "hash": _NAME,
                    "data": {"type": "object"},
                },
            },
        },
    },
}

BATCH: dict[str, Any] = {
    "type": "object",
    "required": ["results", "position"],
    "properties": {
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "status", "version"],
                "properties": {
                    "index": {"type": "integer"},
                    "status": {"type": "string", "enum": ["recorded", "duplicate", "rejected"]},
                    "version": _maybe({"type": "integer"}),
                    "error": {"$ref": "#/components/schemas/Error"},
                },
            },
        },
        "position": _maybe({"type": "integer", "description": "the batch's highest position"}),
    },
}

OUTBOX: dict[str, Any] = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "deal_id", "kind", "channel", "to", "subject", "body"],
                "properties": {
                    "id": {},
                    "deal_id": _NAME,
                    "kind": _TEXT,
                    "channel": _TEXT,
                    "to": _NAME,
                    "subject": _NAME,
                    "body": _NAME,
                    "created_at": TIME,
                    "sent_at": _maybe(TIME),
                },
            },
        }
    },
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": ERROR,
    "DealState": DEAL_STATE,
    "DealWritten": DEAL_WRITTEN,
    "History": HISTORY,
    "BatchResults": BATCH,
    "Outbox": OUTBOX,
}

# (method, path) -> the component its success answer is.
SUCCESS_SCHEMAS = {
    ("get", "/v1/deals/{deal_id}"): "DealState",
    ("post", "/v1/deals/{deal_id}/events"): "DealWritten",
    ("post", "/v1/deals/{deal_id}/nurture"): "DealWritten",
    ("get", "/v1/deals/{deal_id}/history"): "History",
    ("post", "/v1/events"): "BatchResults",
    ("get", "/v1/outbox"): "Outbox",
}

EXPORT_CONTENT = {
    "application/x-ndjson": {
        "schema": {"type": "string", "description": "`format=jsonl`: one event object a line"}
    },
    "text/csv": {
        "schema": {"type": "string", "description": "`format=csv`: a header row, one event a row"}
    },
}

REVIEW_CONTENT = {
    "application/json": {"schema": {"type": "object"}},
    "text/plain": {"schema": {"type": "string", "description": "`format=text`"}},
    "text/html": {"schema": {"type": "string", "description": "`format=html`"}},
}
