"""What the fold produces: read-model rows (a deal's current row and history rows, stays) and the set of changes one batch makes."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from operator import attrgetter
from typing import Any
from uuid import UUID

UNITS = Decimal(1_000_000)  # money is kept as integer micro-units (exact sums on both databases)


# Columns shared by the current and the history rows, in table order.
DEAL_COLUMNS = (
    "deal_uuid",
    "deal_id",
    "pipeline_id",
    "pipeline_version",
    "name",
    "stage",
    "status",
    "amount",
    "amount_units",
    "currency",
    "owner",
    "account",
    "industry",
    "lead_source",
    "decision_maker_role",
    "opened_at",
    "stage_entered_at",
    "closed_at",
    "lost_reason",
    "flagged_stale",
    "version",
    "position",
    "country",
    "expected_close",  # ISO date text (the forecast groups by its month)
    "unqualified",  # 1 while the deal fails its pipeline's qualification rule
)


CURRENT_COLUMNS = (
    *DEAL_COLUMNS,
    "stay_seq",
    "visited",
    "advanced",
    "last_event_at",
    "ever_won",
)


# valid_to last: a later event of the deal in the same batch sets it in place.
HISTORY_COLUMNS = (*DEAL_COLUMNS, "visited", "ever_won", "valid_from", "valid_to")


STAY_COLUMNS = (
    "deal_uuid",
    "seq",
    "pipeline_id",
    "stage",
    "entered_at",
    "left_at",
    "exit",
    "first_in_stage",
    "first_advance",
)


_deal_values = attrgetter(*DEAL_COLUMNS)
_stay_values = attrgetter(*STAY_COLUMNS)


def to_units(amount: Any) -> int | None:
    if amount is None:
        return None
    value = Decimal(str(amount)) * UNITS
    return int(value.to_integral_value(rounding=ROUND_HALF_EVEN))


@dataclass(slots=True)
class DealRow:
    deal_uuid: UUID
    deal_id: str
    pipeline_id: str
    pipeline_version: int | None
    name: str
    stage: str
    status: str
    amount: str | None
    amount_units: int | None
    currency: str
    owner: str | None
    account: str | None
    industry: str | None
    lead_source: str | None
    decision_maker_role: str | None
    opened_at: int
    stage_entered_at: int
    closed_at: int | None
    lost_reason: str | None
    flagged_stale: int
    version: int
    position: int
    stay_seq: int
    visited: set[str]
    advanced: set[str]
    last_event_at: int
    ever_won: int = 0
    country: str | None = None
    expected_close: str | None = None
    unqualified: int = 0

    def deal_values(self) -> tuple[Any, ...]:
        return _deal_values(self)  # type: ignore[no-any-return]

    def current_values(self) -> tuple[Any, ...]:
        return (
            *self.deal_values(),
            self.stay_seq,
            ",".join(sorted(self.visited)),
            ",".join(sorted(self.advanced)),
            self.last_event_at,
            self.ever_won,
        )

    @classmethod
    def from_row(cls, row: Any) -> DealRow:
        values = {c: row[c] for c in CURRENT_COLUMNS}
        deal = values["deal_uuid"]
        values["deal_uuid"] = deal if isinstance(deal, UUID) else UUID(deal)
        values["visited"] = set(filter(None, (values["visited"] or "").split(",")))
        values["advanced"] = set(filter(None, (values["advanced"] or "").split(",")))
        return cls(**values)


@dataclass(slots=True)
class StayRow:
    deal_uuid: UUID
    seq: int
    pipeline_id: str
    stage: str
    entered_at: int
    left_at: int | None = None
    exit: str | None = None
    first_in_stage: int = 0
    first_advance: int = 0

    def values(self) -> tuple[Any, ...]:
        return _stay_values(self)  # type: ignore[no-any-return]


@dataclass
class ChangeSet:
    """What one batch changes, ready for a view to write."""

    current: dict[UUID, DealRow] = field(default_factory=dict)
    history: list[list[Any]] = field(default_factory=list)
    # History rows stored by earlier batches that this batch ends: (deal, version, valid_to).
    history_closes: list[tuple[UUID, int, int]] = field(default_factory=list)
    stays: dict[tuple[UUID, int], StayRow] = field(default_factory=dict)
    # Stays stored by earlier batches that this batch ends: (deal, seq, left_at, exit, first_advance).
    stay_closes: list[tuple[UUID, int, int, str, int]] = field(default_factory=list)
    # The latest business time of an event of each pipeline in this batch.
    pipeline_times: dict[str, int] = field(default_factory=dict)
    # Deltas of the summary tables (see schema.py), keyed by their primary keys.
    stats: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    keys: dict[tuple[str, str, int, str], list[int]] = field(default_factory=dict)
    visits: dict[tuple[str, str, int], int] = field(default_factory=dict)
    won_buckets: dict[tuple[str, int], int] = field(default_factory=dict)
    # (pipeline, day closed, status, days-to-close bucket or 0) -> [n, units, dur_ms].
    closed: dict[tuple[str, int, str, int], list[int]] = field(default_factory=dict)
    # The same deltas in business time (timeline.py), keyed with the day of the change:
    # (pipeline, day, stage), (pipeline, dim, day, key_null, key), (pipeline, day, visited,
    # ever_won), (pipeline, day, days-to-won bucket).
    t_stats: dict[tuple[str, int, str], list[int]] = field(default_factory=dict)
    t_keys: dict[tuple[str, str, int, int, str], list[int]] = field(default_factory=dict)
    t_visits: dict[tuple[str, int, str, int], int] = field(default_factory=dict)
    t_won: dict[tuple[str, int, int], int] = field(default_factory=dict)
    # Open unflagged deals now by (pipeline, day entered their stage, stage).
    open_entered: dict[tuple[str, int, str], int] = field(default_factory=dict)
    # (pipeline, definition version) -> the earliest business time of a history row using it.
    versions: dict[tuple[str, int], int] = field(default_factory=dict)
    skipped: int = 0  # events of deals the read model has never seen opened (should stay 0)

    @property
    def empty(self) -> bool:
        return not self.current
