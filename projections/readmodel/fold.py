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
from typing import Any
from uuid import UUID

from engine.domain.deal import DEAL_FIELDS
from projections.readmodel.records import EventRecord
from projections.readmodel.rows import (
    ChangeSet,
    DealRow,
    StayRow,
    to_units,
)
from projections.readmodel.schema import KEYS_COUNTERS, STATS_COUNTERS
from projections.readmodel.timeline import DAY_US, day_of

# The deal attributes the breakdown groups by (each keeps its own counters).
BREAKDOWN_KEYS = ("industry", "lead_source", "decision_maker_role", "owner", "account")
# The attributes whose counters are also kept in business time (as-of breakdowns without a
# scan). Not the account: it has about as many values as there are deals, so its buckets would
# grow with the deals (a breakdown by account as of a time scans the history rows).
TIMELINE_KEYS = BREAKDOWN_KEYS[:4]
_S = {name: i for i, name in enumerate(STATS_COUNTERS)}
_N_STATS, _N_KEYS = len(STATS_COUNTERS), len(KEYS_COUNTERS)


# The deal fields the read models keep (attributes they do not).
TRACKED_FIELDS = frozenset(DEAL_FIELDS) - {"attributes"}


class DealFold:
    """Applies events to deal rows; ``stored`` are the current rows already in the database.

    ``summaries=False`` folds the rows only (current, history, stays) and leaves every summary
    delta empty: the bulk rebuild computes the summary tables from the rows in SQL instead
    (``bulk_sums.py``), which costs a fraction of adding each event's contribution here."""

    def __init__(self, stored: dict[UUID, DealRow], *, summaries: bool = True) -> None:
        self.summaries = summaries
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
        if self.summaries:
            self._summarise()
        return self.changes

    # -- summary tables -----------------------------------------------------------------------
    def _stat(self, pipeline: str, stage: str) -> list[int]:
        key = (pipeline, stage)
        found = self.changes.stats.get(key)
        if found is None:
            found = self.changes.stats[key] = [0] * _N_STATS
        return found

    def _t_stat(self, pipeline: str, at: int, stage: str) -> list[int]:
        key = (pipeline, day_of(at), stage)
        found = self.changes.t_stats.get(key)
        if found is None:
            found = self.changes.t_stats[key] = [0] * _N_STATS
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

    def _change_at(self, before: tuple[Any, ...] | None, row: DealRow, at: int) -> None:
        """Record, in business time, how one event changed the deal's contribution."""
        after = _contribution(row)
        if before == after:
            return
        keys = before is None or _key_part(before) != _key_part(after)
        day = day_of(at)
        if before is not None:
            self._add(before, -1, keys, day)
        self._add(after, 1, keys, day)

    def _add(self, c: tuple[Any, ...], sign: int, keys: bool, day: int | None = None) -> None:
        """Add (``sign`` 1) or take away (-1) a contribution: to the current summaries, or with
        ``day`` to the business-time changes of that day."""
        (
            pipeline,
            stage,
            status,
            units,
            opened_at,
            flagged,
            dur,
            visited,
            ever_won,
            attrs,
            entered,
        ) = c
        changes = self.changes
        if day is None:
            stat = self._stat(pipeline, stage)
            won_buckets: dict[Any, int] = changes.won_buckets
            visits: dict[Any, int] = changes.visits
            key_counters: dict[Any, list[int]] = changes.keys
            head: tuple[Any, ...] = (pipeline,)
            dims: tuple[str, ...] = BREAKDOWN_KEYS
        else:
            stat = self._t_stat(pipeline, day * DAY_US, stage)
            won_buckets, visits, key_counters = changes.t_won, changes.t_visits, changes.t_keys
            head = (pipeline, day)
            dims = TIMELINE_KEYS
        stat[0] += sign
        units = units or 0
        if status == "open":
            if day is None and not flagged:
                at = (pipeline, day_of(entered), stage)
                changes.open_entered[at] = changes.open_entered.get(at, 0) + sign
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
            bucket = (*head, dur // DAY_US)
            won_buckets[bucket] = won_buckets.get(bucket, 0) + sign
            won, lost = 1, 0
        else:
            stat[9] += sign
            won, lost = 0, 1
        if status != "open" and day is None:
            closed = (pipeline, day_of(opened_at + dur), status, dur // DAY_US if won else 0)
            found = changes.closed.get(closed)
            if found is None:
                found = changes.closed[closed] = [0, 0, 0]
            found[0] += sign
            found[1] += sign * units
            found[2] += sign * _trunc_ms(dur)
        visit = (*head, visited, ever_won)
        visits[visit] = visits.get(visit, 0) + sign
        if not keys:
            return
        open_ = int(status == "open")
        won_units = units if won else 0
        won_ms = _trunc_ms(dur) if won else 0
        for dim, value in zip(dims, attrs, strict=False):
            key = (pipeline, dim, *head[1:], int(value is None), value or "")
            counters = key_counters.get(key)
            if counters is None:
                counters = key_counters[key] = [0] * _N_KEYS
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
            before: tuple[Any, ...] | None = None
            changing = self.summaries
        else:
            found = changes.current.get(event.deal) or self._stored.get(event.deal)
            if found is None or event.version <= found.version:
                # Unknown deal, or an event the stored row already reflects: nothing to do.
                changes.skipped += found is None
                return
            row = found
            handler = _HANDLERS.get(event.type)
            # Events without a handler (facts, activities) change no counter.
            changing = handler is not None and self.summaries
            before = _contribution(row) if changing else None
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
        if changing:
            self._change_at(before, row, event.occurred_at)
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
        new = [*row.deal_values(), ",".join(sorted(row.visited)), row.ever_won, at, None]
        self.changes.history.append(new)
        if row.pipeline_version is not None:
            versions = self.changes.versions
            key = (row.pipeline_id, row.pipeline_version)
            if versions.get(key, at + 1) > at:
                versions[key] = at
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
        if not self.summaries:
            return
        self._stat(row.pipeline_id, stage)[_S["entered"]] += stay.first_in_stage
        self._t_stat(row.pipeline_id, at, stage)[_S["entered"]] += stay.first_in_stage

    def _leave(self, row: DealRow, how: str, at: int) -> None:
        first_advance = 0
        if how in ("forward", "won") and row.stage not in row.advanced:
            row.advanced.add(row.stage)
            first_advance = 1
        if self.summaries:
            stay_ms = _trunc_ms(at - row.stage_entered_at)
            for stat in (
                self._stat(row.pipeline_id, row.stage),
                self._t_stat(row.pipeline_id, at, row.stage),
            ):
                stat[_S["advanced"]] += first_advance
                stat[_S["completed"]] += 1
                stat[_S["stay_ms"]] += stay_ms
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
        row.stage_entered_at,
    )


def _unqualified(verdict: dict[str, Any] | None) -> int:
    return int(verdict is not None and not verdict.get("qualified", True))


def _money_text(value: Any) -> str | None:
    return None if value is None else str(value)
