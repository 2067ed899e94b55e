"""``dealflow bench project`` and ``dealflow bench query`` (PostgreSQL from DATABASE_URL).

project: a full rebuild of every read model over N events, against a raw paged SELECT of the
same rows of the events table in the same run (the floor any projection pays to read the log).
query: p50/p95 latency of every read endpoint, now, as of past moments and with a closed window,
with N synthetic deals in the store (``--deals``) or K replays of the real CRM export
(``--crm-copies``); each figure is printed beside the scan it replaced (the oracle path,
``fast=False``) measured in the same run.
Data is generated through the real batch path (``DealflowApp.ingest``), 5,000 events a batch,
and reused when the database already holds enough.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
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


def _count_deals(app: Any, pipeline_id: str = BENCH_PIPELINE_ID) -> int:
    row = app.db.fetchone(
        "SELECT COUNT(*) AS n FROM rm_deals WHERE pipeline_id = %s", (pipeline_id,)
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
    # Deal n opens 7n minutes after the start. The write path refuses business times more than
    # DEALFLOW_MAX_CLOCK_SKEW ahead of now, so the history ends before now: from 2023 a million
    # deals would reach 2036. (The read side's future-time paths have their own property test.)
    needed = new_deals if new_deals is not None else events or 0
    start = datetime.now(UTC) - timedelta(minutes=7 * needed + 60, days=120)
    start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    with _progress() as progress:
        task = progress.add_task("generating (ingest)", total=events or new_deals)
        batch: list[Any] = []
        made = 0
        for deal_id, body in stream(
            10**9, seed=int(time.time()) % 1000, prefix=prefix, start=start
        ):
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


def bench_project(events: int, json_path: str | None, workers: int = 2) -> int:
    """``workers`` > 0: the parallel rebuild (all of the log: it folds by deal, not by
    position); 0: the runner's sequential catch-up over the first ``events`` events."""
    app, service = _services()
    generate(app, events=events)
    head = app.max_position()
    until = min(head, events) if head >= events and workers == 0 else head
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
    if workers > 0:
        import resource

        from projections.readmodel.rebuild import parallel_rebuild

        started = time.perf_counter()
        stats = parallel_rebuild(app, service.view, workers=workers)
        rebuild_s = time.perf_counter() - started
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        detail = {
            "workers": workers,
            "ranges": stats.ranges,
            "deals": stats.deals,
            "fold_s": stats.fold_s,  # worker processes: read, fold and COPY the rows
            "summary_s": stats.summary_s,  # PostgreSQL: summary tables and indexes
            "index_s": stats.index_s,
            "worker_peak_rss_mib": round(children, 1),
            "parent_peak_rss_mib": round(parent, 1),
        }
    else:
        service.view.reset(bulk=True)
        with _progress() as progress:
            task = progress.add_task("rebuilding read models", total=until)
            started = time.perf_counter()
            runner.catch_up(until=until, progress=lambda p: progress.update(task, completed=p))
            service.view.finish_rebuild()  # the indexes the bulk rebuild dropped: part of the time
            rebuild_s = time.perf_counter() - started
        detail = {"workers": 0}
    service.view.analyze()
    result = {
        "events": rows,
        "rebuild_s": round(rebuild_s, 3),
        "events_per_s": round(rows / rebuild_s, 1),
        "scan_s": round(scan_s, 3),
        "scan_rows_per_s": round(rows / scan_s, 1),
        "ratio_vs_scan": round((rows / rebuild_s) / (rows / scan_s), 4),
        **detail,
    }
    print(f"rebuild: {rows} events in {rebuild_s:.2f}s = {result['events_per_s']:,.0f} events/s")
    print(f"         {detail}")
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


CRM_DIR = Path(__file__).resolve().parents[1] / "demo" / "sample_data" / "crm"


