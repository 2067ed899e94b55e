"""``dealflow bench project`` and ``dealflow bench query`` (PostgreSQL from DATABASE_URL).

project: a full rebuild of every read model over N events, against a raw paged SELECT of the
same rows of the events table in the same run (the floor any projection pays to read the log).
query: p50/p95 latency of the metrics, breakdown and board endpoints with N deals in the store.
Data is generated through the real batch path (``DealflowApp.ingest``), 5,000 events a batch,
and reused when the database already holds enough.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dealflow.bench.synthetic import BENCH_PIPELINE, BENCH_PIPELINE_ID, stream, to_command
from engine.settings import Settings

console = Console(stderr=True)
BATCH = 5000


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _services() -> Any:
    if not Settings.load().database_url:
        console.print(
            "[red]error:[/] the benches need PostgreSQL: set DATABASE_URL=postgresql://user@host:5432/db"
        )
        raise SystemExit(2)
    from engine.application import DealflowApp
    from engine.domain.pipeline import PipelineDefinition
    from engine.persistence.settings import StoreSettings
    from projections.runtime import ProjectionsService

    app = DealflowApp(StoreSettings.from_env())
    app.put_pipeline(BENCH_PIPELINE_ID, PipelineDefinition.model_validate(BENCH_PIPELINE), "bench")
    return app, ProjectionsService(app, run=False)


def _count_deals(app: Any) -> int:
    row = app.db.fetchone(
        "SELECT COUNT(*) AS n FROM rm_deals WHERE pipeline_id = %s", (BENCH_PIPELINE_ID,)
    )
    return int(row["n"])


def generate(app: Any, *, events: int | None = None, new_deals: int | None = None) -> None:
    """Ingest synthetic deals until the log holds ``events`` events, or ``new_deals`` more deals.
    Deal ids carry the run's start time, so reruns on the same database never collide."""
    if events is not None and app.max_position() >= events:
        return
    if new_deals is not None and new_deals <= 0:
        return
    prefix = f"g{int(time.time())}"
    with _progress() as progress:
        task = progress.add_task("generating (ingest)", total=events or new_deals)
        batch: list[Any] = []
        made = 0
        for deal_id, body in stream(10**9, seed=int(time.time()) % 1000, prefix=prefix):
            made += body["type"] == "opened"
            batch.append(to_command(deal_id, body))
            if len(batch) < BATCH:
                continue
            app.ingest(batch)
            batch = []
            position = app.max_position()
            progress.update(task, completed=position if events else made)
            if (events is not None and position >= events) or (
                new_deals is not None and made >= new_deals
            ):
                break
        if batch:
            app.ingest(batch)


def bench_project(events: int, json_path: str | None) -> int:
    app, service = _services()
    generate(app, events=events)
    head = app.max_position()
    until = min(head, events) if head >= events else head
    # The baseline: read the same rows, page by page, as the runner does, without folding them.
    started = time.perf_counter()
    position, rows = 0, 0
    while True:
        notes = app.recorder.select_notifications(
            start=position, limit=BATCH, inclusive_of_start=False, stop=until
        )
        if not notes:
            break
        rows += len(notes)
        position = notes[-1].id
    scan_s = time.perf_counter() - started
    runner = service.runner
    service.view.reset(bulk=True)
    with _progress() as progress:
        task = progress.add_task("rebuilding read models", total=until)
        started = time.perf_counter()
        runner.catch_up(until=until, progress=lambda p: progress.update(task, completed=p))
        service.view.finish_rebuild()  # the indexes the bulk rebuild dropped: part of the time
        rebuild_s = time.perf_counter() - started
    service.view.analyze()
    result = {
        "events": rows,
        "rebuild_s": round(rebuild_s, 3),
        "events_per_s": round(rows / rebuild_s, 1),
        "scan_s": round(scan_s, 3),
        "scan_rows_per_s": round(rows / scan_s, 1),
        "ratio_vs_scan": round((rows / rebuild_s) / (rows / scan_s), 4),
    }
    print(f"rebuild: {rows} events in {rebuild_s:.2f}s = {result['events_per_s']:,.0f} events/s")
    print(f"scan:    {rows} rows in {scan_s:.2f}s = {result['scan_rows_per_s']:,.0f} rows/s")
    print(f"ratio vs scan: {result['ratio_vs_scan']:.3f}")
    _write(json_path, result)
    app.close()
    return 0


def _latencies(call: Callable[[], Any], repeat: int) -> dict[str, float]:
    call()  # warm up
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[max(0, int(len(samples) * 0.95) - 1)], 2),
        "max_ms": round(samples[-1], 2),
    }


def bench_query(deals: int, json_path: str | None, repeat: int) -> int:
    from fastapi.testclient import TestClient

    from dealflow.http import create_app
    from engine.services import Services
    from engine.tokens import TokenStore

    app, service = _services()
    service.catch_up()
    generate(app, new_deals=deals - _count_deals(app))
    service.catch_up()
    service.view.analyze()
    present = _count_deals(app)
    services = Services(
        app=app,
        tokens=TokenStore(app.db, "bench-token"),
        settings=app.settings,
        projections=service,
    )
    headers = {"Authorization": "Bearer bench-token"}
    base = f"/v1/pipelines/{BENCH_PIPELINE_ID}"
    # An as_of two-thirds into the generated history, for the historical variants.
    row = app.db.fetchone("SELECT MIN(opened_at) AS lo, MAX(last_event_at) AS hi FROM rm_deals")
    from projections.readmodel.records import iso_us

    past = iso_us(int(row["lo"] + (row["hi"] - row["lo"]) * 2 // 3))
    endpoints = {
        "metrics": f"{base}/metrics",
        "metrics_window": f"{base}/metrics?closed_from=2023-03-01&closed_to=2023-09-01&target=5000000",
        "breakdown_industry": f"{base}/metrics/breakdown?by=industry",
        "board": f"{base}/board",
        "deals_list": f"/v1/deals?pipeline_id={BENCH_PIPELINE_ID}&status=open&limit=50",
        "metrics_as_of": f"{base}/metrics?as_of={past}",
        "board_as_of": f"{base}/board?as_of={past}",
    }
    results: dict[str, Any] = {"deals": present}
    with TestClient(create_app(services)) as client:
        for name, url in endpoints.items():

            def call(url: str = url) -> None:
                response = client.get(url, headers=headers)
                if response.status_code != 200:
                    raise SystemExit(f"{url}: {response.status_code} {response.text[:300]}")

            results[name] = _latencies(call, repeat)
            print(
                f"{name:20s} p50 {results[name]['p50_ms']:8.1f} ms   p95 {results[name]['p95_ms']:8.1f} ms"
            )
    results["p95_ms"] = {k: v["p95_ms"] for k, v in results.items() if isinstance(v, dict)}
    _write(json_path, results)
    return 0


def _write(path: str | None, result: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)


def register(benches: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `dealflow bench project|query`."""
    project = benches.add_parser(
        "project", help="full read-model rebuild vs a raw scan of the events table"
    )
    project.add_argument("--events", type=int, default=200_000)
    project.add_argument("--json", help="write the figures to this file")
    project.set_defaults(func=lambda args: bench_project(args.events, args.json))
    query = benches.add_parser("query", help="p50/p95 latency of metrics, breakdown and board")
    query.add_argument("--deals", type=int, default=100_000)
    query.add_argument("--repeat", type=int, default=40)
    query.add_argument("--json", help="write the figures to this file")
    query.set_defaults(func=lambda args: bench_query(args.deals, args.json, args.repeat))
