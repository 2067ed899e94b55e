"""Small builders shared by tests (no assertions here)."""

from __future__ import annotations

import itertools
from typing import Any

from engine.application import Command, DealflowApp, Outcome, request_hash
from engine.commands import incoming_event

_ids = itertools.count(1)


def command(deal_id: str, body: dict[str, Any], actor: str = "tester") -> Command:
    body = {"event_id": f"evt-{next(_ids)}", **body}
    payload = incoming_event.validate_python(body)
    return Command(
        deal_id=deal_id,
        type=payload.type,
        event_id=payload.event_id,
        payload=payload,
        request_hash=request_hash(deal_id, body),
        actor=actor,
        occurred_at=payload.occurred_at,
        expected_version=payload.expected_version,
    )


def send(app: DealflowApp, deal_id: str, body: dict[str, Any]) -> Outcome:
    return app.ingest([command(deal_id, body)])[0]
