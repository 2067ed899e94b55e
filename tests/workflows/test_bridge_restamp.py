"""An enrolment decided by the bridge while a client keeps writing to the deal.

Found by the crash run (dealflow bench chaos): the bridge stamps an enrolment with the time it
decided; a client event recorded on the deal between that decision and the write has a later
business time, the enrolment was refused ("time never runs backwards") and silently dropped,
and the bridge moved on: the deal was never nurtured.
"""

from __future__ import annotations

from datetime import timedelta

from engine.application import DealflowApp, automation_command
from engine.domain.events import utcnow
from tests.helpers import send
from workflows.bridge import Bridge


def test_an_overtaken_enrolment_is_stamped_again_not_lost(app: DealflowApp) -> None:
    assert send(app, "d1", {"type": "opened", "pipeline_id": "default", "name": "D"}).status == (
        "recorded"
    )
    assert send(app, "d1", {"type": "activity_logged", "activity": "call"}).status == "recorded"
    decided_at = utcnow() - timedelta(seconds=5)  # before the client's latest event
    data = {"sequence_id": "welcome", "sequence_version": 1}
    enrolment = automation_command(
        "d1",
        "nurture_enrolled",
        data,
        event_id="auto-enroll:welcome:d1:1",
        actor="dealflow:enrollment",
        occurred_at=decided_at,
    )
    # As it was: refused, and nothing else would ever try again.
    assert app.ingest([enrolment], allow_automation=True)[0].status == "rejected"
    Bridge(app, None, "unused")._record([enrolment])  # type: ignore[arg-type]
    types = [e["type"] for e in app.history("d1")["events"]]
    assert types == ["opened", "activity_logged", "nurture_enrolled"]
    enrolled = app.history("d1")["events"][-1]
    assert enrolled["occurred_at"] >= app.history("d1")["events"][1]["occurred_at"]