def load_crm_copies(app: Any, copies: int, pipeline_id: str) -> None:
    """Replay the CRM export ``copies`` times (deal and event ids suffixed per copy) through the
    batch path, until the store holds that many copies; copies already loaded are kept."""
    import dataclasses

    from engine.importers.crm import Export, plan
    from engine.importers.crm.run import _batches

    built = plan(Export.load(CRM_DIR), app.pipeline_ref(pipeline_id).definition, pipeline_id)
    per_copy = len(built.deals)
    have = _count_deals(app, pipeline_id) // per_copy
    if have >= copies:
        return
    with _progress() as progress:
        task = progress.add_task("replaying the CRM export", total=copies - have)
        for k in range(have, copies):
            deals = [
                [
                    dataclasses.replace(c, deal_id=f"{c.deal_id}~{k}", event_id=f"{c.event_id}~{k}")
                    for c in commands
                ]
                for commands in built.deals
            ]
            for batch in _batches(deals, BATCH):
                app.ingest(batch)
            progress.advance(task)


def _project(app: Any, service: Any) -> None:
    """Bring the read models to the log's head: far behind (fresh tables, new data), with the
    parallel rebuild; otherwise with the runner's catch-up."""
    from projections.readmodel.rebuild import parallel_rebuild, supports

    if app.max_position() - service.view.position() > 200_000 and supports(app):
        parallel_rebuild(app, service.view, workers=2)
    else:
        service.catch_up()
    service.view.analyze()
    if app.db.is_postgres:
        _vacuum(Settings.load().database_url or "")


def _vacuum(url: str) -> None:
    """What a server's autovacuum does after such a load: statistics, and the visibility map
    that lets index-only scans skip the heap. This machine's cluster runs with autovacuum off:
    without it the store's reads were planned for empty tables (a board's next steps scanned
    4.75M events) and a closed window read 21,000 heap pages (123 ms; 9 ms after a vacuum)."""
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    console.print(f"vacuum (analyze) after the load: {time.perf_counter() - started:.1f} s")


def _train(app: Any, pipeline_id: str) -> dict[str, Any]:
    """Train (or keep) the pipeline's scoring model, timed: the deals are then ranked by it."""
    from engine.scoring.service import train

    started = time.perf_counter()
    result = train(app, pipeline_id)
    seconds = time.perf_counter() - started
    console.print(
        f"scoring model: {result['status']} (version {result['version']}) on"
        f" {result['deals']:,} closed deals in {seconds:.1f} s"
    )
    return {**result, "seconds": round(seconds, 1)}


def _refresh_scores(app: Any) -> None:
    """What a running projection process's refresher has done: each open deal's static score
    part kept for ranking by score (the first pass at a million deals loads every open deal)."""
    from projections.queries.score_cache import refresh_all

    started = time.perf_counter()
    pipelines = refresh_all(app)
    console.print(
        f"score parts brought up to date for {pipelines} scored pipeline(s)"
        f" in {time.perf_counter() - started:.1f} s"
    )


