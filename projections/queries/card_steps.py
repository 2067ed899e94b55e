"""The first next best step of each deal on a board page (issue 12, item 3).

Next steps depend on facts and activities the read models do not keep, so the cards' deals are
loaded from the store (as of the board's moment when it is historical), all of a board's cards
in one query: a board holds a few dozen deals per column.
"""

from __future__ import annotations

from typing import Any

from engine.domain.pipeline import PipelineDefinition
from engine.next_steps import next_steps, sequence_steps
from engine.scoring.bulk import load_deals
from projections.queries.common import Moment
from projections.readmodel.records import from_us


def describe(step: dict[str, Any]) -> str:
    """One line a person reads on a card."""
    kind = step["kind"]
    if kind == "qualification":
        return f"qualify: {step['criterion']}"
    if kind == "exit_criterion":
        return step.get("description") or f"meet {step['criterion']}"
    if kind == "stage_limit":
        days = step["days_left"]
        return f"{days:.1f} d left in stage" if days >= 0 else f"{-days:.1f} d over stage limit"
    return f"nurture: {step.get('subject') or step.get('channel')} due {step['due_at'][:10]}"


def add_first_steps(
    app: Any, definition: PipelineDefinition, moment: Moment, items: list[dict[str, Any]]
) -> None:
    """Set ``next_step`` (the first step with its ``text``, or null) on each board item.

    Call it outside a :func:`~projections.queries.common.snapshot`: it reads the event store,
    which takes a pooled connection of its own."""
    steps_of = sequence_steps(app)
    at = from_us(moment.at)
    deals = load_deals(app, [item["deal_id"] for item in items], at if moment.historical else None)
    for item in items:
        deal = deals.get(item["deal_id"])
        steps = [] if deal is None else next_steps(deal, definition, at, steps_of)
        item["next_step"] = {**steps[0], "text": describe(steps[0])} if steps else None
