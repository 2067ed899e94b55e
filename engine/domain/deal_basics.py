"""What every part of the deal model shares: a deal's id, the fields a sender may set, its
statuses, and the envelope and pipeline reference a command carries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from uuid import UUID, uuid5

from engine.domain.pipeline import PipelineDefinition

DEAL_NAMESPACE = UUID("6f1c9a52-3f0e-4d7e-9a55-0b8a1d9e2c41")

# Fields a sender may set on `opened` and change with `updated`.
DEAL_FIELDS = (
    "name",
    "amount",
    "currency",
    "owner",
    "account",
    "industry",
    "lead_source",
    "decision_maker_role",
    "expected_close",
    "attributes",
    "country",
)

OPEN, WON, LOST = "open", "won", "lost"


@lru_cache(maxsize=65536)
def deal_uuid(deal_id: str) -> UUID:
    """The aggregate id of a deal, derived from the sender's id so every writer agrees on it."""
    return uuid5(DEAL_NAMESPACE, f"deal:{deal_id}")


@dataclass(frozen=True, slots=True)
class EventMeta:
    """The envelope a command's event is recorded with."""

    occurred_at: datetime
    event_id: str
    actor: str
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class PipelineRef:
    """A pipeline definition at one version: what a command is validated against."""

    pipeline_id: str
    version: int
    definition: PipelineDefinition
