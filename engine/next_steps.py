"""A deal's next best steps (issue 12): what stands between the deal and its next stage, how
long it may still stay, and the nurture touch coming next.

Computed when the deal state is read, from the state and the definitions, never stored: the
steps follow the rules in force and the moment asked (``as_of`` included).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from engine.domain.deal_rules import QUALIFICATION
from engine.domain.deal_state import DealState
from engine.domain.events import iso
from engine.domain.pipeline import PipelineDefinition, criterion_holds

# (sequence id, version) -> the sequence's steps as stored ({"after_days", "channel", ...}).
StepsLookup = Callable[[str, int], list[dict[str, Any]]]
DAY = timedelta(days=1)


def next_steps(
    deal: DealState,
    definition: PipelineDefinition,
    at: datetime,
    steps_of: StepsLookup | None = None,
) -> list[dict[str, Any]]:
    """In order: the failing qualification criteria, the unmet exit criteria of the current
    stage (definition order), the days left before the stage's limit, the next nurture touch."""
    if deal.is_closed:
        return []
    found: list[dict[str, Any]] = []
    if deal.unqualified:
        for criterion in (deal.qualification or {}).get("unmet") or []:
            found.append({"kind": "qualification", "rule": QUALIFICATION, "criterion": criterion})
    stage = definition.stage(deal.stage) if definition.has_stage(deal.stage) else None
    if stage is not None:
        for criterion in stage.exit_criteria:
            if not criterion_holds(criterion, deal):
                found.append(
                    {
                        "kind": "exit_criterion",
                        "stage": stage.id,
                        "criterion": criterion.id,
                        "criterion_kind": criterion.kind,
                        "description": criterion.description,
                    }
                )
        if stage.max_days_in_stage is not None and deal.stage_entered_at is not None:
            deadline = deal.stage_entered_at + timedelta(days=stage.max_days_in_stage)
            found.append(
                {
                    "kind": "stage_limit",
                    "stage": stage.id,
                    "days_left": round((deadline - at) / DAY, 6),
                    "limit_at": iso(deadline),
                }
            )
    touch = _next_touch(deal, steps_of)
    if touch is not None:
        found.append(touch)
    return found


def _next_touch(deal: DealState, steps_of: StepsLookup | None) -> dict[str, Any] | None:
    """The earliest next touch over the sequences the deal is enrolled in (before any send
    window moves it)."""
    if steps_of is None:
        return None
    best: dict[str, Any] | None = None
    for sequence_id, version in sorted(deal.nurture.items()):
        progress = deal.nurture_progress.get(sequence_id)
        if progress is None:
            continue
        try:
            steps = steps_of(sequence_id, version)
        except LookupError:
            continue
        index = int(progress["step"])
        if index >= len(steps):
            continue
        step = steps[index]
        due = datetime.fromisoformat(progress["since"]) + timedelta(
            days=float(step.get("after_days", 0))
        )
        candidate = {
            "kind": "nurture_touch",
            "sequence_id": sequence_id,
            "step": index,
            "channel": step.get("channel"),
            "subject": step.get("subject"),
            "due_at": iso(due),
        }
        if best is None or candidate["due_at"] < best["due_at"]:
            best = candidate
    return best


def sequence_steps(app: Any) -> StepsLookup:
    """A lookup of sequence steps from an application's stored definitions. A stored version
    never changes, so each is read once per lookup (a board's cards share a few sequences)."""

    @cache
    def steps_of(sequence_id: str, version: int) -> list[dict[str, Any]]:
        try:
            _, body = app.get_definition("sequence", sequence_id, version)
        except Exception as error:  # noqa: BLE001 - a missing definition means no known next touch
            raise LookupError(sequence_id) from error
        return list(body.get("steps") or [])

    return steps_of
