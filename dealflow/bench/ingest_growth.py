"""`dealflow bench ingest --preload N`: ingest into a store that already holds N events, with
the projections running as ``serve`` runs them, against the empty-store figures of the same run.

In one scratch database, the same event mix (``--events`` events, the generator of
:mod:`dealflow.bench.ingest_mix`, new deals each time) is ingested through ``DealflowApp.ingest``
in three conditions, first into the empty store, then after the preload:

- ``bare``: no projection running (the writer alone);
- ``in-process``: the projection runner on a thread of the writer's process, as ``dealflow
  serve`` runs it (it shares the writer's interpreter lock and cores);
- ``own-process``: ``dealflow projections run`` in a second process, as ``serve --workers N``
  or a separate projections deployment runs it (it shares only the cores).

The preload writes N events through the same write path (5,000-event batches, no projection
running), then brings the read models to the head with the parallel rebuild and runs
``VACUUM (ANALYZE)``, as a server's autovacuum would. Each measured run reports the writer's
rate and CPU, where its wall time went (idempotency key lookups, deal loads, the INSERT/COPY
transaction and, inside it, the wait for the events table lock; the rest, "python", is
validating and deciding)
and how long the projection took to catch up once the writer stopped. Relation sizes are
printed for both store states.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dealflow.bench.ingest_mix import batches

CONDITIONS = ("bare", "in-process", "own-process")
PRELOAD_BATCH = 5000


class Timers:
    """Wall time spent in the recorder calls the write path makes, wrapped on one recorder."""

    def __init__(self, recorder: Any) -> None:
        self.spent: dict[str, float] = {"keys": 0.0, "load": 0.0, "write": 0.0, "lock": 0.0}
        for name, key in (
            ("select_idempotency", "keys"),
            ("select_events_for_many", "load"),
            ("insert_events", "write"),
            ("_lock_table", "lock"),
        ):
            setattr(recorder, name, self._timed(key, getattr(recorder, name)))

    def _timed(self, key: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.spent[key] += time.perf_counter() - started

        return timed

    def reset(self) -> None:
        for key in self.spent:
            self.spent[key] = 0.0


def _ingest(app: Any, count: int, batch: int, prefix: str) -> tuple[int, float, float]:
    """(events recorded, wall seconds, writer CPU seconds) for ``count`` events of new deals."""
    from engine.api.helpers import to_command

    recorded = 0
    started, cpu = time.perf_counter(), time.process_time()
    for chunk in batches(count, batch, prefix=prefix):
        commands = [to_command(item["deal_id"], item, "bench") for item in chunk]
        recorded += sum(1 for o in app.ingest(commands) if o.status == "recorded")
    return recorded, time.perf_counter() - started, time.process_time() - cpu


def _projections_process(url: str) -> subprocess.Popen[bytes]:
    """``dealflow projections run`` on the scratch database, as a deployment runs it."""
    env = {**os.environ, "DATABASE_URL": url}
    env.pop("DEALFLOW_METRICS_PORT", None)  # no ops port: several runs may overlap
    return subprocess.Popen(
        [sys.executable, "-m", "dealflow", "projections", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for(service: Any, position: int, timeout: float) -> float | None:
    """Seconds until the read models (as the tracking table says) reach ``position``."""
    started = time.perf_counter()
    while service.position() < position:
        if time.perf_counter() - started > timeout:
            return None
        time.sleep(0.05)
    return time.perf_counter() - started


def _measure(
    app: Any, service: Any, timers: Timers, condition: str, args: argparse.Namespace, label: str
) -> dict[str, Any]:
    """One measured run of ``args.events`` events in ``condition``."""
    url = str(app.settings.database_url)
    child: subprocess.Popen[bytes] | None = None
    if condition == "in-process":
        service.runner.start()
    elif condition == "own-process":
        child = _projections_process(url)
    # Whatever runs the projection starts at the head: only this run's events are behind. On
    # a grown store that may take minutes: the previous run's events, and the first audit
    # checkpoint over the preload (the projections process writes one every 10,000 events).
    if condition != "bare":
        waited = _wait_for(service, app.max_position(), 1800)
        if waited is None:
            raise RuntimeError(f"the projection did not reach the head before the {label} run")
        print(f"  ({condition}: the projection reached the head in {waited:.0f} s)", flush=True)
    timers.reset()
    recorded, seconds, cpu = _ingest(app, args.events, args.batch, prefix=f"{label}-{condition}")
    head = app.max_position()
    behind = max(head - service.position(), 0)
    drained = 0.0
    if condition != "bare":
        drained_in = _wait_for(service, head, 600)
        if drained_in is None:
            raise RuntimeError(f"the projection did not catch up after the {label} run")
        drained = drained_in
    if condition == "in-process":
        service.runner.stop()
    if child is not None:
        child.send_signal(signal.SIGTERM)
        child.wait(60)
    spent = dict(timers.spent)
    python = seconds - spent["keys"] - spent["load"] - spent["write"]
    return {
        "condition": condition,
        "store": label,
        "recorded": recorded,
        "seconds": seconds,
        "events_per_s": args.events / seconds,
        "writer_cpu_us_per_event": cpu / args.events * 1e6,
        "keys_s": spent["keys"],
        "load_s": spent["load"],
        "write_s": spent["write"],
        "lock_wait_s": spent["lock"],
        "python_s": python,
        "projection_behind_at_end": behind,
        "projection_drain_s": drained,
        "sustained_events_per_s": args.events / (seconds + drained),
    }


def _sizes(app: Any) -> dict[str, int]:
    """Bytes of the events table, its indexes, the idempotency keys and the read models."""
    rows = app.db.fetchall(
        "SELECT c.relname AS name, pg_table_size(c.oid) AS heap, pg_indexes_size(c.oid) AS idx"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'r' AND n.nspname = current_schema()"
    )
    sizes = {"events": 0, "events_indexes": 0, "keys": 0, "keys_indexes": 0, "read_models": 0}
    for row in rows:
        if row["name"] == app.db.events_table:
            sizes["events"] += int(row["heap"])
            sizes["events_indexes"] += int(row["idx"])
        elif row["name"] == "dealflow_idempotency":
            sizes["keys"] += int(row["heap"])
            sizes["keys_indexes"] += int(row["idx"])
        elif row["name"].startswith("rm_"):
            sizes["read_models"] += int(row["heap"]) + int(row["idx"])
    return sizes


def _preload(app: Any, service: Any, count: int) -> dict[str, float]:
    started = time.perf_counter()
    recorded, seconds, _ = _ingest(app, count, PRELOAD_BATCH, prefix="preload")
    print(
        f"preload           {recorded:>12,} events in {seconds:.0f} s ({recorded / seconds:,.0f}/s)",
        flush=True,
    )
    rebuild_started = time.perf_counter()
    service.rebuild(workers=2)
    rebuilt = time.perf_counter() - rebuild_started
    print(f"read models       rebuilt in {rebuilt:.0f} s (parallel, 2 workers)", flush=True)
    vacuum_started = time.perf_counter()
    _vacuum(str(app.settings.database_url))
    vacuumed = time.perf_counter() - vacuum_started
    print(f"vacuum (analyze)  {vacuumed:.0f} s", flush=True)
    return {
        "preload_seconds": seconds,
        "preload_events_per_s": recorded / seconds,
        "rebuild_seconds": rebuilt,
        "vacuum_seconds": vacuumed,
        "preload_total_seconds": time.perf_counter() - started,
    }


def _vacuum(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")


def _row(item: dict[str, Any], empty: dict[str, Any] | None) -> str:
    ratio = f"{item['events_per_s'] / empty['events_per_s']:.2f}" if empty else "  - "
    return (
        f"{item['store']:<6} {item['condition']:<12} {item['events_per_s']:>8,.0f}/s {ratio:>5}"
        f" {item['sustained_events_per_s']:>8,.0f}/s {item['writer_cpu_us_per_event']:>6.0f} µs"
        f" | keys {item['keys_s']:5.1f} load {item['load_s']:5.1f} write {item['write_s']:5.1f}"
        f" (lock {item['lock_wait_s']:4.1f}) python {item['python_s']:5.1f} s"
        f" | behind {item['projection_behind_at_end']:>7,} drain {item['projection_drain_s']:5.1f} s"
    )


def run_growth(database_url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Measure every condition on the empty store, preload, measure again; print and return."""
    from engine.application import DealflowApp
    from engine.persistence.settings import StoreSettings
    from projections.runtime import ProjectionsService

    app = DealflowApp(StoreSettings(database_url=database_url, home=Path(".")))
    app.pipeline_ref("default")
    app.pipeline_ref("post-purchase")
    service = ProjectionsService(app, run=True)
    service.catch_up()
    timers = Timers(app.recorder)
    result: dict[str, Any] = {"events": args.events, "batch": args.batch, "preload": args.preload}
    runs: list[dict[str, Any]] = []
    print(
        "store  condition      writer  ratio sustained  CPU/ev | where the writer's wall time went"
        " | projection after the writer stopped",
        flush=True,
    )
    empty_by_condition: dict[str, dict[str, Any]] = {}
    result["sizes_empty"] = _sizes(app)
    for condition in CONDITIONS:
        item = _measure(app, service, timers, condition, args, "empty")
        empty_by_condition[condition] = item
        runs.append(item)
        print(_row(item, None), flush=True)
    result.update(_preload(app, service, args.preload))
    result["sizes_grown"] = _sizes(app)
    for condition in CONDITIONS:
        item = _measure(app, service, timers, condition, args, "grown")
        item["ratio_vs_empty"] = (
            item["events_per_s"] / empty_by_condition[condition]["events_per_s"]
        )
        item["sustained_ratio_vs_empty"] = (
            item["sustained_events_per_s"] / empty_by_condition[condition]["sustained_events_per_s"]
        )
        runs.append(item)
        print(_row(item, empty_by_condition[condition]), flush=True)
    bare = empty_by_condition["bare"]["events_per_s"]
    for item in runs:
        item["ratio_vs_empty_bare"] = item["events_per_s"] / bare
    result["runs"] = runs
    for state in ("empty", "grown"):
        sizes = result[f"sizes_{state}"]
        print(
            f"sizes ({state}): events {sizes['events'] / 2**20:,.0f} MiB + indexes"
            f" {sizes['events_indexes'] / 2**20:,.0f} MiB; idempotency keys"
            f" {sizes['keys'] / 2**20:,.0f} MiB + index {sizes['keys_indexes'] / 2**20:,.0f} MiB;"
            f" read models {sizes['read_models'] / 2**20:,.0f} MiB",
            flush=True,
        )
    print(f"load average at the end {os.getloadavg()}", flush=True)
    app.close()
    return result
