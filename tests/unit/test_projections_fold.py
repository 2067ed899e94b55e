"""The fold is independent of how the log is cut into batches: any split gives the rows one
big batch gives (this is what lets the runner batch freely and resume anywhere)."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from dealflow.bench.synthetic import deal_script
from engine.domain.deal import deal_uuid
from projections.readmodel.fold import DealFold
from projections.readmodel.records import EventRecord, to_us
from projections.readmodel.rows import DealRow

STAGES = ["lead", "qualify", "demo", "proposal", "closing"]


def records(seed: int, deals: int) -> list[EventRecord]:
    rng = random.Random(seed)
    events: list[tuple[str, int, EventRecord]] = []
    for number in range(deals):
        deal_id = f"d{number}"
        start = datetime(2024, 1, 1 + number, tzinfo=UTC)
        for version, body in enumerate(deal_script(rng, deal_id, start, STAGES, "p"), start=1):
            data = dict(body)
            if body["type"] == "opened":
                data.update(deal_id=deal_id, stage=body.get("stage", "lead"), currency="USD")
            if body["type"] == "updated":
                data = {**data, "changes": {"amount": body["amount"]}}
            occurred = datetime.fromisoformat(body["occurred_at"].replace("Z", "+00:00"))
            events.append(
                (
                    body["occurred_at"],
                    version,
                    EventRecord(
                        body["type"], deal_uuid(deal_id), version, to_us(occurred), 0, 1, data
                    ),
                )
            )
    events.sort(key=lambda e: (e[0], e[1]))
    out = []
    for position, (_, _, record) in enumerate(events, start=1):
        out.append(
            EventRecord(
                record.type,
                record.deal,
                record.version,
                record.occurred_at,
                position,
                record.pipeline_version,
                record.data,
            )
        )
    return out


class MemoryStore:
    """The tables, in memory, updated as a view would update them."""

    def __init__(self) -> None:
        self.current: dict[UUID, DealRow] = {}
        self.history: dict[tuple[UUID, int], list[Any]] = {}
        self.stays: dict[tuple[UUID, int], tuple[Any, ...]] = {}
        self.summaries: dict[tuple[Any, ...], list[int]] = {}

    def apply(self, batch: list[EventRecord]) -> None:
        changes = DealFold(copy.deepcopy(self.current)).apply_all(batch)
        for deal, version, end in changes.history_closes:
            self.history[(deal, version)][-1] = end
        for row in changes.history:
            self.history[(row[0], row[20])] = list(row)
        for deal, seq, left, how, first in changes.stay_closes:
            stay = list(self.stays[(deal, seq)])
            stay[5], stay[6], stay[8] = left, how, first
            self.stays[(deal, seq)] = tuple(stay)
        for key, stay in changes.stays.items():
            self.stays[key] = stay.values()
        for key, current in changes.current.items():
            self.current[key] = copy.deepcopy(current)
        deltas = (
            *(("stats", k, v) for k, v in changes.stats.items()),
            *(("keys", k, v) for k, v in changes.keys.items()),
            *(("visits", k, [v]) for k, v in changes.visits.items()),
            *(("won", k, [v]) for k, v in changes.won_buckets.items()),
        )
        for table, key, values in deltas:
            total = self.summaries.setdefault((table, *key), [0] * len(values))
            total[:] = [a + b for a, b in zip(total, values, strict=True)]

    def snapshot(self) -> tuple[Any, ...]:
        return (
            sorted((k, r.current_values()) for k, r in self.current.items()),
            sorted(self.history.items()),
            sorted(self.stays.items()),
            # The summary tables' totals: the same whatever the batch split (zeros dropped).
            sorted((k, v) for k, v in self.summaries.items() if any(v)),
        )


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 400), max_size=12))
def test_any_batch_split_gives_the_same_rows(seed: int, cuts: list[int]) -> None:
    events = records(seed, 12)
    whole = MemoryStore()
    whole.apply(events)
    split = MemoryStore()
    bounds = sorted({c % (len(events) + 1) for c in cuts} | {0, len(events)})
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        split.apply(events[lo:hi])
    assert split.snapshot() == whole.snapshot()
    # Every deal's history is a gap-free chain of validity intervals ending in an open one.
    for deal in whole.current:
        rows = sorted((v for (d, _), v in whole.history.items() if d == deal), key=lambda r: r[20])
        assert all(a[-1] == b[-2] for a, b in zip(rows, rows[1:], strict=False))
        assert rows[-1][-1] is None


def test_replaying_a_batch_already_applied_changes_nothing() -> None:
    events = records(5, 6)
    store = MemoryStore()
    store.apply(events)
    before = store.snapshot()
    changes = DealFold(copy.deepcopy(store.current)).apply_all(events)
    assert changes.empty and not changes.history and not changes.stays
    assert store.snapshot() == before
