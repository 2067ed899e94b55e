"""The replayed timeline, and pipeline definition changes seen through it (issue 5 item 5)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from dealflow.bench.audit_sample import deal_commands
from engine.application import DealflowApp
from engine.audit.render import render_timeline
from engine.audit.timeline import deal_timeline
from engine.domain.defaults import DEFAULT_PIPELINE
from engine.domain.errors import ExitCriteriaUnmet, NotFound
from engine.domain.pipeline import PipelineDefinition
from tests.helpers import send


def test_timeline_has_each_event_its_state_and_criteria(app: DealflowApp) -> None:
    app.ingest(deal_commands("t", 0))
    timeline = deal_timeline(app, "t-0")
    assert timeline["deal_id"] == "t-0" and timeline["pipeline_id"] == "default"
    assert timeline["chain"]["ok"] is True
    events = timeline["events"]
    assert [e["version"] for e in events] == list(range(1, 18))
    assert events[0]["state"]["stage"] == "prospecting"
    assert events[1]["state"]["facts"] == {"contact_made": True}
    move = events[2]
    assert move["type"] == "stage_changed"
    assert move["stage_change"] == {
        "from": "prospecting",
        "to": "qualification",
        "direction": "forward",
    }
    assert move["criteria"] == [{"stage": "prospecting", "criterion": "contact_made", "held": True}]
    assert move["state"]["stage"] == "qualification"
    won = events[-1]
    assert won["type"] == "won" and won["state"]["status"] == "won"
    assert {c["stage"] for c in won["criteria"]} == {"contract"}
    assert events[3]["criteria"] is None and events[3]["stage_change"] is None
    assert timeline["pipeline_versions"]["1"]["stages"][0]["exit_criteria"] == [
        {"id": "contact_made", "kind": "fact"}
    ]
    # The same data as history, plus the replayed parts.
    for item, historic in zip(events, app.history("t-0")["events"], strict=True):
        assert {k: item[k] for k in historic} == historic


def test_timeline_renders(app: DealflowApp) -> None:
    app.ingest(deal_commands("t", 2))  # lost
    out = io.StringIO()
    render_timeline(deal_timeline(app, "t-2"), Console(file=out, width=140))
    text = out.getvalue()
    assert "hash chain intact" in text
    assert "prospecting → qualification" in text
    assert "contact_made" in text and "✓ held" in text
    assert "lost from meeting: no budget" in text


def test_timeline_of_unknown_deal(app: DealflowApp) -> None:
    with pytest.raises(NotFound):
        deal_timeline(app, "nobody")


def _with_criterion(
    stage: str, criterion: dict | None = None, drop: str | None = None
) -> PipelineDefinition:  # type: ignore[type-arg]
    body = {**DEFAULT_PIPELINE, "stages": [dict(s) for s in DEFAULT_PIPELINE["stages"]]}
    for item in body["stages"]:
        if item["id"] == stage:
            criteria = [c for c in item["exit_criteria"] if c["id"] != drop]
            item["exit_criteria"] = [*criteria, criterion] if criterion else criteria
    return PipelineDefinition.model_validate(body)


def test_definition_change_keeps_old_history_and_judges_open_deals_by_the_new_version(
    app: DealflowApp,
) -> None:
    """Old deals keep showing the version and criteria they were judged by; open deals meet the
    new definition from the moment it applies, and the timeline shows where that happened."""
    day = "2017-03-0{}T10:00:00Z"
    app.pipeline_ref("default")
    # Deal `old` leaves prospecting under v1 (one criterion: contact_made).
    send(
        app,
        "old",
        {"type": "opened", "pipeline_id": "default", "name": "Old", "occurred_at": day.format(1)},
    )
    send(
        app,
        "old",
        {
            "type": "fact_recorded",
            "fact": "contact_made",
            "value": True,
            "occurred_at": day.format(1),
        },
    )
    send(
        app,
        "old",
        {"type": "stage_changed", "to_stage": "qualification", "occurred_at": day.format(2)},
    )
    # Deal `open` sits in prospecting with contact made, but has not moved yet.
    send(
        app,
        "open",
        {"type": "opened", "pipeline_id": "default", "name": "Open", "occurred_at": day.format(1)},
    )
    send(
        app,
        "open",
        {
            "type": "fact_recorded",
            "fact": "contact_made",
            "value": True,
            "occurred_at": day.format(1),
        },
    )

    # v2: prospecting also needs `icp_fit`.
    v2 = app.put_pipeline(
        "default", _with_criterion("prospecting", {"id": "icp_fit", "kind": "fact"}), "admin"
    )
    assert v2 == 2
    refused = send(
        app,
        "open",
        {"type": "stage_changed", "to_stage": "qualification", "occurred_at": day.format(3)},
    )
    assert refused.status == "rejected" and isinstance(refused.error, ExitCriteriaUnmet)
    send(
        app,
        "open",
        {"type": "fact_recorded", "fact": "icp_fit", "value": True, "occurred_at": day.format(3)},
    )
    assert (
        send(
            app,
            "open",
            {"type": "stage_changed", "to_stage": "qualification", "occurred_at": day.format(4)},
        ).status
        == "recorded"
    )

    # v3: the criterion is removed again, and `need` is dropped from qualification.
    v3 = app.put_pipeline("default", _with_criterion("qualification", drop="need"), "admin")
    assert v3 == 3

    old = deal_timeline(app, "old")
    old_move = old["events"][2]
    assert old_move["pipeline_version"] == 1
    assert old_move["criteria"] == [
        {"stage": "prospecting", "criterion": "contact_made", "held": True}
    ]
    assert list(old["pipeline_versions"]) == ["1"]
    assert [c["id"] for c in old["pipeline_versions"]["1"]["stages"][0]["exit_criteria"]] == [
        "contact_made"
    ]
    assert app.history("old")["events"][2]["pipeline_version"] == 1
    assert all(e["pipeline_changed"] is None for e in old["events"])

    opened = deal_timeline(app, "open")
    versions = [e["pipeline_version"] for e in opened["events"]]
    assert versions == [1, 1, 2, 2]
    assert opened["events"][2]["pipeline_changed"] == {"from": 1, "to": 2}
    move = opened["events"][3]
    assert move["criteria"] == [
        {"stage": "prospecting", "criterion": "contact_made", "held": True},
        {"stage": "prospecting", "criterion": "icp_fit", "held": True},
    ]
    assert [c["id"] for c in opened["pipeline_versions"]["2"]["stages"][0]["exit_criteria"]] == [
        "contact_made",
        "icp_fit",
    ]

    # From v3 on, `open` leaves qualification without `need`; `old` still needs what v3 asks.
    for fact in ("budget", "authority", "timeline"):
        send(
            app,
            "open",
            {"type": "fact_recorded", "fact": fact, "value": True, "occurred_at": day.format(5)},
        )
    assert (
        send(
            app,
            "open",
            {"type": "stage_changed", "to_stage": "meeting", "occurred_at": day.format(6)},
        ).status
        == "recorded"
    )
    latest = deal_timeline(app, "open")["events"][-1]
    assert latest["pipeline_version"] == 3
    assert {c["criterion"] for c in latest["criteria"]} == {"budget", "authority", "timeline"}
    # Nothing recorded earlier changed: the v2 move still shows v2 and its criteria.
    again = deal_timeline(app, "open")["events"][3]
    assert (again["pipeline_version"], again["criteria"]) == (2, move["criteria"])
    assert deal_timeline(app, "old")["chain"]["ok"] and deal_timeline(app, "open")["chain"]["ok"]
