"""Small builders shared by tests (no assertions here)."""

from __future__ import annotations

import itertools
from typing import Any

from engine.application import Command, DealflowApp, Outcome

_ids = itertools.count(1)


def command(deal_id: str, body: dict[str, Any], actor: str = "tester") -> Command:
    return Command.from_body(deal_id, {"event_id": f"evt-{next(_ids)}", **body}, actor)


def send(app: DealflowApp, deal_id: str, body: dict[str, Any]) -> Outcome:
    return app.ingest([command(deal_id, body)])[0]
