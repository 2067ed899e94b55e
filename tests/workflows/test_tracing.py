"""Temporal spans: the client dealflow's processes connect with (workflows.settings) carries
temporalio's OpenTelemetry interceptor, so starting a workflow, running it and its activities
are spans of one trace, on the real dev server."""

from __future__ import annotations

import pytest
from temporalio.client import Client

from tests.tracing import recorded_spans
from tests.workflows.conftest import Stack, pipeline_body, sequence_body, wait_for
from workflows.settings import TemporalSettings

pytestmark = pytest.mark.temporal


async def test_workflows_and_activities_are_traced(stack: Stack, temporal_client: Client) -> None:
    config = temporal_client.config()
    traced = await TemporalSettings(
        address=temporal_client.service_client.config.target_host,
        namespace=config["namespace"],
    ).connect()
    stack.put_pipeline("test", pipeline_body())
    stack.put_sequence("welcome", sequence_body([0]))
    with recorded_spans() as spans:
        await stack.start(client=traced)
        stack.send("d1", {"type": "opened", "pipeline_id": "test", "name": "Deal d1"})
        stack.send("d1", {"type": "stage_changed", "to_stage": "qualification"})
        await wait_for(lambda: "nurture_stopped" in stack.types("d1"), timeout=30)
        await stack.stop_all()
        names = [s.name for s in spans]
    assert "StartWorkflow:NurtureWorkflow" in names, names
    assert "RunWorkflow:NurtureWorkflow" in names, names
    activities = [s for s in spans if s.name.startswith("RunActivity:")]
    assert activities, names
    start = next(s for s in spans if s.name == "StartWorkflow:NurtureWorkflow")
    run = next(s for s in spans if s.name == "RunWorkflow:NurtureWorkflow")
    # One trace from the bridge's start through the workflow to its activities.
    assert run.context.trace_id == start.context.trace_id
    assert {a.context.trace_id for a in activities} == {start.context.trace_id}
