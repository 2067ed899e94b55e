"""Deterministic ids: the same fact always gets the same workflow id, event id and message id,
so a redelivered event or a retried activity finds the earlier effect instead of repeating it."""

from __future__ import annotations


def nurture_workflow_id(deal_id: str, sequence_id: str, enrolled_version: int) -> str:
    """One workflow per enrollment: the deal version of its ``nurture_enrolled`` event names it."""
    return f"nurture:{deal_id}:{sequence_id}:{enrolled_version}"


def escalation_workflow_id(deal_id: str, stage_entries: int) -> str:
    """The per-stay ``StaleDealEscalation`` of earlier releases: one per deal and stage entry
    (``Deal.stage_entries`` names the stay). The bridge no longer starts these; it still cancels
    and signals them, for those started before the upgrade."""
    return f"escalation:{deal_id}:{stage_entries}"


# How many log positions share one EscalationWindow: it bounds the stays one workflow holds
# (its state, its continue-as-new input and its signals stay small) whatever the burst.
ESCALATION_WINDOW_POSITIONS = 250


def escalation_window_id(position: int) -> str:
    """The ``EscalationWindow`` that watches the stays entered by the log positions around
    ``position`` (the position of the ``opened``/``stage_changed``/``reopened`` event): a
    redelivered event always goes to the same workflow."""
    first = position - position % ESCALATION_WINDOW_POSITIONS
    return f"escalations:{first}-{first + ESCALATION_WINDOW_POSITIONS - 1}"


def escalation_task_queue(task_queue: str) -> str:
    """The task queue of the escalation windows, beside the automation's own: a burst of nurture
    workflow tasks must not queue in front of the few tasks that keep escalations on time."""
    return f"{task_queue}-escalations"


def stay_key(deal_id: str, stage_entries: int) -> str:
    return f"{deal_id}:{stage_entries}"


def auto_enroll_event_id(sequence_id: str, deal_id: str, stage_entries: int) -> str:
    return f"auto-enroll:{sequence_id}:{deal_id}:{stage_entries}"


def touch_id(workflow_id: str, step: int) -> str:
    """Event id of a ``nurture_touch_sent`` and id of its outbox message."""
    return f"touch:{workflow_id}:{step}"


def stop_event_id(workflow_id: str) -> str:
    return f"nurture-stop:{workflow_id}"


def escalation_event_id(deal_id: str, stage_entries: int, level: str) -> str:
    """Event id of an ``escalated``/``flagged_stale`` and id of its outbox message."""
    return f"escalation:{deal_id}:{stage_entries}:{level}"
