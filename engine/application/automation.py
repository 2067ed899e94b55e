"""The commands dealflow's own automation sends (nurture, escalation), and the one place they
are built.

Senders may not write these types (the write path refuses them without ``allow_automation``);
the workflows area records them through :func:`automation_command`, whether one at a time
(:meth:`DealflowApp.record_automation`), group-committed, or from the event bridge.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from pydantic import ValidationError

from engine.application.messages import Command, Outcome, request_hash
from engine.commands import AUTOMATION_MODELS, AutomationCommand
from engine.domain.errors import DomainError, ValidationFailed


def automation_command(
    deal_id: str,
    type_: str,
    data: dict[str, Any],
    *,
    event_id: str,
    actor: str,
    occurred_at: datetime | None = None,
    fingerprint: dict[str, Any] | None = None,
) -> Command:
    """The command that records one automation event.

    ``fingerprint`` is what the request hash covers; by default the type and ``data``, so an
    automation step that runs again (same event_id, same data) is a duplicate. Raises
    ValidationFailed for an unknown type or malformed data."""
    model = AUTOMATION_MODELS.get(type_)
    if model is None:
        raise ValidationFailed(f"unknown event type {type_!r}", field="type")
    try:
        payload = cast(AutomationCommand, model.model_validate(data))
    except ValidationError as error:
        raise ValidationFailed(f"malformed {type_} event: {error}", field="data") from error
    return Command(
        deal_id=deal_id,
        type=type_,
        event_id=event_id,
        payload=payload,
        request_hash=request_hash(
            deal_id, fingerprint if fingerprint is not None else {"type": type_, **data}
        ),
        actor=actor,
        occurred_at=occurred_at,
    )


def refused(deal_id: str, event_id: str, error: DomainError) -> Outcome:
    """What recording a command that could not even be built answers (nothing is stored)."""
    return Outcome("rejected", deal_id, event_id, error=error)
