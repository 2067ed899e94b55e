"""The collector's pause around large batches (engine.collector.paused_for): off while any large
batch runs, back on after the last one, left alone for small batches and when it was off."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from engine import collector
from engine.collector import PAUSE_FROM, paused_for


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_a_large_batch_runs_with_the_collector_off_and_turns_it_back_on() -> None:
    with paused_for(PAUSE_FROM):
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_small_batch_leaves_the_collector_on() -> None:
    with paused_for(PAUSE_FROM - 1):
        assert gc.isenabled()


def test_the_collector_stays_off_until_the_last_overlapping_batch_ends() -> None:
    first_in = threading.Event()
    second_done = threading.Event()
    seen: list[bool] = []

    def second() -> None:
        first_in.wait()
        with paused_for(PAUSE_FROM):
            seen.append(gc.isenabled())
        seen.append(gc.isenabled())  # the first batch still runs
        second_done.set()

    thread = threading.Thread(target=second)
    thread.start()
    with paused_for(PAUSE_FROM):
        first_in.set()
        second_done.wait(5)
    thread.join(5)
    assert seen == [False, False]
    assert gc.isenabled()


def test_a_collector_turned_off_by_someone_else_stays_off() -> None:
    gc.disable()
    with paused_for(PAUSE_FROM):
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_the_collector_is_back_on_when_the_batch_fails() -> None:
    with pytest.raises(RuntimeError), paused_for(PAUSE_FROM):
        raise RuntimeError("the batch failed")
    assert gc.isenabled()


def test_overlapping_batches_collect_the_young_generations_after_the_longest_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collected: list[int] = []
    monkeypatch.setattr(collector, "LONGEST_PAUSE", 0.0)
    monkeypatch.setattr(collector.gc, "collect", lambda generation=2: collected.append(generation))
    with paused_for(PAUSE_FROM), paused_for(PAUSE_FROM):
        pass
    assert collected == [1]
