"""The view-update logic: fold a batch of deal events into row changes.

This is the only place that knows what an event means for the read models; both ways events
arrive (batch pages and the live subscription) and both databases go through it. The result is
a :class:`ChangeSet` that a view writes in one transaction together with its tracking record.

Three kinds of rows come out:

- the deal's *current* row (one per deal: lists, the board, live metrics);
- a *history* row per event (the deal's metric-relevant state from the event's business time
  until the next event's: ``valid_from``/``valid_to``), which answers ``as_of`` questions;
- *stage stays* (entered, left, how it left), flagged with whether the stay is the deal's first
  in that stage and whether it is the deal's first forward exit from it, so that "deals that
  ever entered/advanced" are plain range counts instead of DISTINCTs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from operator import attrgetter
from typing import Any
from uuid import UUID

from engine.domain.deal import DEAL_FIELDS
from projections.readmodel.records import EventRecord
from projections.readmodel.schema import KEYS_COUNTERS, STATS_COUNTERS

# The deal attributes the breakdown groups by (each keeps its own counters).
BREAKDOWN_KEYS = ("industry", "lead_source", "decision_maker_role", "owner", "account")
DAY_US = 86_400_000_000
_S = {name: i for i, name in enumerate(STATS_COUNTERS)}
_N_STATS, _N_KEYS = len(STATS_COUNTERS), len(KEYS_COUNTERS)

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
HISTORY_COLUMNS = (*DEAL_COLUMNS, "valid_from", "valid_to")
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
# The deal fields the read models keep (attributes they do not).
TRACKED_FIELDS = frozenset(DEAL_FIELDS) - {"attributes"}


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
    pipelines: set[str] = field(default_factory=set)
    # The latest business time of an event of each pipeline in this batch.
    pipeline_times: dict[str, int] = field(default_factory=dict)
    # Deltas of the summary tables (see schema.py), keyed by their primary keys.
    stats: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    keys: dict[tuple[str, str, int, str], list[int]] = field(default_factory=dict)
    visits: dict[tuple[str, str, int], int] = field(default_factory=dict)
    won_buckets: dict[tuple[str, int], int] = field(default_factory=dict)
    skipped: int = 0  # events of deals the read model has never seen opened (should stay 0)

    @property
    def empty(self) -> bool:
        return not self.current


class DealFold:
    """Applies events to deal rows; ``stored`` are the current rows already in the database."""

    def __init__(self, stored: dict[UUID, DealRow]) -> None:
        self.changes = ChangeSet()
        self._stored = stored
        self._stored_version = {k: row.version for k, row in stored.items()}
        self._stored_seq = {k: row.stay_seq for k, row in stored.items()}
        self._last_history: dict[UUID, list[Any]] = {}
        # What each stored deal contributed to the summary tables before this batch.
        self._before = {k: _contribution(row) for k, row in stored.items()}

    def apply_all(self, records: Iterable[EventRecord]) -> ChangeSet:
        for record in records:
            self.apply(record)
        self._summarise()
        return self.changes

    # -- summary tables -----------------------------------------------------------------------
    def _stat(self, pipeline: str, stage: str) -> list[int]:
        key = (pipeline, stage)
        found = self.changes.stats.get(key)
        if found is None:
            found = self.changes.stats[key] = [0] * _N_STATS
        return found

    def _summarise(self) -> None:
        """The summary deltas of the deals' current state: what each touched deal contributes
        now minus what it contributed before the batch (stays were counted as they happened)."""
        changes = self.changes
        for deal, row in changes.current.items():
            after = _contribution(row)
            before = self._before.get(deal)
            if before == after:
                continue
            # The breakdown counters only move with status, amount, close or attributes.
            keys = before is None or _key_part(before) != _key_part(after)
            if before is not None:
                self._add(before, -1, keys)
            self._add(after, 1, keys)

    def _add(self, c: tuple[Any, ...], sign: int, keys: bool) -> None:
        pipeline, stage, status, units, opened_at, flagged, dur, visited, ever_won, attrs = c
        changes = self.changes
        stat = self._stat(pipeline, stage)
        stat[0] += sign
        units = units or 0
        if status == "open":
            ms = _trunc_ms(opened_at)
            stat[1] += sign
            stat[2] += sign * units
            stat[3] += sign * ms
            stat[4] += sign * (opened_at - 1000 * ms)
            stat[5] += sign * flagged
            won = lost = 0
        elif status == "won":
            stat[6] += sign
            stat[7] += sign * units
            stat[8] += sign * _trunc_ms(dur)
            bucket = (pipeline, dur // DAY_US)
            changes.won_buckets[bucket] = changes.won_buckets.get(bucket, 0) + sign
            won, lost = 1, 0
        else:
            stat[9] += sign
            won, lost = 0, 1
        visit = (pipeline, visited, ever_won)
        changes.visits[visit] = changes.visits.get(visit, 0) + sign
        if not keys:
            return
        open_ = int(status == "open")
        won_units = units if won else 0
        won_ms = _trunc_ms(dur) if won else 0
        for dim, value in zip(BREAKDOWN_KEYS, attrs, strict=True):
            key = (pipeline, dim, int(value is None), value or "")
            counters = changes.keys.get(key)
            if counters is None:
                counters = changes.keys[key] = [0] * _N_KEYS
            counters[0] += sign
            counters[1] += sign * open_
            counters[2] += sign * won
            counters[3] += sign * lost
            counters[4] += sign * won_units
            counters[5] += sign * won_ms

    def apply(self, event: EventRecord) -> None:
        changes = self.changes
        if event.type == "opened":
            if event.deal in changes.current or event.deal in self._stored:
                return  # already folded (a deal is opened once)
            row = self._open(event)
        else:
            found = changes.current.get(event.deal) or self._stored.get(event.deal)
            if found is None or event.version <= found.version:
                # Unknown deal, or an event the stored row already reflects: nothing to do.
                changes.skipped += found is None
                return
            row = found
            handler = _HANDLERS.get(event.type)
            if handler is not None:
                handler(self, row, event)
        row.version = event.version
        row.position = event.position
        row.last_event_at = event.occurred_at
        times = changes.pipeline_times
        if times.get(row.pipeline_id, event.occurred_at - 1) < event.occurred_at:
            times[row.pipeline_id] = event.occurred_at
        if event.pipeline_version is not None:
            row.pipeline_version = event.pipeline_version
        changes.current[event.deal] = row
        self._record_history(row, event.occurred_at)

    # -- history rows -------------------------------------------------------------------------
    def _record_history(self, row: DealRow, at: int) -> None:
        previous = self._last_history.get(row.deal_uuid)
        if previous is not None:
            previous[-1] = at  # valid_to of the deal's previous row in this batch
        elif row.deal_uuid in self._stored_version:
            self.changes.history_closes.append(
                (row.deal_uuid, self._stored_version[row.deal_uuid], at)
            )
        new = [*row.deal_values(), at, None]
        self.changes.history.append(new)
        self._last_history[row.deal_uuid] = new

    # -- stays --------------------------------------------------------------------------------
    def _enter(self, row: DealRow, stage: str, at: int) -> None:
        row.stay_seq += 1
        row.stage = stage
        row.stage_entered_at = at
        row.flagged_stale = 0
        stay = StayRow(
            row.deal_uuid,
            row.stay_seq,
            row.pipeline_id,
            stage,
            at,
            first_in_stage=int(stage not in row.visited),
        )
        row.visited.add(stage)
        self.changes.stays[(row.deal_uuid, row.stay_seq)] = stay
        self._stat(row.pipeline_id, stage)[_S["entered"]] += stay.first_in_stage

    def _leave(self, row: DealRow, how: str, at: int) -> None:
        first_advance = 0
        if how in ("forward", "won") and row.stage not in row.advanced:
            row.advanced.add(row.stage)
            first_advance = 1
        stat = self._stat(row.pipeline_id, row.stage)
        stat[_S["advanced"]] += first_advance
        stat[_S["completed"]] += 1
        stat[_S["stay_ms"]] += _trunc_ms(at - row.stage_entered_at)
        stay = self.changes.stays.get((row.deal_uuid, row.stay_seq))
        if stay is not None:
            stay.left_at, stay.exit, stay.first_advance = at, how, first_advance
        elif row.stay_seq <= self._stored_seq.get(row.deal_uuid, 0):
            self.changes.stay_closes.append((row.deal_uuid, row.stay_seq, at, how, first_advance))

    # -- events -------------------------------------------------------------------------------
    def _open(self, event: EventRecord) -> DealRow:
        data = event.data
        row = DealRow(
            deal_uuid=event.deal,
            deal_id=data["deal_id"],
            pipeline_id=data["pipeline_id"],
            pipeline_version=event.pipeline_version,
            name=data["name"],
            stage=data["stage"],
            status="open",
            amount=_money_text(data.get("amount")),
            amount_units=to_units(data.get("amount")),
            currency=data.get("currency") or "USD",
            owner=data.get("owner"),
            account=data.get("account"),
            industry=data.get("industry"),
            lead_source=data.get("lead_source"),
            decision_maker_role=data.get("decision_maker_role"),
            opened_at=event.occurred_at,
            stage_entered_at=event.occurred_at,
            closed_at=None,
            lost_reason=None,
            flagged_stale=0,
            version=0,
            position=event.position,
            stay_seq=0,
            visited=set(),
            advanced=set(),
            last_event_at=event.occurred_at,
            country=data.get("country"),
            expected_close=data.get("expected_close"),
            unqualified=_unqualified(data.get("qualification")),
        )
        self.changes.pipelines.add(row.pipeline_id)
        self._enter(row, row.stage, event.occurred_at)
        return row

    def _updated(self, row: DealRow, event: EventRecord) -> None:
        if event.data.get("qualification") is not None:
            row.unqualified = _unqualified(event.data["qualification"])
        for name, value in (event.data.get("changes") or {}).items():
            if name not in TRACKED_FIELDS:
                continue
            if name == "amount":
                row.amount, row.amount_units = _money_text(value), to_units(value)
            elif name == "name":
                row.name = value
            elif name == "currency":
                row.currency = value
            else:
                setattr(row, name, value)

    def _stage_changed(self, row: DealRow, event: EventRecord) -> None:
        self._leave(row, event.data.get("direction") or "forward", event.occurred_at)
        self._enter(row, event.data["to_stage"], event.occurred_at)

    def _won(self, row: DealRow, event: EventRecord) -> None:
        self._leave(row, "won", event.occurred_at)
        row.status, row.closed_at, row.ever_won = "won", event.occurred_at, 1
        if event.data.get("amount") is not None:
            row.amount, row.amount_units = (
                _money_text(event.data["amount"]),
                to_units(event.data["amount"]),
            )

    def _lost(self, row: DealRow, event: EventRecord) -> None:
        self._leave(row, "lost", event.occurred_at)
        row.status, row.closed_at, row.lost_reason = (
            "lost",
            event.occurred_at,
            event.data.get("reason"),
        )

    def _reopened(self, row: DealRow, event: EventRecord) -> None:
        row.status, row.closed_at, row.lost_reason = "open", None, None
        self._enter(row, event.data["to_stage"], event.occurred_at)

    def _flagged_stale(self, row: DealRow, event: EventRecord) -> None:
        row.flagged_stale = 1


_HANDLERS = {
    "updated": DealFold._updated,
    "stage_changed": DealFold._stage_changed,
    "won": DealFold._won,
    "lost": DealFold._lost,
    "reopened": DealFold._reopened,
    "flagged_stale": DealFold._flagged_stale,
}


def _trunc_ms(us: int) -> int:
    """Microseconds to whole milliseconds, truncated toward zero as SQL's integer division is."""
    return us // 1000 if us >= 0 else -(-us // 1000)


def _key_part(c: tuple[Any, ...]) -> tuple[Any, ...]:
    return (c[2], c[3], c[6], c[9])


def _contribution(row: DealRow) -> tuple[Any, ...]:
    """What a deal's current state adds to the summary tables (compared before and after)."""
    return (
        row.pipeline_id,
        row.stage,
        row.status,
        row.amount_units,
        row.opened_at,
        row.flagged_stale,
        None if row.closed_at is None else row.closed_at - row.opened_at,
        ",".join(sorted(row.visited)),
        row.ever_won,
        (row.industry, row.lead_source, row.decision_maker_role, row.owner, row.account),
    )


def _unqualified(verdict: dict[str, Any] | None) -> int:
    return int(verdict is not None and not verdict.get("qualified", True))


def _money_text(value: Any) -> str | None:
    return None if value is None else str(value)
