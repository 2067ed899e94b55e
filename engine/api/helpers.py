"""What several routers share: reading times and slugs from a request, and turning a sender's
event body into a :class:`~engine.application.Command`. Errors are the contract's 422s."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from engine.api.errors import ApiError, validation_error
from engine.application import Command
from engine.commands import DEAL_ID_PATTERN, BusinessTime
from engine.domain.deal import AUTOMATION_TYPES
from engine.domain.errors import ValidationFailed
from engine.domain.pipeline import SLUG

_time = TypeAdapter(BusinessTime)
_DEAL_ID = re.compile(DEAL_ID_PATTERN)


def parse_time(value: str, field: str) -> datetime:
    """An ISO 8601 time with an offset, or a date (midnight UTC)."""
    try:
        return _time.validate_python(value)
    except ValidationError as error:
        raise ApiError(
            422,
            "validation_error",
            f"{field} must be an ISO 8601 time with an offset, or a date",
            details=[{"field": field, "message": str(error.errors()[0]["msg"])}],
        ) from error


def check_slug(value: str, what: str) -> None:
    if not re.fullmatch(SLUG, value):
        raise ApiError(
            422,
            "validation_error",
            f"{what} must be a lowercase slug (a-z, 0-9, - and _)",
            details=[{"field": what, "message": "invalid slug"}],
        )


def valid_deal_id(deal_id: Any) -> bool:
    return isinstance(deal_id, str) and _DEAL_ID.fullmatch(deal_id) is not None


def check_deal_id(deal_id: Any) -> None:
    if not valid_deal_id(deal_id):
        raise ValidationFailed("deal_id must be 1-200 letters, digits or -_.:", field="deal_id")


def to_command(deal_id: str, body: dict[str, Any], actor: str) -> Command:
    """Validate one incoming event; raises a DomainError (422) that names the bad field."""
    check_deal_id(deal_id)
    kind = body.get("type")
    # A non-string `type` ({} or []) is left to the model's validation, which names it.
    if isinstance(kind, str) and kind in AUTOMATION_TYPES:
        raise ValidationFailed(
            f"events of type {kind!r} are written by dealflow itself", field="type"
        )
    try:
        return Command.from_body(deal_id, body, actor)
    except ValidationError as error:
        api_error = validation_error(error)
        raise ValidationFailed(api_error.message, details=api_error.details["details"]) from error
