"""The scale-out crash run: real processes under load, killed with SIGKILL and started again.

Two API replicas (``serve --no-projections``), two workers (worker and bridge each) and one
projection runner share a PostgreSQL database and a Temporal dev server. The load generator
(``chaos_load``) writes across both APIs; the disruption (by default: SIGKILL of one API, one
worker and the projection runner, several rounds, each restarted) runs meanwhile; then
``chaos_checks`` compares the store with what was acknowledged. ``dealflow bench chaos``
prints the figures; tests/faults run it (short in CI, long behind ``chaos_long``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from dealflow.bench import chaos_checks as checks
from dealflow.bench.chaos_fleet import CountingSmtp, CountingWebhook, Fleet, tail
from dealflow.bench.chaos_load import PIPELINE, Load
from engine.settings import Settings
from workflows.devserver import DevServer, free_port

# ~1.7 s: escalation and nurture timers, so that they fire many times during a short run.
TICK_DAYS = 0.00002


@dataclass
class ChaosConfig:
    database_url: str
    workdir: Path
    temporal_address: str | None = None  # None: a dev server of our own
    apis: int = 2
    workers: int = 2
    before: float = 5.0  # seconds of load before the first disruption
    rounds: int = 2  # rounds of kills (each kills an API, a worker, the projection runner)
    down: float = 1.5  # seconds a killed process stays down
    gap: float = 3.0  # seconds between kills
    after: float = 5.0  # seconds of load after the last restart
    threads: int = 4
    pause: float = 0.0  # seconds each load thread rests between requests
    settle: float = 90.0  # at most this long for projections and automation to finish
    # Replaces the kills (e.g. a database restart); gets the run and returns when done.
    disrupt: Callable[[ChaosRun], None] | None = None


@dataclass
class ChaosReport:
    figures: dict[str, Any]
    violations: list[str]
    events: list[tuple[float, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def render(self) -> str:
        width = max(len(k) for k in self.figures)
        lines = [f"{k.ljust(width)}  {v}" for k, v in self.figures.items()]
        lines.append("violations: " + ("none" if self.ok else ""))
        lines += [f"  - {v}" for v in self.violations]
        return "\n".join(lines)


class ChaosRun:
    def __init__(self, config: ChaosConfig, fleet: Fleet, load: Load, token: str) -> None:
        self.config = config
        self.fleet = fleet
        self.load = load
        self.token = token
        self.timeline: list[tuple[float, str]] = []
        self.started = time.monotonic()

    def note(self, what: str) -> None:
        self.timeline.append((round(time.monotonic() - self.started, 1), what))

    def kill_and_restart(self, name: str) -> None:
        self.fleet.kill(name)
        self.note(f"killed {name}")
        time.sleep(self.config.down)
        self.fleet.start(name)
        self.note(f"restarted {name}")
        wait_running(self.fleet, self.token, [name])
        self.note(f"{name} up again")

    def kill_rounds(self) -> None:
        victims = ["api-1", "worker-1", "projections"]
        for n in range(self.config.rounds):
            for victim in victims:
                if victim.startswith("api") and n % 2:
                    victim = "api-2"
                if victim.startswith("worker") and n % 2 and "worker-2" in self.fleet.members:
                    victim = "worker-2"
                self.kill_and_restart(victim)
                time.sleep(self.config.gap)


def wait_running(fleet: Fleet, token: str, names: list[str] | None = None) -> None:
    """Until each (or each named) member is up: APIs ready, workers and runner printing that
    they run (their log is appended to, so count the lines since their latest start)."""
    for name in names or list(fleet.members):
        if name.startswith("api"):
            fleet.wait_ready(name, token)
        elif name.startswith("worker"):
            fleet.wait_running(name, "worker on ")  # text or JSON logs alike
        else:
            fleet.wait_running(name, "projections running")


def _definitions(api: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    stages = [
        {"id": "lead", "name": "Lead", "probability": 0.05},
        {
            "id": "qualification",
            "name": "Qualification",
            "probability": 0.2,
            "max_days_in_stage": TICK_DAYS,
            "escalation": {"manager_after_days": TICK_DAYS, "flag_after_days": 2 * TICK_DAYS},
        },
        {"id": "proposal", "name": "Proposal", "probability": 0.5},
    ]
    steps = [
        {"after_days": delay, "channel": channel, "subject": f"Step {i} for {{name}}", "body": "Hi"}
        for i, (delay, channel) in enumerate(
            [(0, "email"), (TICK_DAYS, "webhook"), (TICK_DAYS, "email")]
        )
    ]
    for method, path, body in (
        ("PUT", f"/v1/pipelines/{PIPELINE}", {"name": "Chaos", "stages": stages}),
        (
            "PUT",
            "/v1/directory",
            {
                "people": [
                    {"id": "Owner A", "manager": "Manager B", "email": "owner@team.test"},
                    {"id": "Manager B", "email": "manager@team.test"},
                ]
            },
        ),
        (
            "PUT",
            "/v1/sequences/chaos-nurture",
            {
                "name": "Chaos nurture",
                "enroll": {"pipeline_id": PIPELINE, "on_enter_stage": "proposal"},
                "steps": steps,
            },
        ),
    ):
        response = httpx.request(method, f"{api}{path}", json=body, headers=headers, timeout=30)
        response.raise_for_status()


def _throughput(load: Load, window: tuple[float, float], stopped: float) -> dict[str, Any]:
    """Acknowledged events per second before the disruption, during it, and after it."""
    first, last = window
    acks = load.stats.acked_at
    if not acks:
        return {}
    started = min(t for t, _ in acks)
    figures: dict[str, Any] = {}
    for name, lo, hi in (
        ("before", started, first),
        ("during", first, last),
        ("after", last, stopped),
    ):
        events = sum(n for t, n in acks if lo <= t < hi)
        figures[f"throughput_{name}_events_per_s"] = round(events / max(hi - lo, 1e-9), 1)
    base = figures["throughput_before_events_per_s"] or 1.0
    figures["ratio_during_to_before"] = round(figures["throughput_during_events_per_s"] / base, 2)
    figures["ratio_after_to_before"] = round(figures["throughput_after_events_per_s"] / base, 2)
    return figures


def _settle(run: ChaosRun, app: Any, deadline: float) -> tuple[bool, dict[str, Any]]:
    """Wait until the read models reached the log's end and automation has nothing left to do:
    each deal in ``qualification`` flagged, each enrolment in ``proposal`` stopped."""
    from projections.readmodel.schema import CURRENT_TABLE

    while time.monotonic() < deadline:
        head = app.max_position()
        try:
            status = httpx.get(
                f"{run.fleet.members['api-1'].url}/v1/projections",
                headers={"Authorization": f"Bearer {run.token}"},
                timeout=5,
            ).json()
            lag = max(int(p["lag"]) for p in status["projections"])
        except (httpx.HTTPError, ValueError, KeyError):
            lag = 1
        pending: list[str] = []
        rows = app.db.fetchall(f"SELECT deal_id, stage FROM {CURRENT_TABLE}")
        deal_ids = {r["deal_id"] for r in rows if r["stage"] in ("qualification", "proposal")}
        for deal_id, events in checks.deal_histories(app, deal_ids).items():
            entered = max(
                (i for i, e in enumerate(events) if e["type"] in ("opened", "stage_changed")),
                default=0,
            )
            since = [e["type"] for e in events[entered:]]
            current = _stage(events)
            if current == "qualification" and "flagged_stale" not in since:
                pending.append(f"{deal_id}: {since[-3:]}")
            if current == "proposal" and "nurture_stopped" not in since:
                pending.append(f"{deal_id}: {since[-3:]}")
        if lag == 0 and not pending and head == app.max_position():
            return True, {}
        time.sleep(1.0)
    return False, {"lag": lag, "pending": len(pending), "examples": pending[:5]}


def _stage(events: list[dict[str, Any]]) -> str | None:
    stage = None
    for event in events:
        data = event.get("data") or {}
        if event["type"] == "opened":
            stage = data.get("stage") or "lead"
        elif event["type"] in ("stage_changed", "reopened"):
            stage = data.get("to_stage")
    return stage


def run_chaos(config: ChaosConfig) -> ChaosReport:
    from engine.application import DealflowApp
    from engine.persistence.settings import StoreSettings

    token = secrets.token_urlsafe(16)
    config.workdir.mkdir(parents=True, exist_ok=True)
    server: DevServer | None = None
    if config.temporal_address is None:
        server = DevServer(port=free_port())
        asyncio.run(server.start())
    address = config.temporal_address or (server.address if server else "")
    with CountingSmtp() as smtp, CountingWebhook() as webhook:
        env = {
            **os.environ,
            "DATABASE_URL": config.database_url,
            "DEALFLOW_HOME": str(config.workdir / "home"),
            "DEALFLOW_BOOTSTRAP_TOKEN": token,
            "TEMPORAL_ADDRESS": address,
            "DEALFLOW_TASK_QUEUE": f"chaos-{uuid.uuid4().hex[:8]}",
            "DEALFLOW_SMTP_URL": smtp.url,
            "DEALFLOW_WEBHOOK_URL": webhook.url,
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("DEALFLOW_METRICS_PORT", None)
        fleet = Fleet(env, config.workdir / "logs")
        for n in range(1, config.apis + 1):
            fleet.add(
                f"api-{n}", "serve", "--no-projections", "--log-level", "warning", port=free_port()
            )
        for n in range(1, config.workers + 1):
            fleet.add(f"worker-{n}", "worker", "--log-level", "info")
        fleet.add("projections", "projections", "run")
        app = None
        try:
            # Tables first, by one process, then everyone at once.
            fleet.start("api-1")
            fleet.wait_ready("api-1", token)
            _definitions(fleet.members["api-1"].url, token)
            for name in fleet.members:
                fleet.start(name)
            for name in fleet.members:
                if name.startswith("api"):
                    fleet.wait_ready(name, token)
            wait_running(fleet, token)
            apis = [m.url for n, m in fleet.members.items() if n.startswith("api")]
            load = Load(apis, token, threads=config.threads, pause=config.pause)
            run = ChaosRun(config, fleet, load, token)
            run.started = time.monotonic()
            load.start()
            time.sleep(config.before)
            run.note("disruption starts")
            disrupted_from = time.monotonic()
            (config.disrupt or ChaosRun.kill_rounds)(run)
            run.note("disruption ends")
            window = (disrupted_from, time.monotonic())
            time.sleep(config.after)
            stopped = time.monotonic()
            load.stop()
            run.note("load stopped")
            app = DealflowApp(StoreSettings(database_url=config.database_url, home=config.workdir))
            settle_from = time.monotonic()
            settled, unsettled = _settle(run, app, settle_from + config.settle)
            settle_seconds = round(time.monotonic() - settle_from, 1)
            run.note("settled" if settled else "not settled")
            # Every process recovers by itself: none may have died along the way.
            died = [name for name, member in fleet.members.items() if not member.alive]
            fleet.stop_all()
            out = checks.Findings()
            if died:
                out.fail("processes that exited by themselves", died)
            stats = load.stats
            out.figures.update(
                requests=stats.requests,
                answered=stats.answered,
                transport_errors=stats.transport_errors,
                answers_by_status=dict(sorted(stats.by_status.items())),
                unavailable_with_retry_after=stats.unavailable_with_retry_after,
                replays_asked=stats.replays_asked,
                replays_ok=stats.replays_ok,
                kills=sum(m.kills for m in fleet.members.values()),
                restarts=sum(max(m.starts - 1, 0) for m in fleet.members.values()),
            )
            if stats.unavailable_without_retry_after:
                out.fail("503 answers without Retry-After", stats.unavailable_without_retry_after)
            if stats.replays_ok != stats.replays_asked:
                out.fail(
                    "retries of acknowledged events not answered as replays",
                    stats.replays_asked - stats.replays_ok,
                )
            if not settled:
                out.fail(f"not finished {config.settle} s after the load", unsettled)
            deal_ids = {d for s in load.sent for d in s.deal_ids}
            histories = checks.deal_histories(app, deal_ids)
            checks.check_log(load.sent, histories, out)
            checks.check_automation(histories, out)
            checks.check_deliveries(app, smtp, webhook, out)
            checks.check_audit(env, out)
            checks.check_read_models(app, env, out)
            out.figures.update(_throughput(load, window, stopped))
            out.figures["deals"] = len(deal_ids)
            # How long projections and automation took to finish once the load stopped.
            out.figures["settle_seconds"] = settle_seconds
            return ChaosReport(out.figures, out.violations, run.timeline)
        except Exception:
            for member in fleet.members.values():
                print(f"--- {member.name} ---\n{tail(member.log)}")
            raise
        finally:
            fleet.stop_all()
            if app is not None:
                app.close()
            if server is not None:
                server.stop()


def _bench(args: argparse.Namespace) -> int:
    url = args.database_url or Settings.load().database_url
    if not url:
        print("bench chaos needs PostgreSQL: pass --database-url or set DATABASE_URL")
        return 2
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dealflow-chaos-"))
    report = run_chaos(
        ChaosConfig(
            database_url=url,
            workdir=workdir,
            temporal_address=args.temporal_address,
            rounds=args.rounds,
            before=args.before,
            after=args.after,
            threads=args.threads,
            settle=args.settle,
        )
    )
    print(report.render())
    for at, what in report.events:
        print(f"  {at:7.1f} s  {what}")
    print(f"logs in {workdir / 'logs'}")
    return 0 if report.ok else 1


def register(benches: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    chaos = benches.add_parser(
        "chaos", help="kill APIs, workers and the projection runner under load; count the damage"
    )
    chaos.add_argument("--database-url", help="an empty PostgreSQL database (default DATABASE_URL)")
    chaos.add_argument("--temporal-address", help="default: a dev server of its own")
    chaos.add_argument("--rounds", type=int, default=3)
    chaos.add_argument("--before", type=float, default=8.0)
    chaos.add_argument("--after", type=float, default=8.0)
    chaos.add_argument("--threads", type=int, default=4)
    chaos.add_argument(
        "--settle", type=float, default=300.0, help="at most this long for automation to finish"
    )
    chaos.add_argument("--workdir", help="where logs go (default: a new temporary directory)")
    chaos.set_defaults(func=_bench)
