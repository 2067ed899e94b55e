"""The bridge from the event log to Temporal: follows the log, starts, signals and cancels.

Exactly-once effect: the bridge reads the log in batches from its tracked position, makes each
batch's effects (automation events recorded with deterministic event ids, workflows started
with deterministic ids and a reject-duplicate id policy, signals and cancellations that are
harmless to repeat) and only then stores the new position, in the same transaction as its own
bookkeeping. A crash in between redelivers the batch, and redelivery changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID

from temporalio.client import Client

from engine.application import Command, DealflowApp, automation_command
from engine.domain.deal import (
    ActivityLogged,
    Deal,
    DealEvent,
    Lost,
    NurtureEnrolled,
    NurtureStopped,
    Opened,
    Reopened,
    StageChanged,
    Won,
)
from engine.domain.deal_events import topics_of
from engine.domain.definitions import DEFINITION_TOPIC, PIPELINE, SEQUENCE, DefinitionApplied
from engine.domain.errors import DomainError
from engine.domain.events import utcnow
from engine.domain.pipeline import PipelineDefinition
from workflows import ids
from workflows.bridge_effects import BridgeEffects
from workflows.bridge_state import (
    RUNS,
    TRACKING,
    BridgeBatch,
    BridgeStats,
    RunIndex,
    create_tables,
)
from workflows.models import (
    ActivitySignal,
    DealSignal,
    EscalationInput,
    NurtureInput,
    SequenceDefinition,
)
from workflows.nurture import NurtureWorkflow

log = logging.getLogger("dealflow.bridge")

_WATCHED = {
    topic
    for cls in (
        Opened,
        StageChanged,
        Reopened,
        Won,
        Lost,
        ActivityLogged,
        NurtureEnrolled,
        NurtureStopped,
    )
    for topic in topics_of(cls)
}


class Bridge(BridgeEffects):
    def __init__(
        self,
        app: DealflowApp,
        client: Client,
        task_queue: str,
        *,
        name: str = "workflows",
        batch_size: int = 500,
        poll_interval: float = 0.2,
        concurrency: int = 64,
        nurture_steps_per_run: int = 25,
        workflow_id_prefix: str = "",
    ) -> None:
        self.app = app
        self.client = client
        self.task_queue = task_queue
        self.name = name
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.concurrency = concurrency
        self.nurture_steps_per_run = nurture_steps_per_run
        # Installations sharing one namespace tell their workflow ids apart by a prefix.
        self.prefix = workflow_id_prefix
        self.stats = BridgeStats()
        self.sequences: dict[str, tuple[int, SequenceDefinition]] = {}
        self._position: int | None = None
        self._stopping = asyncio.Event()
        # Whether any pipeline (any version) lets activity extend a stay. Until one does, an
        # ordinary activity has no effect here, and loading its deal cost more than everything
        # else: the bridge fell minutes behind under load (found by dealflow bench chaos).
        self._activity_extends = False

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def position(self) -> int:
        if self._position is None:
            row = self.app.db.fetchone(
                f"SELECT position FROM {TRACKING} WHERE name = %s", (self.name,)
            )
            self._position = int(row["position"]) if row else 0
        return self._position

    async def start(self) -> None:
        await asyncio.to_thread(create_tables, self.app)
        await asyncio.to_thread(self._load_catalog)

    async def run(self) -> None:
        """Follow the log until :meth:`stop`; a failing batch is retried with backoff."""
        await self.start()
        delay = self.poll_interval
        while not self._stopping.is_set():
            try:
                count = await self.process_batch()
                delay = self.poll_interval
            except Exception:
                log.exception("bridge batch failed at position %s; retrying", self._position)
                self._position = None  # reread: the failed batch is redelivered
                count = 0
                delay = min(delay * 2, 10.0)
            if count < self.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    def stop(self) -> None:
        self._stopping.set()

    async def catch_up(self, timeout: float = 30.0) -> int:
        """Process until the log is exhausted (tests, bench)."""
        deadline = time.monotonic() + timeout
        total = 0
        while time.monotonic() < deadline:
            count = await self.process_batch()
            total += count
            if count == 0:
                return total
        raise TimeoutError("the bridge did not catch up")

    def _load_catalog(self) -> None:
        """Sequences as they stood at the tracked position (later ones arrive through the log)."""
        self.sequences.clear()
        start, stop = 1, self.position
        while stop and start <= stop:
            found = self.app.recorder.select_notifications(
                start, 1000, stop=stop, topics=[DEFINITION_TOPIC]
            )
            for notification in found:
                self._learn(self.app.mapper.to_domain_event(notification))
            if len(found) < 1000:
                break
            start = found[-1].id + 1

    def _learn(self, event: Any) -> None:
        if event.kind == PIPELINE:
            stages = (event.body or {}).get("stages") or []
            if any(
                isinstance(stage, dict)
                and (stage.get("escalation") or {}).get("activity_extends_limit")
                for stage in stages
            ):
                self._activity_extends = True
            return
        if event.kind != SEQUENCE:
            return
        try:
            self.sequences[event.key] = (
                event.originator_version,
                SequenceDefinition.model_validate(event.body),
            )
        except ValueError:
            log.warning(
                "sequence %s v%s does not parse; ignored", event.key, event.originator_version
            )

    # -- one batch -------------------------------------------------------------------------------
    async def process_batch(self) -> int:
        start = self.position + 1
        notifications = await asyncio.to_thread(
            self.app.recorder.select_notifications, start, self.batch_size
        )
        if not notifications:
            return 0
        batch = await asyncio.to_thread(self._decide, notifications)
        if batch.commands:
            await asyncio.to_thread(self._record, batch.commands)
        await self._run_effects(batch)
        last = notifications[-1].id
        await asyncio.to_thread(self._commit, batch, last)
        self._position = last
        self.stats.batches += 1
        self.stats.events += len(notifications)
        return len(notifications)

    def _record(self, commands: list[Command]) -> None:
        """Record the batch's enrolments. One stamped with a time the deal has since passed
        (a client wrote to the deal between our decision and this write) is stamped again:
        dropping it would lose the enrolment for good, the bridge has moved on."""
        for _ in range(5):
            outcomes = self.app.ingest(commands, allow_automation=True)
            self.stats.enrollments += sum(1 for o in outcomes if o.status == "recorded")
            late = [
                c
                for c, o in zip(commands, outcomes, strict=True)
                if o.status == "rejected" and o.error is not None and _time_passed(o.error)
            ]
            for command, outcome in zip(commands, outcomes, strict=True):
                if outcome.status == "rejected" and command not in late:
                    log.warning("enrolment %s refused: %s", command.event_id, outcome.error)
            if not late:
                return
            commands = [replace(c, occurred_at=self._after_latest(c.deal_id)) for c in late]
        log.warning("enrolments still refused after re-stamping: %s", [c.event_id for c in late])

    def _after_latest(self, deal_id: str) -> datetime:
        latest = self.app.deal(deal_id).last_occurred_at
        now = utcnow()
        return now if latest is None else max(now, latest)

    def _commit(self, batch: BridgeBatch, position: int) -> None:
        with self.app.db.transaction() as cur:
            if batch.new_runs:
                cur.executemany(
                    f"INSERT INTO {RUNS} (workflow_id, deal_id, sequence_id, active) VALUES (%s, %s, %s, 1)"
                    " ON CONFLICT (workflow_id) DO NOTHING",
                    batch.new_runs,
                )
            if batch.ended_runs:
                cur.executemany(
                    f"UPDATE {RUNS} SET active = 0 WHERE workflow_id = %s",
                    [(w,) for w in batch.ended_runs],
                )
            cur.execute(
                f"INSERT INTO {TRACKING} (name, position) VALUES (%s, %s)"
                " ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                (self.name, position),
            )

    # -- decisions (in a thread: they read the store) ----------------------------------------------
    def _decide(self, notifications: Sequence[Any]) -> BridgeBatch:
        batch = BridgeBatch()
        events: list[tuple[int, Any]] = []
        for notification in notifications:
            if notification.topic == DEFINITION_TOPIC or notification.topic in _WATCHED:
                events.append((notification.id, self.app.mapper.to_domain_event(notification)))
        # A stay that already ended within this batch needs no escalation.
        left: dict[UUID, int] = {}
        for _, event in events:
            if isinstance(event, (StageChanged, Reopened, Won, Lost)):
                left[event.originator_id] = event.originator_version
        runs = RunIndex(self.app)
        # The deals of the batch's events in one read (and their nurture runs in another),
        # not one query per event: a burst of enrolments had kept the bridge reading for
        # seconds before its first start.
        current = self.app.deals_by_uuid(
            event.originator_id
            for _, event in events
            if isinstance(event, DealEvent) and not isinstance(event, Opened)
        )
        runs.preload(deal.deal_id for deal in current.values() if deal is not None)
        for position, event in events:
            if isinstance(event, DefinitionApplied):
                self._learn(event)
                continue
            if (
                isinstance(event, ActivityLogged)
                and event.activity != "reply"
                and not self._activity_extends
            ):
                continue
            self._decide_one(event, position, self._deal_at(event, current), batch, runs, left)
        return batch

    def _deal_at(self, event: DealEvent, current: dict[UUID, Deal | None]) -> Deal:
        """The deal as it was right after ``event``: its current state when that is still it
        (or when only the deal id is needed: enrolments, unenrolments), else read at that
        version."""
        if isinstance(event, Opened):
            return _opened_state(event)
        deal = current.get(event.originator_id)
        if deal is not None and (
            deal.version == event.originator_version
            or isinstance(event, (NurtureEnrolled, NurtureStopped))
        ):
            return deal
        return self.app.repository.get(event.originator_id, version=event.originator_version)  # type: ignore[no-any-return]

    def _decide_one(
        self,
        event: DealEvent,
        position: int,
        deal: Deal,
        batch: BridgeBatch,
        runs: RunIndex,
        left: dict[UUID, int],
    ) -> None:
        deal_id = deal.deal_id
        effects = batch.effects[deal_id]
        if isinstance(event, (Opened, StageChanged, Reopened)):
            if isinstance(event, (StageChanged, Reopened)):
                # Cancels and activity signals go to per-stay workflows started by earlier
                # releases (a missing one is ignored); an EscalationWindow needs neither.
                effects.append(
                    self._cancel(
                        self.prefix + ids.escalation_workflow_id(deal_id, deal.stage_entries - 1)
                    )
                )
                if isinstance(event, StageChanged):
                    self._signal_runs(
                        effects, runs.active(deal_id), DealSignal(reason="stage_changed")
                    )
            self._enroll_by_rule(event, deal, batch)
            if left.get(event.originator_id, 0) <= event.originator_version:
                self._escalate(event, position, deal, batch)
        elif isinstance(event, (Won, Lost)):
            effects.append(
                self._cancel(self.prefix + ids.escalation_workflow_id(deal_id, deal.stage_entries))
            )
            self._signal_runs(effects, runs.active(deal_id), DealSignal(reason=event.TYPE))
        elif isinstance(event, ActivityLogged):
            if event.activity == "reply":
                self._signal_runs(effects, runs.active(deal_id), DealSignal(reason="reply"))
            stage = self._stage(deal, event.pipeline_version)
            if (
                stage is not None
                and stage.max_days_in_stage
                and stage.effective_escalation.activity_extends_limit
            ):
                workflow_id = self.prefix + ids.escalation_workflow_id(deal_id, deal.stage_entries)
                effects.append(
                    self._signal(workflow_id, "activity", ActivitySignal(at=event.occurred_at))
                )
        elif isinstance(event, NurtureEnrolled):
            workflow_id = self.prefix + ids.nurture_workflow_id(
                deal_id, event.sequence_id, event.originator_version
            )
            enrollment = NurtureInput(
                deal_id=deal_id,
                sequence_id=event.sequence_id,
                sequence_version=event.sequence_version,
                enrolled_version=event.originator_version,
                max_steps_per_run=self.nurture_steps_per_run,
            )
            effects.append(self._start(NurtureWorkflow.run, enrollment, workflow_id))
            runs.add(deal_id, event.sequence_id, workflow_id)
            batch.new_runs.append((workflow_id, deal_id, event.sequence_id))
        elif isinstance(event, NurtureStopped):
            ending = [w for w, s in runs.active(deal_id) if s == event.sequence_id]
            signal = DealSignal(reason=event.reason, already_recorded=True)
            self._signal_runs(effects, [(w, event.sequence_id) for w in ending], signal)
            runs.end(deal_id, event.sequence_id)
            batch.ended_runs.extend(ending)

    def _enroll_by_rule(self, event: DealEvent, deal: Deal, batch: BridgeBatch) -> None:
        for sequence_id, (version, definition) in self.sequences.items():
            rule = definition.enroll
            if rule is None or not rule.matches(
                deal.pipeline_id, deal.stage, deal.lead_source, deal.industry
            ):
                continue
            data = {"sequence_id": sequence_id, "sequence_version": version}
            batch.commands.append(
                automation_command(
                    deal.deal_id,
                    "nurture_enrolled",
                    data,
                    event_id=ids.auto_enroll_event_id(
                        sequence_id, deal.deal_id, deal.stage_entries
                    ),
                    actor="dealflow:enrollment",
                    occurred_at=max(utcnow(), event.occurred_at),
                )
            )

    def _escalate(self, event: DealEvent, position: int, deal: Deal, batch: BridgeBatch) -> None:
        stage = self._stage(deal, event.pipeline_version)
        if stage is None or not stage.max_days_in_stage:
            return
        settings = stage.effective_escalation
        stay = EscalationInput(
            deal_id=deal.deal_id,
            stage=deal.stage,
            stage_entries=deal.stage_entries,
            entered_at=event.occurred_at,
            max_days=stage.max_days_in_stage,
            manager_after_days=settings.manager_after_days,
            flag_after_days=settings.flag_after_days,
            activity_extends_limit=settings.activity_extends_limit,
            close_as_lost_after_days=settings.close_as_lost_after_days,
        )
        batch.stays[self.prefix + ids.escalation_window_id(position)].append(stay)

    def _stage(self, deal: Deal, pipeline_version: int | None) -> Any:
        definition: PipelineDefinition = self.app.pipeline_ref(
            deal.pipeline_id, pipeline_version
        ).definition
        return definition.stage(deal.stage) if definition.has_stage(deal.stage) else None

    def _signal_runs(
        self,
        effects: list[Callable[[], Awaitable[None]]],
        runs: list[tuple[str, str]],
        signal: DealSignal,
    ) -> None:
        for workflow_id, _ in runs:
            effects.append(self._signal(workflow_id, "deal_event", signal))


def _opened_state(event: Opened) -> Deal:
    """The deal right after it was opened, without a trip to the store."""
    return event.mutate(None)


def _time_passed(error: DomainError) -> bool:
    """The refusal of an event stamped earlier than the deal's latest business time."""
    return error.details.get("field") == "occurred_at"
