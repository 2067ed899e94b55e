"""`dealflow bench workflows`: starts per second through the bridge, escalation lateness, memory.

N deals are opened through the normal write path (``app.ingest``) straight into a stage that
both enrolls them in a two-step sequence and limits their stay, with timers of a few seconds.
The bridge hands each deal's stay to an escalation window (signal-with-start, one per window
and bridge batch) from the ``opened`` event, records the enrollment, and starts one nurture
workflow per deal from the ``nurture_enrolled`` event: 2N hand-offs in all (N workflow starts and
N stays). ``workflow_starts_per_s`` counts hand-offs, so that it compares with the one-workflow-
per-stay bridge of earlier releases (2N starts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from dealflow.bench.figures import percentile
from dealflow.bench.workflow_fleet import cpu_seconds, extra_workers, peak_rss_mb, rss_mb
from dealflow.runtime import build_services
from engine.application import Command, request_hash
from engine.commands import incoming_event
from engine.domain.definitions import SEQUENCE
from engine.domain.pipeline import PipelineDefinition
from engine.persistence.recorders import IDEMPOTENCY_TABLE
from engine.persistence.settings import StoreSettings
from workflows.channels import Channels
from workflows.devserver import DevServer, free_port
from workflows.ids import escalation_task_queue
from workflows.settings import TemporalSettings
from workflows.worker import AutomationProcess

DAY = 86400.0
STEP_SECONDS = 1.0
MANAGER_AFTER_SECONDS = 1.0
FLAG_AFTER_SECONDS = 2.0
SLEEP_DAYS = 30.0  # --sleeping: every timer is this far out
SLEEP_SAMPLE_SECONDS = 10.0


def _opened(deal_id: str) -> Command:
    body = {
        "type": "opened",
        "event_id": f"bench-open-{deal_id}",
        "pipeline_id": "bench",
        "name": deal_id,
        "stage": "nurture",
        "owner": "owner",
        "account": "Bench Inc",
    }
    payload = incoming_event.validate_python(body)
    return Command(
        deal_id=deal_id,
        type="opened",
        event_id=payload.event_id,
        payload=payload,
        request_hash=request_hash(deal_id, body),
        actor="bench",
    )


async def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def run_bench(
    deals: int,
    *,
    limit_seconds: float | None = None,
    database_url: str | None = None,
    workers: int = 1,
    sleeping: bool = False,
) -> dict[str, Any]:
    """Burst mode: timers of seconds, lateness measured. ``sleeping``: timers of 30 days, and
    the figures are the time to start them all and memory while they sleep (issue 11, item 4)."""
    home = Path(tempfile.mkdtemp(prefix="dealflow-bench-"))
    temporal = TemporalSettings.from_env()
    server: DevServer | None = None
    address = temporal.address
    if not temporal.explicit_address:
        server = DevServer(port=free_port())
        await server.start()
        address = server.address
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
    else:
        client = await temporal.connect()
    services = build_services(
        StoreSettings(database_url=database_url, home=home), run_projections=False
    )
    app = services.app
    limit = limit_seconds if limit_seconds is not None else max(8.0, deals / 75)
    step_seconds = STEP_SECONDS
    if sleeping:
        limit = step_seconds = SLEEP_DAYS * DAY
    run = uuid.uuid4().hex[:8]
    process: AutomationProcess | None = None
    stack = contextlib.ExitStack()
    try:
        app.put_pipeline(
            "bench",
            PipelineDefinition.model_validate(
                {
                    "name": "Bench",
                    "stages": [
                        {"id": "new", "name": "New", "probability": 0.1},
                        {
                            "id": "nurture",
                            "name": "Nurture",
                            "probability": 0.2,
                            "max_days_in_stage": limit / DAY,
                            "escalation": {
                                "manager_after_days": MANAGER_AFTER_SECONDS / DAY,
                                "flag_after_days": FLAG_AFTER_SECONDS / DAY,
                            },
                        },
                        {"id": "done", "name": "Done", "probability": 0.9},
                    ],
                }
            ),
            "bench",
        )
        app.put_definition(
            SEQUENCE,
            "bench",
            {
                "name": "Bench",
                "enroll": {"pipeline_id": "bench", "on_enter_stage": "nurture"},
                "stop_on": ["stage_changed", "won", "lost", "reply"],
                "steps": [
                    {
                        "after_days": step_seconds / DAY if sleeping else 0,
                        "channel": "email",
                        "subject": "Hello {name}",
                        "body": "Hi",
                    },
                    {
                        "after_days": step_seconds / DAY,
                        "channel": "task",
                        "subject": "Call {account}",
                    },
                ],
            },
            "bench",
        )
        process = AutomationProcess(
            app,
            client,
            f"bench-{run}",
            channels=Channels(),
            max_concurrent_activities=64,
            bridge_options={
                "workflow_id_prefix": f"bench-{run}/",
                "poll_interval": 0.02,
                "batch_size": 1000,
                "concurrency": 256,
            },
        )
        await process.start()
        assert process.bridge is not None
        stats = process.bridge.stats
        fleet = extra_workers(
            workers - 1,
            address=address,
            task_queue=f"bench-{run}",
            database_url=database_url,
            home=home,
        )
        others = stack.enter_context(fleet)
        ids = [f"bench-{run}-{i:06d}" for i in range(deals)]
        cpu_before = cpu_seconds()
        started_at = time.monotonic()
        for chunk in range(0, deals, 500):
            outcomes = await asyncio.to_thread(
                app.ingest, [_opened(d) for d in ids[chunk : chunk + 500]]
            )
            assert all(o.status == "recorded" for o in outcomes), outcomes[:1]
        ingest_s = time.monotonic() - started_at
        await _wait(lambda: stats.started + stats.stays >= 2 * deals, 60 + deals / 20, "hand-offs")
        starts_s = max(stats.handoff_times) - started_at
        handoffs = stats.started + stats.stays
        if sleeping:
            return await _sleeping_figures(deals, handoffs, starts_s, server, others)

        def flagged() -> bool:
            row = app.db.fetchone(
                f"SELECT COUNT(*) AS n FROM {IDEMPOTENCY_TABLE} WHERE event_id LIKE %s",
                (f"escalation:bench-{run}-%:flagged",),  # this run's only: a database is reused
            )
            return int(row["n"]) >= deals

        await _wait(flagged, limit + FLAG_AFTER_SECONDS + 60 + deals / 20, "escalations")
        rss, peak = rss_mb(), peak_rss_mb()
        cpu = cpu_seconds() - cpu_before
        others_rss = [round(rss_mb(p.pid), 1) for p in others]
        lateness: list[float] = []
        touches = 0
        offsets = {"owner": 0.0, "manager": MANAGER_AFTER_SECONDS, "flagged": FLAG_AFTER_SECONDS}
        for deal_id in ids:
            events = app.history(deal_id)["events"]
            entered = _time(events[0]["occurred_at"])
            for event in events:
                level = (
                    event["data"].get("level")
                    if event["type"] == "escalated"
                    else ("flagged" if event["type"] == "flagged_stale" else None)
                )
                if level is not None:
                    due = entered.timestamp() + limit + offsets[level]
                    lateness.append(_time(event["recorded_at"]).timestamp() - due)
                touches += event["type"] == "nurture_touch_sent"
        messages = services.automation.outbox.list(limit=10 * deals + 10)
        return {
            "deals": deals,
            "backend": app.db.dialect,
            "workflow_starts": stats.started,
            "escalation_stays_handed": stats.stays,
            "workflow_starts_per_s": round(handoffs / starts_s, 1),
            "ingest_s": round(ingest_s, 3),
            "starts_done_after_s": round(starts_s, 3),
            "stale_limit_s": limit,
            "escalation_events": len(lateness),
            "escalation_lateness_p50_s": round(statistics.median(lateness), 3),
            "escalation_lateness_p95_s": round(percentile(lateness, 0.95), 3),
            "escalation_lateness_max_s": round(max(lateness), 3),
            "touches_recorded_so_far": touches,
            "outbox_messages": len(messages),
            "duplicate_messages": len(messages) - len({m["id"] for m in messages}),
            "worker_rss_mb": round(rss, 1),
            "worker_peak_rss_mb": round(peak, 1),
            # CPU of this process (worker, bridge, the bench's ingest) from the first write to
            # the last escalation: steadier than wall time on a shared machine
            "worker_cpu_s": round(cpu, 1),
            "workers": workers,
            "other_workers_rss_mb": others_rss,
            "note": "worker, bridge and store client share this one process; RSS is the process's",
        }
    finally:
        await asyncio.to_thread(stack.close)
        if process is not None:
            await process.stop()
        if sleeping and server is None:
            await _terminate_sleepers(client, f"bench-{run}")
        services.close()
        if server is not None:
            server.stop()
        shutil.rmtree(home, ignore_errors=True)


async def _sleeping_figures(
    deals: int, started: int, starts_s: float, server: DevServer | None, others: list[Any]
) -> dict[str, Any]:
    """Memory while every workflow sleeps: sampled for SLEEP_SAMPLE_SECONDS after the starts."""
    samples: list[float] = []
    for _ in range(int(SLEEP_SAMPLE_SECONDS / 0.5)):
        samples.append(rss_mb())
        await asyncio.sleep(0.5)
    server_rss = rss_mb(server.process.pid) if server and server.process else None
    return {
        "sleeping_deals": deals,
        "workflow_starts": started,
        "time_to_start_all_s": round(starts_s, 3),
        "workflow_starts_per_s": round(started / starts_s, 1),
        "worker_rss_mb_while_sleeping": {
            "first": round(samples[0], 1),
            "last": round(samples[-1], 1),
            "max": round(max(samples), 1),
        },
        "worker_peak_rss_mb": round(peak_rss_mb(), 1),
        "other_workers_rss_mb": [round(rss_mb(p.pid), 1) for p in others],
        "dev_server_rss_mb": None if server_rss is None else round(server_rss, 1),
        "note": "the dev server keeps everything in memory; its RSS is the cluster's cost here",
    }


async def _terminate_sleepers(client: Client, task_queue: str) -> None:
    """On a server the bench did not start, its sleeping workflows must not outlive it."""
    queues = f'"{task_queue}", "{escalation_task_queue(task_queue)}"'
    query = f"TaskQueue IN ({queues}) AND ExecutionStatus = 'Running'"
    handles = [
        client.get_workflow_handle(execution.id, run_id=execution.run_id)
        async for execution in client.list_workflows(query)
    ]
    for chunk in range(0, len(handles), 200):
        await asyncio.gather(
            *(h.terminate("bench over") for h in handles[chunk : chunk + 200]),
            return_exceptions=True,
        )


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _bench(args: argparse.Namespace) -> int:
    figures = asyncio.run(
        run_bench(
            args.sleeping or args.deals,
            limit_seconds=args.limit_seconds,
            database_url=args.database_url,
            workers=args.workers,
            sleeping=bool(args.sleeping),
        )
    )
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json_path:
        Path(args.json_path).write_text(text + "\n", encoding="utf-8")
    return 0


def register(benches: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `dealflow bench workflows`."""
    workflows = benches.add_parser(
        "workflows", help="workflow starts per second and escalation lateness"
    )
    workflows.add_argument("--deals", type=int, default=500)
    workflows.add_argument("--json", dest="json_path", help="also write the figures to this file")
    workflows.add_argument(
        "--limit-seconds",
        type=float,
        default=None,
        help="max_days_in_stage of the bench stage, in seconds (default: scales with --deals)",
    )
    workflows.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL for the bench (default: a temporary SQLite)",
    )
    workflows.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes on the task queue (the bench's own + N-1 `dealflow worker`)",
    )
    workflows.add_argument(
        "--sleeping",
        type=int,
        default=0,
        metavar="N",
        help="instead: open N deals whose timers sleep 30 days; time to start, memory asleep",
    )
    workflows.set_defaults(func=_bench)
