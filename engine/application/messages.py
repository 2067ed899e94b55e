"""What goes into the write path and what comes out: commands, outcomes, request fingerprints."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from engine.commands import AutomationCommand, IncomingEvent, incoming_event
from engine.domain.deal import Deal
from engine.domain.errors import DomainError, IdempotencyKeyReused, VersionConflict

SYSTEM_ACTOR = "dealflow"
MAX_SAVE_ATTEMPTS = 10


@dataclass
class Command:
    """One event a sender (or dealflow's automation) asks to record on one deal.

    Senders' commands come from :meth:`from_body`; automation's from
    :func:`engine.application.automation.automation_command`."""

    deal_id: str
    type: str
    event_id: str
    payload: IncomingEvent | AutomationCommand
    request_hash: str
    actor: str
    occurred_at: datetime | None = None
    expected_version: int | None = None

    @classmethod
    def from_body(cls, deal_id: str, body: dict[str, Any], actor: str) -> Command:
        """A sender's event body (as the HTTP contract writes it) as a command.

        Raises pydantic's ValidationError when the body is not a valid deal event."""
        fields = {k: v for k, v in body.items() if k != "deal_id"}
        payload = incoming_event.validate_python(fields)
        return cls(
            deal_id=deal_id,
            type=payload.type,
            event_id=payload.event_id,
            payload=payload,
            request_hash=request_hash(deal_id, fields),
            actor=actor,
            occurred_at=payload.occurred_at,
            expected_version=payload.expected_version,
        )


@dataclass
class Outcome:
    status: str  # "recorded", "duplicate" or "rejected"
    deal_id: str
    event_id: str
    version: int | None = None
    position: int | None = None
    error: DomainError | None = None
    # The deal exactly as this event left it, as decided and committed (no second read). Set on
    # a recorded outcome when it is the last of its batch on that deal, since a later event of
    # the same batch moves the deal on. Never part of a batch's answer (see to_dict).
    deal: Deal | None = field(default=None, repr=False, compare=False)

    def to_dict(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"index": index, "status": self.status, "version": self.version}
        if self.error is not None:
            item["error"] = self.error.to_dict()
        return item


def replay_outcome(command: Command, stored_hash: str, stored_deal: str, version: int) -> Outcome:
    """The answer to a command whose event_id is already stored: a duplicate when the request
    is the same, a refusal when the key was used for something else."""
    if stored_hash != command.request_hash:
        return Outcome(
            "rejected",
            command.deal_id,
            command.event_id,
            error=IdempotencyKeyReused(
                f"event_id {command.event_id!r} was already used for a different event",
                deal_id=stored_deal,
            ),
        )
    return Outcome("duplicate", stored_deal, command.event_id, version=version)


def conflicted(outcome: Outcome) -> Outcome:
    """After every retry lost a race, what would have been recorded is reported as a 409."""
    if outcome.status != "recorded":
        return outcome
    current = (outcome.version or 1) - 1
    return Outcome(
        "rejected",
        outcome.deal_id,
        outcome.event_id,
        version=current,
        error=VersionConflict(
            "the deal kept changing under concurrent writers; send the event again",
            current_version=current,
        ),
    )


def request_hash(deal_id: str, body: dict[str, Any]) -> str:
    """The fingerprint that tells a replay from a reused idempotency key."""
    content = {k: v for k, v in body.items() if k != "deal_id"} if "deal_id" in body else body
    canonical = orjson.dumps(
        {"deal_id": deal_id, "body": content}, option=orjson.OPT_SORT_KEYS, default=str
    )
    return hashlib.sha256(canonical).hexdigest()
