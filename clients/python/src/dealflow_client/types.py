"""Shapes of what the API answers (TypedDicts: plain dicts at run time, typed for checkers)."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict


class DealState(TypedDict):
    deal_id: str
    pipeline_id: str
    name: str
    stage: str
    status: Literal["open", "won", "lost"]
    amount: str | None
    currency: str
    owner: str | None
    account: str | None
    industry: str | None
    lead_source: str | None
    decision_maker_role: str | None
    facts: dict[str, bool]
    opened_at: str | None
    stage_entered_at: str | None
    closed_at: str | None
    lost_reason: str | None
    stale: bool
    version: int
    position: NotRequired[int]
    replayed: NotRequired[bool]


class BatchItem(TypedDict):
    index: int
    status: Literal["recorded", "duplicate", "rejected"]
    version: int | None
    error: NotRequired[dict[str, Any]]


class DefinitionRef(TypedDict):
    kind: Literal["pipeline", "sequence", "directory"]
    id: str
    version: int


class FeedEvent(TypedDict):
    position: int
    kind: Literal["deal", "definition"]
    deal_id: str | None
    pipeline_id: str | None
    type: str
    version: int
    occurred_at: str
    recorded_at: str
    actor: str | None
    event_id: str | None
    pipeline_version: int | None
    hash: str | None
    data: dict[str, Any]
    definition: NotRequired[DefinitionRef]


class FeedPage(TypedDict):
    events: list[FeedEvent]
    next_after: int
    head: int
    has_more: bool


class Subscription(TypedDict):
    subscription_id: str
    url: str
    types: list[str]
    pipelines: list[str]
    status: Literal["active", "paused", "failing"]
    status_reason: str | None
    cursor: int
    secret: NotRequired[str]
