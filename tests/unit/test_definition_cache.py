"""Definition versions are rebuilt from the log once per process (a single event over HTTP
rebuilt its pipeline twice, a third of the request's CPU), while the current version is still
asked of the log every time: a change made by another process is seen at once. Both stores."""

from __future__ import annotations

from typing import Any

import pytest

from engine.application import DealflowApp
from engine.domain.definitions import PIPELINE
from engine.persistence.settings import StoreSettings

BODY: dict[str, Any] = {
    "name": "Cached",
    "stages": [
        {"id": "lead", "name": "Lead", "probability": 0.2},
        {"id": "won", "name": "Won", "probability": 0.9},
    ],
}


def _rebuilds(app: DealflowApp, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every definition version decoded from the log, recorded."""
    calls: list[Any] = []
    decode = app.mapper.to_domain_event

    def counting(stored: Any) -> Any:
        calls.append(stored.originator_version)
        return decode(stored)

    monkeypatch.setattr(app.mapper, "to_domain_event", counting)
    return calls


def test_each_version_is_rebuilt_once_and_the_current_one_is_always_fresh(
    app: DealflowApp, store_settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert app.put_definition(PIPELINE, "cached", BODY, "test") == 1
    rebuilds = _rebuilds(app, monkeypatch)
    first = app.pipeline_ref("cached")
    again = app.pipeline_ref("cached")
    pinned = app.pipeline_ref("cached", 1)
    assert first.version == again.version == pinned.version == 1
    assert first.definition is again.definition is pinned.definition
    assert len(rebuilds) == 1

    # Another process (another application on the same store) applies version 2: the next
    # read sees it, without waiting for anything.
    other = DealflowApp(store_settings)
    try:
        changed = {**BODY, "name": "Cached, renamed"}
        assert other.put_definition(PIPELINE, "cached", changed, "test") == 2
    finally:
        other.close()
    current = app.pipeline_ref("cached")
    assert (current.version, current.definition.name) == (2, "Cached, renamed")
    assert app.pipeline_ref("cached", 1).definition.name == "Cached"
    assert len(rebuilds) == 2  # version 2 once; version 1 still from the cache


def test_a_caller_changing_its_copy_changes_nothing_kept(app: DealflowApp) -> None:
    app.put_definition(PIPELINE, "kept", BODY, "test")
    version, body = app.get_definition(PIPELINE, "kept")
    body["name"] = "scribbled"
    body["stages"].clear()
    assert app.get_definition(PIPELINE, "kept") == (version, BODY)
    assert app.pipeline_ref("kept").definition.name == "Cached"
