"""The application's tables: which Deal method handles each command, which HTTP status each
domain error answers with, and the one builder of automation commands."""

from __future__ import annotations

import inspect
import typing
from typing import Any

import pytest
from pydantic import BaseModel

import engine.domain.errors as errors
from engine.api.errors import STATUS, http_status
from engine.application import AUTOMATION_MODELS, DealflowApp, automation_command
from engine.application.handlers import DEAL_METHODS
from engine.commands import OpenedIn
from engine.domain.deal import AUTOMATION_TYPES, EVENT_TYPES
from engine.domain.errors import DomainError, ValidationFailed
from tests.helpers import send

OPEN = {"type": "opened", "pipeline_id": "default", "name": "Acme", "occurred_at": "2024-01-01"}


def _type_of(model: type[BaseModel]) -> str:
    automation = getattr(model, "TYPE", None)
    if isinstance(automation, str):
        return automation
    (literal,) = typing.get_args(model.model_fields["type"].annotation)
    return str(literal)


def test_every_event_type_has_exactly_one_handler() -> None:
    handled = [_type_of(model) for model in DEAL_METHODS] + [_type_of(OpenedIn)]
    assert sorted(handled) == sorted(EVENT_TYPES)
    assert set(AUTOMATION_MODELS) == AUTOMATION_TYPES


def test_every_domain_error_has_its_http_status_in_one_table() -> None:
    classes = [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, DomainError)
    ]
    assert set(classes) == set(STATUS)
    assert not any("status" in vars(cls) for cls in classes), "the domain knows no HTTP"
    assert http_status(errors.DealExists("x")) == 409
    assert http_status(errors.NotFound("x")) == 404
    assert http_status(ValidationFailed("x")) == 422

    class Unlisted(errors.VersionConflict):
        pass

    assert http_status(Unlisted("x", current_version=1)) == 409  # nearest listed class


@pytest.mark.parametrize(
    ("type_", "data"),
    [
        ("nurture_enrolled", {"sequence_id": "s"}),
        ("nurture_touch_sent", {"sequence_id": "s", "step": "first", "channel": "email"}),
        ("escalated", {"stage": "prospecting", "level": "owner", "surprise": 1}),
        ("no_such_type", {}),
    ],
)
def test_malformed_automation_data_is_refused_when_built(type_: str, data: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed):
        automation_command("d1", type_, data, event_id="e", actor="dealflow:test")


def test_malformed_automation_data_records_nothing(app: DealflowApp) -> None:
    send(app, "d1", OPEN)
    outcome = app.record_automation("d1", "escalated", {"stage": "prospecting"}, event_id="a-1")
    assert outcome.status == "rejected" and outcome.error is not None
    assert outcome.error.code == "validation_error"
    assert app.deal("d1").version == 1


def test_an_automation_step_run_again_is_a_duplicate(app: DealflowApp) -> None:
    """Whichever path records it (one at a time or group-committed), the same step is the same
    command: the second is a duplicate, not a second event or a reused key."""
    send(app, "d1", OPEN)
    data = {"stage": "prospecting", "level": "owner", "to": "ann@example.test"}
    first = app.record_automation("d1", "escalated", data, event_id="esc-1", actor="dealflow:x")
    built = automation_command("d1", "escalated", dict(data), event_id="esc-1", actor="other")
    again = app.ingest([built], allow_automation=True)[0]
    assert (first.status, first.version) == ("recorded", 2)
    assert (again.status, again.version) == ("duplicate", 2)
    assert app.deal("d1").escalations == ["owner"]
