"""The bridge: exactly-once effects over redelivery, resuming after a restart, both backends."""

from __future__ import annotations

import pytest

from engine.persistence.settings import StoreSettings
from tests.workflows.conftest import (
    TICK_DAYS,
    Stack,
    pipeline_body,
    sequence_body,
    stack_services,
    wait_for,
)
from workflows.bridge import Bridge
from workflows.bridge_state import TRACKING, workflow_status

pytestmark = pytest.mark.temporal


def _bridge(stack: Stack) -> Bridge:
    return Bridge(stack.app, stack.client, stack.task_queue, **stack.bridge_options)


def _open(stack: Stack, deal_id: str) -> None:
    stack.send(
        deal_id,
        {"type": "opened", "pipeline_id": "test", "name": deal_id, "stage": "qualification"},
    )


async def test_redelivery_changes_nothing(stack: Stack) -> None:
    stack.put_pipeline("test", pipeline_body(max_days=50 * TICK_DAYS))
    stack.put_sequence("welcome", sequence_body([0, 50 * TICK_DAYS]))
    await stack.start(run_bridge=False)  # the worker only; bridges run by hand below
    for n in range(3):
        _open(stack, f"d{n}")
    first = _bridge(stack)
    await first.start()
    await first.catch_up()
    await first.catch_up()  # the enrollments the first pass recorded
    # Three nurture workflows started, three stays handed to their escalation window.
    assert (first.stats.started, first.stats.stays, first.stats.enrollments) == (3, 3, 3)
    await wait_for(lambda: all("nurture_touch_sent" in stack.types(f"d{n}") for n in range(3)))
    before = {f"d{n}": stack.types(f"d{n}") for n in range(3)}

    # Forget the position: every event is delivered again, to a fresh bridge.
    stack.app.db.execute_script([f"UPDATE {TRACKING} SET position = 0"])
    again = _bridge(stack)
    await again.start()
    await again.catch_up()
    assert again.stats.started == 0 and again.stats.enrollments == 0
    assert again.stats.already_started == 3
    # The stays are handed over again; the running window already holds them, once each.
    assert again.stats.stays == 3
    window = stack.client.get_workflow_handle(stack.escalation_window("d0", 1))
    pending = await window.query("pending")
    assert sorted(pending) == [f"d{n}:1" for n in range(3)]
    assert {f"d{n}": stack.types(f"d{n}") for n in range(3)} == before
    assert len(stack.services.automation.outbox.list()) == 3


async def test_bridge_resumes_where_it_stopped(stack: Stack) -> None:
    stack.put_pipeline("test", pipeline_body())
    stack.put_sequence("welcome", sequence_body([0]))
    await stack.start(run_bridge=False)
    first = _bridge(stack)
    await first.start()
    _open(stack, "early")
    await first.catch_up()
    stopped_at = first.position
    # While no bridge runs, events keep arriving.
    _open(stack, "late")
    stack.send("early", {"type": "stage_changed", "to_stage": "proposal"})
    second = _bridge(stack)
    await second.start()
    assert second.position == stopped_at
    await second.catch_up()
    assert second.stats.events >= 3 and second.stats.started >= 1
    await wait_for(lambda: "nurture_stopped" in stack.types("late"))
    assert [t for t, _ in stack.automation("late")] == [
        "nurture_enrolled",
        "nurture_touch_sent",
        "nurture_stopped",
    ]


async def test_stage_entry_before_a_sequence_existed_does_not_enroll(stack: Stack) -> None:
    stack.put_pipeline("test", pipeline_body())
    await stack.start()
    _open(stack, "before")
    await wait_for(lambda: stack.extra[0].bridge.position >= stack.app.max_position())
    stack.put_sequence("welcome", sequence_body([0]))
    _open(stack, "after")
    await wait_for(lambda: "nurture_stopped" in stack.types("after"))
    assert "nurture_enrolled" not in stack.types("before")


async def test_bridge_on_postgres(stack: Stack, pg_url: str, tmp_path: object) -> None:
    services = stack_services(StoreSettings(database_url=pg_url, home=stack.home))
    try:
        pg = Stack(
            services=services,
            client=stack.client,
            task_queue=stack.task_queue,
            channels=stack.channels,
            bridge_options=stack.bridge_options,
        )
        pg.put_pipeline(
            "test",
            pipeline_body(
                max_days=TICK_DAYS,
                escalation={"manager_after_days": TICK_DAYS / 2, "flag_after_days": TICK_DAYS},
            ),
        )
        pg.put_sequence("welcome", sequence_body([0, TICK_DAYS / 2]))
        await pg.start()
        _open(pg, "d1")
        await wait_for(
            lambda: "flagged_stale" in pg.types("d1") and "nurture_stopped" in pg.types("d1"),
            timeout=30,
        )
        kinds = [t for t, _ in pg.automation("d1")]
        assert kinds.count("nurture_touch_sent") == 2 and kinds.count("escalated") == 2
        assert len(services.automation.outbox.list(deal_id="d1")) == 4
        assert await workflow_status(pg.client, pg.escalation_window("d1", 1)) is not None
    finally:
        await pg.stop_all()
        services.close()
