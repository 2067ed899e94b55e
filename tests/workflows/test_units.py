"""Pure pieces: send windows, templates, stop conditions from history, group commit."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from workflows.activities import enrollment_end
from workflows.batching import Batcher
from workflows.models import SendWindow, SequenceDefinition
from workflows.schedule import next_open_slot, render

WINDOW = SendWindow(timezone="Europe/Paris", weekdays=[1, 2, 3, 4, 5], start_hour=9, end_hour=17)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (
            "2024-03-06T10:00:00+00:00",
            "2024-03-06T10:00:00+00:00",
        ),  # Wednesday 11:00 in Paris: open
        ("2024-03-06T06:00:00+00:00", "2024-03-06T08:00:00+00:00"),  # 07:00 Paris: wait for 09:00
        ("2024-03-06T16:30:00+00:00", "2024-03-07T08:00:00+00:00"),  # 17:30 Paris: next morning
        ("2024-03-08T17:00:00+00:00", "2024-03-11T08:00:00+00:00"),  # Friday evening: Monday
        (
            "2024-03-30T12:00:00+00:00",
            "2024-04-01T07:00:00+00:00",
        ),  # over the DST change: 09:00 CEST
    ],
)
def test_send_window(moment: str, expected: str) -> None:
    assert next_open_slot(datetime.fromisoformat(moment), WINDOW) == datetime.fromisoformat(
        expected
    )


def test_no_window_and_full_day_window() -> None:
    moment = datetime(2024, 3, 9, 23, 30, tzinfo=UTC)
    assert next_open_slot(moment, None) == moment
    every_hour = SendWindow(timezone="UTC", weekdays=[6], start_hour=0, end_hour=24)
    assert next_open_slot(moment, every_hour) == moment


def test_render() -> None:
    fields = {"name": "Acme deal", "account": None, "attributes": {"plan": "gold"}}
    assert render("Hi {name} at {account}, {attributes.plan} {unknown} {{x}}", fields) == (
        "Hi Acme deal at , gold {unknown} {{x}}"
    )
    assert render(None, fields) == ""


def test_sequence_defaults_and_window_validation() -> None:
    sequence = SequenceDefinition.model_validate(
        {"name": "n", "steps": [{"after_days": 0.5, "channel": "call"}]}
    )
    assert sequence.stop_on == ["stage_changed", "won", "lost", "reply"] and sequence.enroll is None
    with pytest.raises(ValueError):
        SendWindow(timezone="UTC", start_hour=10, end_hour=9)


def _event(type_name: str, **fields: object) -> object:
    from engine.domain import deal

    cls = {
        "stage": deal.StageChanged,
        "won": deal.Won,
        "lost": deal.Lost,
        "activity": deal.ActivityLogged,
        "stopped": deal.NurtureStopped,
        "touch": deal.NurtureTouchSent,
    }[type_name]
    instance = cls.__new__(cls)
    object.__setattr__(instance, "__dict__", dict(fields))
    return instance


def test_enrollment_end_reads_the_history() -> None:
    everything = ["stage_changed", "won", "lost", "reply"]
    assert enrollment_end([], "s", everything) == (None, False)
    assert enrollment_end([_event("activity", activity="call")], "s", everything) == (None, False)
    assert enrollment_end([_event("activity", activity="reply")], "s", everything) == (
        "reply",
        False,
    )
    assert enrollment_end([_event("activity", activity="reply")], "s", ["won"]) == (None, False)
    assert enrollment_end([_event("stage")], "s", ["reply"]) == (None, False)
    assert enrollment_end([_event("won")], "s", ["reply"]) == (
        "won",
        False,
    )  # closed deals end every sequence
    assert enrollment_end(
        [_event("stopped", sequence_id="other", reason="completed")], "s", everything
    ) == (None, False)
    assert enrollment_end(
        [_event("stopped", sequence_id="s", reason="unenrolled"), _event("won")], "s", everything
    ) == ("unenrolled", True)


def test_batcher_groups_concurrent_submissions() -> None:
    batches: list[list[int]] = []
    gate = threading.Event()

    def flush(items: list[int]) -> list[int]:
        batches.append(items)
        gate.wait(1)
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(flush, max_items=50)
    results: dict[int, int] = {}

    def worker(i: int) -> None:
        results[i] = batcher.submit(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join()
    assert results == {i: i * 10 for i in range(20)}
    assert sum(len(b) for b in batches) == 20 and len(batches) < 20


def test_batcher_hands_errors_to_every_waiter() -> None:
    batcher: Batcher[int, int] = Batcher(
        lambda items: (_ for _ in ()).throw(RuntimeError("disk full"))
    )
    with pytest.raises(RuntimeError, match="disk full"):
        batcher.submit(1)
