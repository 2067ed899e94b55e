"""The rules of a deal: its commands, each checking what the pipeline and the deal's state
allow before it triggers an event (by the event's contract type). Exit criteria are checked
here, never in an event's ``apply``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.domain.deal_basics import DEAL_FIELDS, EventMeta, PipelineRef
from engine.domain.deal_events import apply_changes
from engine.domain.deal_state import DealState
from engine.domain.errors import DealClosed, ExitCriteriaUnmet, InvalidTransition, ValidationFailed
from engine.domain.pipeline import (
    DealFacts,
    PipelineDefinition,
    evaluate_criteria,
    unmet_qualification,
)
from engine.domain.values import check_amount, json_ready

# Events an automation may still record after a deal closed (stopping a sequence, say).
ALLOWED_WHEN_CLOSED = frozenset({"reopened", "nurture_stopped"})
QUALIFICATION = "qualification"  # the name a rejection gives the pipeline's qualification rule


def qualification_verdict(definition: PipelineDefinition, deal: DealFacts) -> dict[str, Any] | None:
    """What an opened or updated deal records about the pipeline's qualification rule."""
    if not definition.qualification:
        return None
    unmet = unmet_qualification(definition, deal)
    return {"qualified": not unmet, "unmet": unmet}


class DealRules(DealState):
    """The commands of :class:`engine.domain.deal.Deal`, which supplies ``_trigger``."""

    def _trigger(
        self, type_: str, meta: EventMeta, pipeline_version: int | None, **data: Any
    ) -> Any:
        raise NotImplementedError

    # -- commands -----------------------------------------------------------------------------
    def record_fact(
        self,
        meta: EventMeta,
        pipeline_version: int | None,
        *,
        fact: str,
        value: bool,
        note: str | None = None,
    ) -> None:
        self._require_open("fact_recorded")
        self._trigger("fact_recorded", meta, pipeline_version, fact=fact, value=value, note=note)

    def update(
        self,
        meta: EventMeta,
        pipeline_version: int | None,
        changes: dict[str, Any],
        definition: PipelineDefinition | None = None,
    ) -> None:
        self._require_open("updated")
        unknown = set(changes) - set(DEAL_FIELDS)
        if unknown:
            raise ValidationFailed(f"fields that cannot be updated: {', '.join(sorted(unknown))}")
        if not changes:
            raise ValidationFailed("an update needs at least one field")
        if "name" in changes and not changes["name"]:
            raise ValidationFailed("name cannot be empty", field="name")
        check_amount(changes.get("amount"))
        verdict = self._verdict_after(definition, changes)
        extra = {} if verdict is None else {"qualification": verdict}
        self._trigger("updated", meta, pipeline_version, changes=json_ready(changes), **extra)

    def log_activity(
        self,
        meta: EventMeta,
        pipeline_version: int | None,
        *,
        activity: str,
        summary: str | None = None,
    ) -> None:
        self._require_open("activity_logged")
        self._trigger("activity_logged", meta, pipeline_version, activity=activity, summary=summary)

    def change_stage(self, meta: EventMeta, pipeline: PipelineRef, *, to_stage: str) -> None:
        self._require_open("stage_changed")
        definition = pipeline.definition
        if not definition.has_stage(to_stage):
            raise InvalidTransition(
                f"stage {to_stage!r} is not in pipeline {pipeline.pipeline_id!r}",
                to_stage=to_stage,
                stages=definition.stage_ids,
            )
        if to_stage == self.stage:
            raise InvalidTransition(f"the deal is already in stage {to_stage!r}", to_stage=to_stage)
        current = self._current_index(definition)
        target = definition.index(to_stage)
        criteria: list[dict[str, Any]] = []
        if target > current:
            self._require_qualified(f"move to {to_stage!r}")
            # Leaving forward: the current stage and every stage skipped must be satisfied.
            criteria = self._require_criteria(
                definition, definition.stage_ids[current:target], f"move to {to_stage!r}"
            )
        self._trigger(
            "stage_changed",
            meta,
            pipeline.version,
            from_stage=self.stage,
            to_stage=to_stage,
            direction="forward" if target > current else "backward",
            criteria=criteria,
        )

    def win(self, meta: EventMeta, pipeline: PipelineRef, *, amount: Decimal | None = None) -> None:
        self._require_open("won")
        check_amount(amount)
        definition = pipeline.definition
        self._require_qualified("win the deal")
        current = self._current_index(definition)
        criteria = self._require_criteria(
            definition, definition.stage_ids[current:], "win the deal"
        )
        self._trigger(
            "won", meta, pipeline.version, from_stage=self.stage, amount=amount, criteria=criteria
        )

    def lose(self, meta: EventMeta, pipeline_version: int | None, *, reason: str) -> None:
        self._require_open("lost")
        if not reason or not reason.strip():
            raise ValidationFailed("a lost deal needs a reason", field="reason")
        self._trigger("lost", meta, pipeline_version, from_stage=self.stage, reason=reason)

    def reopen(self, meta: EventMeta, pipeline: PipelineRef, *, to_stage: str) -> None:
        if not self.is_closed:
            raise InvalidTransition("only a won or lost deal can be reopened", status=self.status)
        if not pipeline.definition.has_stage(to_stage):
            raise InvalidTransition(
                f"stage {to_stage!r} is not in pipeline {pipeline.pipeline_id!r}",
                to_stage=to_stage,
                stages=pipeline.definition.stage_ids,
            )
        self._trigger(
            "reopened", meta, pipeline.version, from_status=self.status, to_stage=to_stage
        )

    # -- automation commands (dealflow's own workflows) ---------------------------------------
    def enroll_nurture(
        self,
        meta: EventMeta,
        pipeline_version: int | None,
        *,
        sequence_id: str,
        sequence_version: int,
    ) -> None:
        self._require_open("nurture_enrolled")
        if sequence_id in self.nurture:
            raise InvalidTransition(
                f"the deal is already enrolled in {sequence_id!r}", sequence_id=sequence_id
            )
        self._trigger(
            "nurture_enrolled",
            meta,
            pipeline_version,
            sequence_id=sequence_id,
            sequence_version=sequence_version,
        )

    def record_touch(
        self,
        meta: EventMeta,
        pipeline_version: int | None,
        *,
        sequence_id: str,
        step: int,
        channel: str,
        to: str | None,
        subject: str | None,
    ) -> None:
        self._require_open("nurture_touch_sent")
        self._trigger(
            "nurture_touch_sent",
            meta,
            pipeline_version,
            sequence_id=sequence_id,
            step=step,
            channel=channel,
            to=to,
            subject=subject,
        )

    def stop_nurture(
        self, meta: EventMeta, pipeline_version: int | None, *, sequence_id: str, reason: str
    ) -> None:
        if sequence_id not in self.nurture:
            raise InvalidTransition(
                f"the deal is not enrolled in {sequence_id!r}", sequence_id=sequence_id
            )
        self._trigger(
            "nurture_stopped", meta, pipeline_version, sequence_id=sequence_id, reason=reason
        )

    def escalate(
        self,
        meta: EventMeta,
        pipeline_version: int | None,
        *,
        stage: str,
        level: str,
        to: str | None,
    ) -> None:
        self._require_open("escalated")
        self._require_stage(stage)
        if level in self.escalations:
            raise InvalidTransition(f"already escalated to {level} in this stay", level=level)
        self._trigger("escalated", meta, pipeline_version, stage=stage, level=level, to=to)

    def flag_stale(self, meta: EventMeta, pipeline_version: int | None, *, stage: str) -> None:
        self._require_open("flagged_stale")
        self._require_stage(stage)
        if self.flagged_stale:
            raise InvalidTransition("the deal is already flagged stale in this stay")
        self._trigger("flagged_stale", meta, pipeline_version, stage=stage)

    # -- rule helpers ---------------------------------------------------------------------------
    def _verdict_after(
        self, definition: PipelineDefinition | None, changes: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The qualification verdict the deal would have with ``changes`` applied (judged on a
        copy, so a rejected update leaves the deal as it was)."""
        if definition is None or (not definition.qualification and self.qualification is None):
            return None
        probe = DealState(self.id)
        probe.__dict__.update(self.__dict__)
        probe.attributes = dict(self.attributes)
        apply_changes(probe, json_ready(changes))
        verdict = qualification_verdict(definition, probe)
        # A pipeline that dropped its rule qualifies a deal it once refused.
        return verdict or {"qualified": True, "unmet": []}

    def _require_qualified(self, action: str) -> None:
        if self.unqualified:
            unmet = list((self.qualification or {}).get("unmet") or [])
            names = ", ".join(f"{QUALIFICATION}.{u}" for u in unmet)
            raise ExitCriteriaUnmet(
                f"cannot {action}: the deal is unqualified: {names}",
                unmet=[{"rule": QUALIFICATION, "criterion": u} for u in unmet],
            )

    def _require_open(self, event_type: str) -> None:
        if self.is_closed and event_type not in ALLOWED_WHEN_CLOSED:
            raise DealClosed(
                f"the deal is {self.status}; only 'reopened' is accepted on a closed deal",
                status=self.status,
            )

    def _require_stage(self, stage: str) -> None:
        if stage != self.stage:
            raise InvalidTransition(f"the deal is no longer in stage {stage!r}", stage=self.stage)

    def _current_index(self, definition: PipelineDefinition) -> int:
        if not definition.has_stage(self.stage):
            # The definition dropped the stage the deal sits in: it can only be moved explicitly,
            # and counts as before every stage so that no criterion of the new definition is skipped.
            return 0
        return definition.index(self.stage)

    def _require_criteria(
        self, definition: PipelineDefinition, stage_ids: list[str], action: str
    ) -> list[dict[str, Any]]:
        results = evaluate_criteria(definition, stage_ids, self)
        unmet = [
            {"stage": r["stage"], "criterion": r["criterion"]} for r in results if not r["held"]
        ]
        if unmet:
            names = ", ".join(f"{u['stage']}.{u['criterion']}" for u in unmet)
            raise ExitCriteriaUnmet(f"cannot {action}: exit criteria not met: {names}", unmet=unmet)
        return results