def _moments(app: Any, pipeline_id: str, count: int) -> list[str]:
    """Past moments spread over the pipeline's history (up to now) for the as-of variants."""
    from projections.readmodel.records import iso_us, to_us

    row = app.db.fetchone(
        "SELECT MIN(opened_at) AS lo, MAX(last_event_at) AS hi FROM rm_deals WHERE pipeline_id = %s",
        (pipeline_id,),
    )
    from engine.domain.events import utcnow

    lo, hi = int(row["lo"]), min(int(row["hi"]), to_us(utcnow()))
    # From a third to the end of the history, the last one two-thirds in (the old single one).
    picks = [lo + (hi - lo) * (3 + 6 * i // max(1, count - 1)) // 9 for i in range(count)]
    picks[-1] = lo + (hi - lo) * 2 // 3
    return [iso_us(p) or "" for p in picks]


def bench_query(
    deals: int,
    json_path: str | None,
    repeat: int,
    crm_copies: int = 0,
    oracle: bool = True,
    train: bool = False,
) -> int:
    from fastapi.testclient import TestClient

    from dealflow.http import create_app
    from engine.domain.defaults import DEFAULT_PIPELINE_ID
    from engine.services import Services
    from engine.tokens import TokenStore

    app, service = _services()
    _project(app, service)
    if crm_copies:
        pipeline_id = DEFAULT_PIPELINE_ID
        load_crm_copies(app, crm_copies, pipeline_id)
        window = "closed_from=2017-03-01&closed_to=2017-09-01"
    else:
        pipeline_id = BENCH_PIPELINE_ID
        generate(app, new_deals=deals - _count_deals(app))
        window = "closed_from=2023-03-01&closed_to=2023-09-01"
    _project(app, service)
    present = _count_deals(app, pipeline_id)
    trained = _train(app, pipeline_id) if train else None
    _refresh_scores(app)
    services = Services(
        app=app,
        tokens=TokenStore(app.db, "bench-token"),
        settings=app.settings,
        projections=service,
    )
    headers = {"Authorization": "Bearer bench-token"}
    base = f"/v1/pipelines/{pipeline_id}"
    moments = _moments(app, pipeline_id, 8)
    endpoints: dict[str, list[str]] = {
        "metrics": [f"{base}/metrics"],
        "metrics_window": [f"{base}/metrics?{window}&target=5000000"],
        "breakdown_industry": [f"{base}/metrics/breakdown?by=industry"],
        "breakdown_owner": [f"{base}/metrics/breakdown?by=owner"],
        "board": [f"{base}/board"],
        "deals_list": [f"/v1/deals?pipeline_id={pipeline_id}&status=open&limit=50"],
        # The dashboard's top-scored panel (issue 10: 28.8 s at a million deals before the
        # kept score parts).
        "deals_by_score": [f"/v1/deals?pipeline_id={pipeline_id}&sort=score&limit=10"],
        "metrics_as_of": [f"{base}/metrics?as_of={m}" for m in moments],
        "breakdown_as_of": [f"{base}/metrics/breakdown?by=industry&as_of={m}" for m in moments],
        "board_as_of": [f"{base}/board?as_of={m}" for m in moments],
    }
    results: dict[str, Any] = {"deals": present, "pipeline_id": pipeline_id, "as_of": moments}
    if crm_copies:
        results["crm_copies"] = crm_copies
    if trained is not None:
        results["trained"] = trained
    services = Services(
        app=app,
        tokens=TokenStore(app.db, "bench-token"),
        settings=app.settings,
        projections=service,
    )
    with TestClient(create_app(services)) as client:
        for name, urls in endpoints.items():
            turn = iter(range(10**9))

            def call(urls: list[str] = urls, turn: Any = turn) -> None:
                url = urls[next(turn) % len(urls)]  # as-of variants cycle through the moments
                response = client.get(url, headers=headers)
                if response.status_code != 200:
                    raise SystemExit(f"{url}: {response.status_code} {response.text[:300]}")

            results[name] = _latencies(call, repeat)
            print(
                f"{name:20s} p50 {results[name]['p50_ms']:8.1f} ms   p95 {results[name]['p95_ms']:8.1f} ms",
                flush=True,
            )
    if oracle:
        results["oracle"] = _oracle_latencies(app, pipeline_id, moments, max(3, repeat // 10))
    results["p95_ms"] = {
        k: v["p95_ms"] for k, v in results.items() if isinstance(v, dict) and "p95_ms" in v
    }
    _write(json_path, results)
    return 0


def _oracle_latencies(
    app: Any, pipeline_id: str, moments: list[str], repeat: int
) -> dict[str, dict[str, float]]:
    """The baseline of the same run: the scans the fast paths replaced (``fast=False``)."""
    from engine.domain.events import utcnow
    from projections.queries.board import board
    from projections.queries.common import Moment
    from projections.queries.metrics import breakdown, metrics
    from projections.readmodel.records import to_us

    def now() -> Moment:
        return Moment(to_us(utcnow()), historical=False)

    past = Moment(to_us(datetime.fromisoformat(moments[-1].replace("Z", "+00:00"))), True)
    calls: dict[str, Callable[[], Any]] = {
        "metrics": lambda: metrics(app, pipeline_id, now(), fast=False),
        "board": lambda: board(app, pipeline_id, now(), fast=False),
        "metrics_as_of": lambda: metrics(app, pipeline_id, past, fast=False),
        "breakdown_as_of": lambda: breakdown(app, pipeline_id, "industry", past, fast=False),
        "board_as_of": lambda: board(app, pipeline_id, past, fast=False),
    }
    out = {}
    for name, call in calls.items():
        out[name] = _latencies(call, repeat)
        print(
            f"oracle {name:13s} p50 {out[name]['p50_ms']:8.1f} ms   p95 {out[name]['p95_ms']:8.1f} ms",
            flush=True,
        )
    return out


def _write(path: str | None, result: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)
