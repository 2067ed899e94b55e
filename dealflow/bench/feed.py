"""`dealflow bench feed`: the event feed and webhook delivery, against same-run baselines.

1. Feed: the whole log read over HTTP from position 0 (a real `dealflow serve` process, pages
   of 5,000 parsed by the client) against the raw scan of the same rows through the recorder's
   ``select_notifications`` (no decoding) and the in-process feed reader, in the same run; and
   the serving process's peak memory, which should not grow with the log.
2. Webhooks: a subscription delivered by Temporal (a dev server, the worker in this process)
   to a local receiver: deliveries per second for a burst, and commit-to-receipt latency
   (p50, p95) for events written one at a time at a steady pace.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from dealflow.bench.figures import percentile
from dealflow.runtime import build_services
from engine.application import Command, DealflowApp
from engine.domain.pipeline import PipelineDefinition
from engine.feed import FeedReader
from engine.persistence.settings import StoreSettings
from workflows.devserver import free_port

BATCH = 5000
TOKEN = "bench-feed-token"
# No stage limits: no escalation workflows compete with the deliveries being measured.
PIPELINE_ID = "bench-feed"
PIPELINE = {
    "name": "Bench feed",
    "stages": [
        {"id": "new", "name": "New", "probability": 0.1},
        {"id": "talking", "name": "Talking", "probability": 0.5},
    ],
}


def register(benches: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    feed = benches.add_parser(
        "feed", help="feed events/s over HTTP vs the raw scan; webhook deliveries/s and latency"
    )
    feed.add_argument("--events", type=int, default=200_000, help="log size for the feed read")
    feed.add_argument("--deliveries", type=int, default=2000, help="webhook burst size")
    feed.add_argument("--latency-samples", type=int, default=200)
    feed.add_argument("--rate", type=float, default=20.0, help="events/s for the latency phase")
    feed.add_argument(
        "--database-url", default=None, help="PostgreSQL (default: a temporary SQLite store)"
    )
    feed.add_argument("--json", dest="json_path", help="also write the figures to this file")
    feed.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    figures = asyncio.run(run(args))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json_path:
        Path(args.json_path).write_text(text + "\n", encoding="utf-8")
    return 0


def _say(message: str) -> None:
    print(f"bench feed: {message}", file=sys.stderr, flush=True)


# -- data ------------------------------------------------------------------------------------


def _commands(prefix: str, events: int, per_deal: int = 10) -> Iterator[Command]:
    made = 0
    deal = 0
    while made < events:
        deal_id = f"{prefix}-{deal}"
        yield Command.from_body(
            deal_id,
            {
                "type": "opened",
                "event_id": f"{deal_id}-0",
                "pipeline_id": PIPELINE_ID,
                "name": f"Bench deal {deal}",
                "amount": "1200.00",
                "account": "Bench Inc",
            },
            "bench",
        )
        made += 1
        for n in range(1, min(per_deal, events - made + 1)):
            yield Command.from_body(
                deal_id,
                {
                    "type": "activity_logged",
                    "event_id": f"{deal_id}-{n}",
                    "activity": "call",
                    "summary": "follow-up call",
                },
                "bench",
            )
            made += 1
        deal += 1


def _fill(app: DealflowApp, prefix: str, events: int) -> None:
    batch: list[Command] = []
    for command in _commands(prefix, events):
        batch.append(command)
        if len(batch) == BATCH:
            app.ingest(batch)
            batch = []
    if batch:
        app.ingest(batch)


# -- the feed --------------------------------------------------------------------------------


def _raw_scan(app: DealflowApp) -> tuple[int, float]:
    started = time.perf_counter()
    count, position, head = 0, 0, app.max_position()
    while position < head:
        rows = app.recorder.select_notifications(
            position, BATCH, stop=head, inclusive_of_start=False
        )
        if not rows:
            break
        count += len(rows)
        position = rows[-1].id
    return count, time.perf_counter() - started


def _reader_scan(app: DealflowApp) -> tuple[int, float]:
    started = time.perf_counter()
    count = sum(1 for _ in FeedReader(app).iterate(0, page=BATCH))
    return count, time.perf_counter() - started


def _peak_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _serve(settings: StoreSettings, home: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(DEALFLOW_HOME=str(settings.home), DEALFLOW_BOOTSTRAP_TOKEN=TOKEN)
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    port = free_port()
    exe = Path(sys.executable).with_name("dealflow")
    command = [str(exe) if exe.exists() else shutil.which("dealflow") or "dealflow"]
    process = subprocess.Popen(
        [*command, "serve", "--port", str(port), "--no-projections", "--log-level", "warning"],
        env=env,
        cwd=home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("dealflow serve did not start")
        time.sleep(0.1)


def _http_scan(url: str) -> tuple[int, float]:
    started = time.perf_counter()
    count, after = 0, 0
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120
    ) as http:
        while True:
            page = http.get("/v1/feed", params={"after": after, "limit": BATCH}).json()
            count += len(page["events"])
            after = page["next_after"]
            if not page["has_more"]:
                break
    return count, time.perf_counter() - started


# -- webhooks --------------------------------------------------------------------------------


class _Receiver:
    """Records when each delivery arrived (first arrival per delivery id)."""

    def __init__(self) -> None:
        self.arrived: dict[str, tuple[float, int]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                at = time.time()
                position = json.loads(body)["data"]["position"]
                with receiver.lock:
                    receiver.arrived.setdefault(self.headers.get("webhook-id", ""), (at, position))
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def positions(self) -> dict[int, float]:
        with self.lock:
            return {position: at for at, position in self.arrived.values()}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench feed: timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _webhooks(app: DealflowApp, args: argparse.Namespace) -> dict[str, Any]:
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    from workflows.channels import Channels
    from workflows.devserver import DevServer, free_port
    from workflows.settings import TemporalSettings
    from workflows.subscriptions import SubscriptionStore
    from workflows.worker import AutomationProcess

    temporal = TemporalSettings.from_env()
    server: DevServer | None = None
    if temporal.explicit_address:
        client = await temporal.connect()
    else:
        server = DevServer(port=free_port())
        await server.start()
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
    receiver = _Receiver()
    queue = f"bench-feed-{uuid.uuid4().hex[:8]}"
    process = AutomationProcess(
        app, client, queue, channels=Channels(), bridge_options={"workflow_id_prefix": f"{queue}/"}
    )
    store = SubscriptionStore(app.db)
    try:
        await process.start()
        store.put(
            "bench",
            url=receiver.url,
            types=["opened", "activity_logged"],
            pipelines=[],
            secret=None,
            overlap_seconds=0,
            timeout_seconds=10,
            failing_after_seconds=3600,
            retry_max_seconds=5,
            start_after=app.max_position(),
        )
        # Burst: many deals' events committed at once, then delivered (deals in parallel).
        _say(f"webhooks: burst of {args.deliveries} deliveries")
        prefix = f"wb{uuid.uuid4().hex[:6]}"
        committed = time.time()
        await asyncio.to_thread(_fill, app, prefix, args.deliveries)
        committed_end = time.time()
        await _until(
            lambda: len(receiver.positions()) >= args.deliveries, 600, "the burst deliveries"
        )
        arrivals = sorted(receiver.positions().values())
        burst_seconds = arrivals[-1] - committed
        # Latency: events committed one at a time at a steady pace.
        _say(f"webhooks: {args.latency_samples} events at {args.rate:g}/s for latency")
        latencies: list[float] = []
        before = len(receiver.positions())
        commits: dict[int, float] = {}
        for n in range(args.latency_samples):
            deal_id = f"{prefix}-lat-{n}"
            command = Command.from_body(
                deal_id,
                {"type": "opened", "event_id": deal_id, "pipeline_id": PIPELINE_ID, "name": "L"},
                "bench",
            )
            outcome = (await asyncio.to_thread(app.ingest, [command]))[0]
            commits[int(outcome.position or 0)] = time.time()
            await asyncio.sleep(1 / args.rate)
        await _until(
            lambda: len(receiver.positions()) >= before + args.latency_samples,
            120,
            "the latency deliveries",
        )
        arrived = receiver.positions()
        latencies = [(arrived[p] - t) * 1000 for p, t in commits.items()]
        return {
            "deliveries": args.deliveries,
            "burst_commit_seconds": round(committed_end - committed, 3),
            "burst_seconds_commit_to_last_receipt": round(burst_seconds, 3),
            "deliveries_per_second": round(args.deliveries / burst_seconds, 1),
            "latency_samples": len(latencies),
            "latency_ms_p50": round(statistics.median(latencies), 1),
            "latency_ms_p95": round(percentile(latencies, 0.95), 1),
            "latency_ms_max": round(max(latencies), 1),
        }
    finally:
        store.pause("bench", "bench over")
        await process.stop()
        receiver.stop()
        if server is not None:
            server.stop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="dealflow-bench-feed-"))
    settings = StoreSettings(database_url=args.database_url, home=home / "home")
    services = build_services(settings, bootstrap_token=TOKEN, run_projections=False)
    app = services.app
    serve: subprocess.Popen[bytes] | None = None
    try:
        app.put_pipeline(PIPELINE_ID, PipelineDefinition.model_validate(PIPELINE), "bench")
        missing = args.events - app.max_position()
        if missing > 0:
            _say(f"writing {missing} events")
            _fill(app, f"f{uuid.uuid4().hex[:6]}", missing)
        head = app.max_position()
        _say(f"raw scan of {head} positions")
        raw_count, raw_seconds = _raw_scan(app)
        reader_count, reader_seconds = _reader_scan(app)
        serve, url = _serve(settings, home)
        idle_rss = _peak_rss_mb(serve.pid)
        _say("the feed over HTTP from position 0")
        http_count, http_seconds = _http_scan(url)
        serve_rss = _peak_rss_mb(serve.pid)
        raw_rate = raw_count / raw_seconds
        http_rate = http_count / http_seconds
        figures: dict[str, Any] = {
            "store": settings.backend,
            "feed": {
                "events": http_count,
                "raw_scan_events_per_second": round(raw_rate),
                "reader_in_process_events_per_second": round(reader_count / reader_seconds),
                "http_events_per_second": round(http_rate),
                "http_vs_raw_scan": round(http_rate / raw_rate, 3),
                "serve_peak_rss_mb_before_read": round(idle_rss, 1),
                "serve_peak_rss_mb_after_read": round(serve_rss, 1),
            },
        }
        serve.terminate()
        serve.wait(timeout=20)
        serve = None
        figures["webhooks"] = await _webhooks(app, args)
        return figures
    finally:
        if serve is not None:
            serve.kill()
            serve.wait()
        services.close()
        if not args.database_url:
            shutil.rmtree(home, ignore_errors=True)
