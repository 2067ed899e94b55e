"""Activities: the only door from workflows to the outside world (the store, the channels).

Every effect is keyed by a deterministic id and checked before it is made, so an activity that
Temporal retries (after a timeout, a crash, a lost worker) finds its earlier effect and does
not send or record twice: the message is claimed in the outbox by id, the history event is
recorded with the same id as its idempotency key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from engine.application import Command, DealflowApp, Outcome, automation_command
from engine.application.automation import refused
from engine.domain.deal import (
    ActivityLogged,
    Deal,
    Lost,
    NurtureStopped,
    NurtureTouchSent,
    Reopened,
    StageChanged,
    Won,
    deal_uuid,
)
from engine.domain.definitions import DIRECTORY, SEQUENCE
from engine.domain.errors import DealClosed, DomainError, InvalidTransition, NotFound
from engine.domain.events import utcnow
from workflows import ids
from workflows.batching import AutomationRecorder, Batcher
from workflows.channels import Channels, deliver, deliver_many
from workflows.models import (
    Directory,
    DueEscalation,
    DueEscalations,
    DueResults,
    EscalateInput,
    EscalateResult,
    SequenceDefinition,
    SequenceRef,
    StopInput,
    TouchInput,
    TouchResult,
)
from workflows.outbox import Entry, Message, Outbox
from workflows.schedule import render

STALE_REASON = "stale"  # the reason a deal closed by escalation is recorded lost with
# The longest escalate_due waits for a level on the wall clock: the window's horizon (20 s) and
# a margin; a level due later than that by this clock was judged due by another clock.
MAX_WAIT_S = 21.0


def enrollment_end(
    events: Iterable[Any], sequence_id: str, stop_on: Iterable[str]
) -> tuple[str | None, bool]:
    """Why an enrollment is over, judged from the deal events recorded after it.

    Returns ``(reason, already_recorded)``: the first stop condition in the history, and whether
    a ``nurture_stopped`` for the sequence is itself already recorded. A closed deal ends every
    sequence (touches cannot be recorded on it) even when ``stop_on`` leaves won or lost out.
    """
    stops = set(stop_on)
    for event in events:
        if isinstance(event, NurtureStopped) and event.sequence_id == sequence_id:
            return event.reason, True
        if isinstance(event, (StageChanged, Reopened)) and "stage_changed" in stops:
            return "stage_changed", False
        if isinstance(event, (Won, Lost)):
            return event.TYPE, False
        if isinstance(event, ActivityLogged) and event.activity == "reply" and "reply" in stops:
            return "reply", False
    return None, False


def deal_fields(deal: Deal) -> dict[str, Any]:
    return {
        "deal_id": deal.deal_id,
        "name": deal.name,
        "stage": deal.stage,
        "pipeline_id": deal.pipeline_id,
        "amount": None if deal.amount is None else str(deal.amount),
        "currency": deal.currency,
        "owner": deal.owner,
        "account": deal.account,
        "industry": deal.industry,
        "lead_source": deal.lead_source,
        "decision_maker_role": deal.decision_maker_role,
        "expected_close": deal.expected_close.isoformat() if deal.expected_close else None,
        "attributes": deal.attributes,
    }


class AutomationActivities:
    """Activities bound to one process's application, outbox and channels."""

    def __init__(self, app: DealflowApp, outbox: Outbox, channels: Channels) -> None:
        self.app = app
        self.outbox = outbox
        self.channels = channels
        self.recorder = AutomationRecorder(app)
        self._claims: Batcher[tuple[Message, str, str], Entry] = Batcher(outbox.claim_many)
        # Escalations falling due together read their deals (one query) and the directory
        # (once) together: per escalation, these reads had cost more than the group commit.
        self._escalation_reads: Batcher[EscalateInput, tuple[Deal | None, Directory | None]] = (
            Batcher(self._read_for_escalations, max_items=512)
        )

    def _deliver(self, message: Message) -> Entry:
        return deliver(self.outbox, self.channels, message, self._claims.submit)

    # -- lookups -------------------------------------------------------------------------------
    def directory(self) -> Directory:
        try:
            _, body = self.app.get_definition(DIRECTORY, "team")
        except NotFound:
            return Directory()
        return Directory.model_validate(body)

    @activity.defn(name="load_sequence")
    def load_sequence(self, ref: SequenceRef) -> SequenceDefinition:
        try:
            _, body = self.app.get_definition(SEQUENCE, ref.sequence_id, ref.version)
        except NotFound as missing:
            raise ApplicationError(
                missing.message, type="NotFound", non_retryable=True
            ) from missing
        return SequenceDefinition.model_validate(body)

    # -- nurture -------------------------------------------------------------------------------
    @activity.defn(name="send_touch")
    def send_touch(self, touch: TouchInput) -> TouchResult:
        message_id = ids.touch_id(touch.workflow_id, touch.step_index)
        later = list(self.app.events.get(deal_uuid(touch.deal_id), gt=touch.enrolled_version))
        if any(isinstance(e, NurtureTouchSent) and e.event_id == message_id for e in later):
            return TouchResult(sent=True, message_id=message_id)  # a retry after the record
        reason, recorded = enrollment_end(later, touch.sequence_id, touch.stop_on)
        if reason is not None:
            return TouchResult(sent=False, stop_reason=reason, stop_recorded=recorded)
        deal = self.app.deal(touch.deal_id)
        fields = deal_fields(deal)
        message = Message(
            id=message_id,
            deal_id=touch.deal_id,
            kind="nurture",
            channel=touch.step.channel,
            to=self._touch_recipient(touch.step.channel, deal),
            subject=render(touch.step.subject, fields),
            body=render(touch.step.body, fields),
        )
        entry = self._deliver(message)
        sent = entry.message  # as first rendered: a retry records exactly what went out
        outcome = self.recorder.record(
            touch.deal_id,
            "nurture_touch_sent",
            {
                "sequence_id": touch.sequence_id,
                "step": touch.step_index,
                "channel": sent.channel,
                "to": sent.to,
                "subject": sent.subject,
            },
            event_id=message_id,
            actor="dealflow:nurture",
        )
        if outcome.status == "rejected":
            if isinstance(outcome.error, (DealClosed, InvalidTransition)):
                later = list(
                    self.app.events.get(deal_uuid(touch.deal_id), gt=touch.enrolled_version)
                )
                reason, recorded = enrollment_end(later, touch.sequence_id, touch.stop_on)
                return TouchResult(
                    sent=False, stop_reason=reason or "unenrolled", stop_recorded=recorded
                )
            raise ApplicationError(str(outcome.error), type="Rejected")
        return TouchResult(sent=True, message_id=message_id)

    def _touch_recipient(self, channel: str, deal: Deal) -> str | None:
        if channel == "email":
            contact = deal.attributes.get("contact_email") or deal.attributes.get("email")
            return str(contact) if contact else None
        owner = self.directory().person(deal.owner)
        return (owner.email if owner and owner.email else None) or deal.owner

    @activity.defn(name="record_nurture_stopped")
    def record_stopped(self, stop: StopInput) -> bool:
        outcome = self.recorder.record(
            stop.deal_id,
            "nurture_stopped",
            {"sequence_id": stop.sequence_id, "reason": stop.reason},
            event_id=ids.stop_event_id(stop.workflow_id),
            actor="dealflow:nurture",
        )
        if outcome.status == "rejected":
            if isinstance(outcome.error, InvalidTransition):
                return False  # already stopped (unenrolled by hand, say)
            raise ApplicationError(str(outcome.error), type="Rejected")
        return True

    # -- escalation ----------------------------------------------------------------------------
    def _read_for_escalations(
        self, steps: list[EscalateInput]
    ) -> list[tuple[Deal | None, Directory | None]]:
        deals = self.app.deals_by_id(step.deal_id for step in steps)
        messages = any(step.level in ("owner", "manager") for step in steps)
        directory = self.directory() if messages else None
        return [(deals.get(step.deal_id), directory) for step in steps]

    @activity.defn(name="escalate")
    def escalate(self, step: EscalateInput) -> EscalateResult:
        """One level of one stay (the per-stay ``StaleDealEscalation`` of earlier releases)."""
        deal, directory = self._escalation_reads.submit(step)
        if deal is None:
            raise NotFound(f"deal {step.deal_id!r} does not exist", deal_id=step.deal_id)
        if _stay_over(deal, step):
            return EscalateResult(done=False, reason="superseded")
        message, record = self._escalation(step, deal, directory)
        to = None if message is None else self._deliver(message).message.to
        command = record(to)
        if isinstance(command, Outcome):
            return self._escalation_outcome(command)
        return self._escalation_outcome(self.recorder.submit(command))

    @activity.defn(name="escalate_due")
    def escalate_due(self, due: DueEscalations) -> DueResults:
        """The levels an ``EscalationWindow`` found due within its lead: each waited for on the
        wall clock, then all those due by then together (the deals in one read, the messages
        claimed in one transaction, the events recorded in one ingest call)."""
        results: dict[int, EscalateResult] = {}
        ended: dict[str, EscalateResult] = {}  # stays this call found over or postponed
        pending = sorted(enumerate(due.steps), key=lambda item: item[1].due)  # stable: in order
        # Read while waiting: at the due time only what was stored since is read.
        known = self.app.deals_by_id(step.deal_id for step in due.steps)
        while pending:
            for index, step in pending:  # a stay found over: its later levels are not waited for
                key = ids.stay_key(step.deal_id, step.stage_entries)
                if key in ended:
                    results[index] = ended[key]
            pending = [(index, step) for index, step in pending if index not in results]
            if not pending:
                break
            ahead = (pending[0][1].due - utcnow()).total_seconds()
            if ahead > MAX_WAIT_S:
                # The workflow's clock is not this one (a time-skipping test server): trust it.
                group, pending = pending, []
            else:
                if ahead > 0:
                    time.sleep(ahead)
                now = utcnow()
                cut = next((n for n, (_, s) in enumerate(pending) if s.due > now), len(pending))
                group, pending = pending[:cut], pending[cut:]
            outcome = self._escalate_now(group, known)
            for (index, step), result in zip(group, outcome, strict=True):
                results[index] = result
                if not result.done:
                    ended.setdefault(ids.stay_key(step.deal_id, step.stage_entries), result)
        return DueResults(results=[results[index] for index in range(len(due.steps))])

    def _escalate_now(
        self, steps: list[tuple[int, DueEscalation]], known: dict[str, Deal | None]
    ) -> list[EscalateResult]:
        if not steps:
            return []
        deals = self.app.deals_by_id((step.deal_id for _, step in steps), known)
        messaging = any(step.level in ("owner", "manager") for _, step in steps)
        directory = self.directory() if messaging else None
        now = utcnow()
        results: dict[int, EscalateResult] = {}
        work: list[tuple[int, Message | None, Callable[[str | None], Command | Outcome]]] = []
        for index, step in steps:
            deal = deals.get(step.deal_id)
            if deal is None or _stay_over(deal, step):
                reason = "superseded" if deal is not None else "not_found"
                results[index] = EscalateResult(done=False, reason=reason)
                continue
            later = _postponed(step, deal)
            if later is not None and later > now:
                results[index] = EscalateResult(
                    done=False, reason="extended", last_activity_at=deal.last_activity_at
                )
                continue
            work.append((index, *self._escalation(step, deal, directory)))
        messages = [message for _, message, _ in work if message is not None]
        sent = {
            e.message.id: e.message.to for e in deliver_many(self.outbox, self.channels, messages)
        }
        commands: list[tuple[int, Command]] = []
        for index, message, record in work:
            command = record(None if message is None else sent[message.id])
            if isinstance(command, Outcome):
                results[index] = self._escalation_outcome(command)
            else:
                commands.append((index, command))
        if commands:
            outcomes = self.app.ingest([c for _, c in commands], allow_automation=True)
            for (index, _), outcome in zip(commands, outcomes, strict=True):
                results[index] = self._escalation_outcome(outcome)
        return [results[index] for index, _ in steps]

    def _escalation(
        self, step: EscalateInput, deal: Deal, directory: Directory | None
    ) -> tuple[Message | None, Callable[[str | None], Command | Outcome]]:
        """What one level does: the message to send (owner, manager), and how to build the
        command recording it from the address the message went to (a retry records the address
        first claimed). The level's event id is deterministic: a repeat is a replay."""
        event_id = ids.escalation_event_id(step.deal_id, step.stage_entries, step.level)
        if step.level == "closed_lost":
            # A client's `lost`, parsed and decided like one; the event id makes it once only.
            body = {"type": "lost", "event_id": event_id, "reason": STALE_REASON}
            command = Command.from_body(step.deal_id, body, "dealflow:escalation")
            return None, lambda _: command
        if step.level == "flagged":
            return None, lambda _: _automation(
                step.deal_id, "flagged_stale", {"stage": step.stage}, event_id
            )
        directory = directory or self.directory()
        owner = directory.person(deal.owner)
        person = (
            owner if step.level == "owner" else directory.person(owner.manager if owner else None)
        )
        person_id = (owner.manager if owner else None) if step.level == "manager" else deal.owner
        whose = "your deal" if step.level == "owner" else f"{deal.owner or 'an owner'}'s deal"
        message = Message(
            id=event_id,
            deal_id=step.deal_id,
            kind="escalation",
            channel="email",
            to=(person.email if person and person.email else None) or person_id,
            subject=f"Stale deal: {deal.name} in {step.stage}",
            body=(
                f"{whose} {deal.name!r} ({deal.deal_id}) has stayed in stage {step.stage!r} "
                f"longer than the pipeline allows. Level: {step.level}."
            ),
        )
        return message, lambda to: _automation(
            step.deal_id,
            "escalated",
            {"stage": step.stage, "level": step.level, "to": to},
            event_id,
        )

    @staticmethod
    def _escalation_outcome(outcome: Any) -> EscalateResult:
        if outcome.status == "rejected":
            if isinstance(outcome.error, (DealClosed, InvalidTransition)):
                return EscalateResult(done=False, reason="superseded")
            raise ApplicationError(str(outcome.error), type="Rejected")
        return EscalateResult(done=True)

    def all(self) -> list[Any]:
        return [
            self.load_sequence,
            self.send_touch,
            self.record_stopped,
            self.escalate,
            self.escalate_due,
        ]


def _automation(deal_id: str, type_: str, data: dict[str, Any], event_id: str) -> Command | Outcome:
    try:
        return automation_command(
            deal_id, type_, data, event_id=event_id, actor="dealflow:escalation"
        )
    except DomainError as error:
        return refused(deal_id, event_id, error)


def _stay_over(deal: Deal, step: EscalateInput) -> bool:
    """The deal left the stay the level belongs to (moved on, re-entered, won or lost)."""
    return deal.is_closed or deal.stage_entries != step.stage_entries or deal.stage != step.stage


def _postponed(step: DueEscalation, deal: Deal) -> datetime | None:
    """The level's due time moved by activity logged after its clock started (only in stages
    whose activity extends the limit), else None."""
    if step.counted_from is None or deal.last_activity_at is None:
        return None
    if deal.last_activity_at <= step.counted_from:
        return None
    return step.due + (deal.last_activity_at - step.counted_from)
