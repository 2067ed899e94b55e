"""Bulk writes, one batch ahead: :meth:`StreamedWrites.ingest_stream`.

A sequential writer spends a third of its time waiting for the store: the keys and events
travel, indexes are updated, the commit is flushed, and the writer's core sits idle meanwhile.
A bulk sender (an importer, a replay) has the next batch at hand, so the stream decides batch
k+1 (and validates it, when the caller's iterator does that) while a writer thread stores batch
k, in one transaction per batch exactly as :meth:`ingest` stores it.

Batch k+1 is decided against batch k as decided, since the store does not show it yet: k's
idempotency keys and the deals it touched are carried over. Nothing else changes: the same
decisions, keys, hash chain and transactions; outcomes come out in order, each batch's once it
has committed. When the store refuses a batch with a conflict (another writer stored one of its
deals' versions or event ids first), that batch, and the next one, decided on top of it, are
decided again against the store the sequential way. The cache of recent deals only ever gets
committed states: a deal the next batch touched too is remembered when that batch commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from engine.application.messages import Command, Outcome
from engine.application.write import Ahead, SealedBatch, WritePath, collect_sealed
from engine.collector import PAUSE_FROM, paused_for
from engine.domain.deal import Deal
from engine.persistence.recorders import IdempotencyRecord

Decided = tuple[list[Outcome], list[Deal], list[IdempotencyRecord]]


@dataclass
class _InFlight:
    """A batch decided and handed to the writer thread."""

    commands: list[Command]
    outcomes: list[Outcome]
    ahead: Ahead  # its keys and the deals it touched
    written: Future[dict[tuple[str, int], int]]


class StreamedWrites(WritePath):
    """:meth:`ingest_stream`. Part of :class:`DealflowApp`."""

    def ingest_stream(self, batches: Iterable[Sequence[Command]]) -> Iterator[list[Outcome]]:
        """Ingest each batch as :meth:`ingest` would, deciding the next one while the last
        one is stored; yields each batch's outcomes, in order, once it has committed.

        For bulk senders' commands (automation writes through :meth:`ingest`). Outcomes carry
        no ``deal``: the next batch may already have moved it on. A caller that stops early
        leaves the batch in flight committed, unreported (a resend is answered as a replay).
        """
        batches = iter(batches)
        with ThreadPoolExecutor(1, thread_name_prefix="dealflow-stream") as writer:
            flying: _InFlight | None = None
            try:
                while True:
                    # The collector stays paused from taking the next batch (its validation,
                    # when the caller's iterator validates) to handing it to the writer.
                    with paused_for(PAUSE_FROM):
                        batch = next(batches, None)
                        if batch is None:
                            break
                        ready, flying = self._step(writer, list(batch), flying)
                    yield from ready
                if flying is not None:
                    landed, flying = flying, None
                    outcomes = self._land(landed, set())
                    yield outcomes if outcomes is not None else self.ingest(landed.commands)
            finally:
                if flying is not None:
                    flying.written.exception()  # wait: no transaction left behind the caller

    def _step(
        self, writer: ThreadPoolExecutor, commands: list[Command], flying: _InFlight | None
    ) -> tuple[list[list[Outcome]], _InFlight | None]:
        """Decide ``commands`` on top of the batch in flight, then land that one: the outcomes
        ready to hand out, and what is in flight now."""
        ready: list[list[Outcome]] = []
        decided = self._decide_ahead(commands, flying)
        if flying is not None:
            touched = {deal.id for deal in decided[1]} if decided else set()
            outcomes = self._land(flying, touched)
            if outcomes is None:
                ready.append(self.ingest(flying.commands))
                decided = None  # it was decided on top of what the store refused
            else:
                ready.append(outcomes)
        if decided is None:
            ready.append(self.ingest(commands))
            return ready, None
        return ready, self._send(writer, commands, decided)

    def _decide_ahead(self, commands: list[Command], flying: _InFlight | None) -> Decided | None:
        """The batch decided on top of the one in flight; None when it must go the sequential
        way (a refused command's event id was stored meanwhile: it is a replay)."""
        outcomes, deals, keys = self._decide(commands, False, flying.ahead if flying else None)
        if self._replays_arrived(commands, outcomes):
            return None
        return outcomes, deals, keys

    def _send(
        self, writer: ThreadPoolExecutor, commands: list[Command], decided: Decided
    ) -> _InFlight:
        outcomes, deals, keys = decided
        # Collected here, not in the writer thread: the next batch may move these deals on.
        # The COPY's bytes are built here too: Python work in the writer thread would wait
        # for this thread to let go of the interpreter at every turn.
        sealed = collect_sealed(deals)
        prepare = getattr(self.recorder, "prepare_copy", None)
        if prepare is not None and keys:
            sealed.copy_data = prepare(sealed.stored, keys)
        ahead = Ahead(
            keys={k.event_id: (k.request_hash, k.deal_id, k.version) for k in keys},
            deals={deal.id: deal for deal in deals},
        )
        written = writer.submit(self._store_paused, sealed, keys)
        return _InFlight(commands, outcomes, ahead, written)

    def _store_paused(
        self, sealed: SealedBatch, keys: list[IdempotencyRecord]
    ) -> dict[tuple[str, int], int]:
        if not keys:
            return {}
        with paused_for(len(keys)):
            return self._store(sealed, keys)

    def _land(self, flying: _InFlight, touched: set[UUID]) -> list[Outcome] | None:
        """The batch's outcomes once its write committed; None if the store refused it."""
        try:
            positions = flying.written.result()
        except IntegrityError:
            return None
        self._recent.remember(
            deal for deal in flying.ahead.deals.values() if deal.id not in touched
        )
        for outcome in flying.outcomes:
            if outcome.status == "recorded":
                outcome.position = positions.get((outcome.deal_id, outcome.version or 0))
        return flying.outcomes
