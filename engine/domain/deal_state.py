"""The state of one deal, as its events leave it (no rules, no commands)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from engine.domain.deal_basics import OPEN
from engine.domain.events import GENESIS_HASH


class DealState:
    """What a deal is at one version: the fields its events set. :class:`engine.domain.deal.Deal`
    adds the commands; events only ever touch this state."""

    def __init__(self, id: UUID) -> None:  # noqa: A002 - eventsourcing names it `id`
        self.id = id
        self.version = 0
        self.deal_id = ""
        self.pipeline_id = ""
        self.pipeline_version: int | None = None
        self.name = ""
        self.stage = ""
        self.status = OPEN
        self.amount: Decimal | None = None
        self.currency = "USD"
        self.owner: str | None = None
        self.account: str | None = None
        self.industry: str | None = None
        self.lead_source: str | None = None
        self.decision_maker_role: str | None = None
        self.expected_close: date | None = None
        self.attributes: dict[str, Any] = {}
        self.country: str | None = None
        # The last qualification verdict recorded ({"qualified", "unmet"}), None if never judged.
        self.qualification: dict[str, Any] | None = None
        self.facts: dict[str, bool] = {}
        self.opened_at: datetime | None = None
        self.created_at: datetime | None = None
        self.modified_at: datetime | None = None
        self.stage_entered_at: datetime | None = None
        self.stage_entries = 0  # how many times the deal entered a stage (names a stay)
        self.closed_at: datetime | None = None
        self.lost_reason: str | None = None
        self.activities_in_stage: dict[str, int] = {}
        self.activity_count = 0
        self.last_activity_at: datetime | None = None
        self.last_occurred_at: datetime | None = None
        self.nurture: dict[str, int] = {}
        # Per sequence: the next step's index and when its delay started counting (ISO time).
        self.nurture_progress: dict[str, dict[str, Any]] = {}
        self.touches_sent = 0
        self.escalations: list[str] = []
        self.flagged_stale = False
        self.last_hash = GENESIS_HASH
        self.pending: list[Any] = []  # DealEvents awaiting storage
        # The stored JSON of each pending event, made once when it was sealed (see _seal).
        self.sealed: dict[int, bytes] = {}

    # -- state helpers used by events ---------------------------------------------------------
    def enter_stage(self, stage: str, at: datetime) -> None:
        self.stage = stage
        self.stage_entered_at = at
        self.stage_entries += 1
        self.activities_in_stage = {}
        self.escalations = []
        self.flagged_stale = False

    def field_value(self, name: str) -> Any:
        if name.startswith("attributes."):
            return self.attributes.get(name.split(".", 1)[1])
        if name == "expected_close_date":
            return self.expected_close
        return getattr(self, name)

    @property
    def unqualified(self) -> bool:
        return self.qualification is not None and not self.qualification.get("qualified", True)

    @property
    def is_closed(self) -> bool:
        return self.status != OPEN
