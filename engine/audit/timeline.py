"""A deal's replayed timeline: each event, the state after it, and the criteria behind each move.

One function, :func:`deal_timeline`, serves both `dealflow audit replay` (rendered by
:mod:`engine.audit.render`) and `GET /v1/deals/{deal_id}/timeline` (as JSON, for the
dashboard's deal page). The state after each event is judged under the pipeline version that
event was recorded with, so a later definition change never rewrites what an auditor sees.
"""

from __future__ import annotations

from typing import Any

from engine.application import DealflowApp, deal_view, history_item
from engine.audit.verify import verify
from engine.domain.deal import Deal, DealEvent
from engine.domain.errors import NotFound
from engine.domain.pipeline import PipelineDefinition


def deal_timeline(app: DealflowApp, deal_id: str, *, check_chain: bool = True) -> dict[str, Any]:
    events = app.deal_events(deal_id)
    pipelines: dict[int, dict[str, Any]] = {}
    definitions: dict[int, PipelineDefinition] = {}
    deal: Deal | None = None
    replay_error: str | None = None
    items: list[dict[str, Any]] = []
    previous_version: int | None = None
    pipeline_id = getattr(events[0], "pipeline_id", None)

    for event in events:
        item = history_item(event)
        if replay_error is None:
            try:
                deal = event.mutate(deal)
            except (ValueError, AssertionError) as error:
                # A damaged history (see "chain") cannot be replayed past the damage.
                replay_error = f"replay stopped at version {event.originator_version}: {error}"
        state = None
        if deal is not None and replay_error is None:
            pipeline_id = deal.pipeline_id
            definition = _definition(app, deal, pipelines, definitions)
            state = deal_view(deal, definition, event.occurred_at) if definition else None
        item["summary"] = summarize(event)
        item["stage_change"] = _stage_change(event)
        item["criteria"] = _criteria(event)
        item["pipeline_changed"] = (
            {"from": previous_version, "to": event.pipeline_version}
            if previous_version is not None
            and event.pipeline_version not in (None, previous_version)
            else None
        )
        if event.pipeline_version is not None:
            previous_version = event.pipeline_version
        item["state"] = state
        items.append(item)

    timeline: dict[str, Any] = {
        "deal_id": deal_id,
        "pipeline_id": pipeline_id,
        "version": events[-1].originator_version,
        "events": items,
        "pipeline_versions": {str(v): body for v, body in sorted(pipelines.items())},
        "replay_error": replay_error,
    }
    if check_chain:
        report = verify(app, deal_id)
        timeline["chain"] = {
            "ok": report.ok,
            "break_count": report.breaks.total,
            "breaks": [b.to_dict() for b in report.breaks.breaks],
        }
    return timeline


def _definition(
    app: DealflowApp,
    deal: Deal,
    pipelines: dict[int, dict[str, Any]],
    definitions: dict[int, PipelineDefinition],
) -> PipelineDefinition | None:
    version = deal.pipeline_version
    if version is None:
        return None
    if version not in definitions:
        try:
            ref = app.pipeline_ref(deal.pipeline_id, version)
        except NotFound:
            return None
        definitions[version] = ref.definition
        applied = {h["version"]: h for h in app.definition_history("pipeline", deal.pipeline_id)}
        pipelines[version] = {
            "version": version,
            "applied_at": applied.get(version, {}).get("applied_at"),
            "stages": [
                {
                    "id": stage.id,
                    "name": stage.name,
                    "exit_criteria": [
                        c.model_dump(mode="json", exclude_none=True) for c in stage.exit_criteria
                    ],
                }
                for stage in ref.definition.stages
            ],
        }
    return definitions[version]


def _stage_change(event: DealEvent) -> dict[str, Any] | None:
    data = event.data()
    if event.TYPE == "stage_changed":
        return {"from": data["from_stage"], "to": data["to_stage"], "direction": data["direction"]}
    if event.TYPE == "opened":
        return {"from": None, "to": data["stage"], "direction": "opened"}
    if event.TYPE == "reopened":
        return {"from": data["from_status"], "to": data["to_stage"], "direction": "reopened"}
    if event.TYPE in ("won", "lost"):
        return {"from": data["from_stage"], "to": event.TYPE, "direction": "closed"}
    return None


def _criteria(event: DealEvent) -> list[dict[str, Any]] | None:
    if event.TYPE not in ("stage_changed", "won"):
        return None
    return [dict(c) for c in event.data().get("criteria", [])]


def summarize(event: DealEvent) -> str:
    """One line a person reads: what happened."""
    data = event.data()
    kind = event.TYPE
    if kind == "opened":
        return f"opened {data['name']!r} in {data['stage']}"
    if kind == "fact_recorded":
        return f"fact {data['fact']} = {str(data['value']).lower()}"
    if kind == "updated":
        return "updated " + ", ".join(f"{k} → {v}" for k, v in data["changes"].items())
    if kind == "activity_logged":
        return f"activity {data['activity']}" + (
            f": {data['summary']}" if data.get("summary") else ""
        )
    if kind == "stage_changed":
        return f"{data['from_stage']} → {data['to_stage']} ({data['direction']})"
    if kind == "won":
        return f"won from {data['from_stage']}" + (
            f" at {data['amount']}" if data.get("amount") else ""
        )
    if kind == "lost":
        return f"lost from {data['from_stage']}: {data['reason']}"
    if kind == "reopened":
        return f"reopened ({data['from_status']}) into {data['to_stage']}"
    if kind == "nurture_enrolled":
        return f"enrolled in {data['sequence_id']} v{data['sequence_version']}"
    if kind == "nurture_touch_sent":
        return f"{data['sequence_id']} step {data['step']} via {data['channel']}" + (
            f" to {data['to']}" if data.get("to") else ""
        )
    if kind == "nurture_stopped":
        return f"{data['sequence_id']} stopped: {data['reason']}"
    if kind == "escalated":
        return f"escalated to {data['level']} in {data['stage']}" + (
            f" ({data['to']})" if data.get("to") else ""
        )
    if kind == "flagged_stale":
        return f"flagged stale in {data['stage']}"
    return kind
