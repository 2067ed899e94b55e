"""`dealflow bench project --live`: the lag between a write's commit and the moment the live
projection has processed it, while another process ingests at full speed."""

from __future__ import annotations

import statistics
import time
from typing import Any

from dealflow.bench.projections import _services, _write
from dealflow.bench.synthetic import stream, to_command


def _ingest_for(url: str, seconds: float, batch: int, seed: int, out: Any) -> None:
    """Child process of ``bench project --live``: ingest synthetic deals at full speed for
    ``seconds``; after each batch commits, report (last position, wall time)."""
    from engine.application import DealflowApp
    from engine.persistence.settings import StoreSettings

    app = DealflowApp(StoreSettings.from_env({"DATABASE_URL": url}))
    deadline = time.monotonic() + seconds
    pending: list[Any] = []
    prefix = f"live{int(time.time())}"
    try:
        for deal_id, body in stream(10**9, seed=seed, prefix=prefix):
            pending.append(to_command(deal_id, body))
            if len(pending) < batch:
                continue
            outcomes = app.ingest(pending)
            committed = time.time()
            out.put((max(o.position or 0 for o in outcomes), committed, len(pending)))
            pending = []
            if time.monotonic() >= deadline:
                break
    finally:
        out.put(None)
        app.close()


def bench_live(seconds: float, batch: int, json_path: str | None) -> int:
    """Lag between a write's commit and the moment the live projection has processed its
    position, while another process ingests at full speed (the projection runs here, on its
    live subscription, as ``dealflow projections run`` does)."""
    import multiprocessing

    app, service = _services()
    service.catch_up()
    processed: list[tuple[int, float]] = []
    runner = service.runner
    notify = runner.on_commit

    def on_commit(position: int) -> None:
        processed.append((position, time.time()))
        if notify is not None:
            notify(position)

    runner.on_commit = on_commit
    runner.start()
    context = multiprocessing.get_context("spawn")
    queue: Any = context.Queue()
    child = context.Process(
        target=_ingest_for,
        args=(str(app.settings.database_url), seconds, batch, int(time.time()) % 1000, queue),
    )
    child.start()
    writes: list[tuple[int, float, int]] = []
    while True:
        item = queue.get()
        if item is None:
            break
        writes.append(item)
    child.join(30)
    head = app.max_position()
    caught_up = service.wait(head, timeout=120)
    runner.stop()
    lags = []
    marks = sorted(processed)
    import bisect

    for position, committed, _ in writes:
        i = bisect.bisect_left(marks, (position, 0.0))
        if i < len(marks):
            lags.append(max(0.0, marks[i][1] - committed) * 1000)
    lags.sort()
    events = sum(n for _, _, n in writes)
    span = writes[-1][1] - writes[0][1] if len(writes) > 1 else 0.0
    result = {
        "seconds": seconds,
        "batch": batch,
        "writes": len(writes),
        "events": events,
        "ingest_events_per_s": round(events / span, 1) if span else None,
        "caught_up": caught_up,
        "lag_p50_ms": round(statistics.median(lags), 1) if lags else None,
        "lag_p95_ms": round(lags[max(0, int(len(lags) * 0.95) - 1)], 1) if lags else None,
        "lag_max_ms": round(lags[-1], 1) if lags else None,
        "projection_batches": len(processed),
    }
    print(
        f"live: {len(writes)} writes of {batch} events ({result['ingest_events_per_s']} events/s);"
        f" lag p50 {result['lag_p50_ms']} ms, p95 {result['lag_p95_ms']} ms,"
        f" max {result['lag_max_ms']} ms; caught up: {caught_up}"
    )
    _write(json_path, result)
    app.close()
    return 0
