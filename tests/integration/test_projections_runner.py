"""The runner: exactly-once under crashes and competing runners, the live paths (subscription on
PostgreSQL, polling on SQLite) equal a rebuild, and rebuilds are identical to live read models."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dealflow.bench.synthetic import BENCH_PIPELINE, BENCH_PIPELINE_ID, stream, to_command
from engine.application import DealflowApp
from engine.domain.pipeline import PipelineDefinition
from engine.persistence.settings import StoreSettings
from projections.readmodel.fold import BREAKDOWN_KEYS
from projections.readmodel.schema import (
    CLOSED_TABLE,
    CURRENT_TABLE,
    HISTORY_TABLE,
    KEYS_COUNTERS,
    KEYS_TABLE,
    PIPELINES_TABLE,
    STATS_COUNTERS,
    STATS_TABLE,
    STAYS_TABLE,
    T_KEYS_TABLE,
    VISITS_TABLE,
    WON_TABLE,
)
from projections.runtime import ProjectionsService

TABLES = {
    CURRENT_TABLE: "deal_uuid",
    HISTORY_TABLE: "deal_uuid, version",
    STAYS_TABLE: "deal_uuid, seq",
    PIPELINES_TABLE: "pipeline_id",
}


SUMMARIES = {
    STATS_TABLE: (["pipeline_id", "stage"], list(STATS_COUNTERS)),
    KEYS_TABLE: (["pipeline_id", "dim", "key_null", "key"], list(KEYS_COUNTERS)),
    VISITS_TABLE: (["pipeline_id", "visited", "ever_won"], ["n"]),
    WON_TABLE: (["pipeline_id", "bucket"], ["n"]),
    CLOSED_TABLE: (["pipeline_id", "day", "status", "dur_bucket"], ["n", "units", "dur_ms"]),
}


def summaries(app: DealflowApp) -> dict[str, dict[tuple[Any, ...], tuple[int, ...]]]:
    """The summary tables' rows, every one (neither a live table nor a rebuild keeps a key
    whose counters are all zero)."""
    out: dict[str, dict[tuple[Any, ...], tuple[int, ...]]] = {}
    for table, (keys, counters) in SUMMARIES.items():
        rows = app.db.fetchall(f"SELECT {', '.join(keys + counters)} FROM {table}")
        out[table] = {
            tuple(row[k] for k in keys): tuple(int(row[c]) for c in counters) for row in rows
        }
    return out


def recount(app: DealflowApp) -> dict[str, dict[tuple[Any, ...], tuple[int, ...]]]:
    """The summary tables recomputed in plain Python from the deal rows and the stage stays."""

    def ms(us: int) -> int:
        return us // 1000 if us >= 0 else -(-us // 1000)  # SQL's integer division truncates

    stats: dict[tuple[Any, ...], list[int]] = {}
    keys: dict[tuple[Any, ...], list[int]] = {}
    visits: dict[tuple[Any, ...], int] = {}
    won_buckets: dict[tuple[Any, ...], int] = {}
    closed: dict[tuple[Any, ...], list[int]] = {}
    won_deals: set[Any] = set()
    for stay in app.db.fetchall(f"SELECT * FROM {STAYS_TABLE} ORDER BY deal_uuid, seq"):
        if stay["exit"] == "won":
            won_deals.add(str(stay["deal_uuid"]))
    first_seen: set[tuple[Any, ...]] = set()
    first_advanced: set[tuple[Any, ...]] = set()
    for stay in app.db.fetchall(f"SELECT * FROM {STAYS_TABLE} ORDER BY deal_uuid, seq"):
        s = stats.setdefault((stay["pipeline_id"], stay["stage"]), [0] * len(STATS_COUNTERS))
        mark = (str(stay["deal_uuid"]), stay["stage"])
        if mark not in first_seen:
            first_seen.add(mark)
            s[10] += 1
        if stay["left_at"] is not None:
            s[12] += 1
            s[13] += ms(stay["left_at"] - stay["entered_at"])
            if stay["exit"] in ("forward", "won") and mark not in first_advanced:
                first_advanced.add(mark)
                s[11] += 1
    for d in app.db.fetchall(f"SELECT * FROM {CURRENT_TABLE}"):
        s = stats.setdefault((d["pipeline_id"], d["stage"]), [0] * len(STATS_COUNTERS))
        units = d["amount_units"] or 0
        s[0] += 1
        won = lost = 0
        if d["status"] == "open":
            s[1:6] = [
                s[1] + 1,
                s[2] + units,
                s[3] + ms(d["opened_at"]),
                s[4] + d["opened_at"] - 1000 * ms(d["opened_at"]),
                s[5] + d["flagged_stale"],
            ]
        elif d["status"] == "won":
            won = 1
            duration = d["closed_at"] - d["opened_at"]
            s[6], s[7], s[8] = s[6] + 1, s[7] + units, s[8] + ms(duration)
            bucket = (d["pipeline_id"], duration // 86_400_000_000)
            won_buckets[bucket] = won_buckets.get(bucket, 0) + 1
        else:
            lost = 1
            s[9] += 1
        if d["status"] != "open":
            duration = d["closed_at"] - d["opened_at"]
            day = d["closed_at"] // 86_400_000_000
            key = (d["pipeline_id"], day, d["status"], duration // 86_400_000_000 if won else 0)
            c = closed.setdefault(key, [0, 0, 0])
            c[0], c[1], c[2] = c[0] + 1, c[1] + units, c[2] + ms(duration)
        ever_won = int(str(d["deal_uuid"]) in won_deals)
        visit = (d["pipeline_id"], d["visited"], ever_won)
        visits[visit] = visits.get(visit, 0) + 1
        for dim in BREAKDOWN_KEYS:
            value = d[dim]
            k = keys.setdefault(
                (d["pipeline_id"], dim, int(value is None), value or ""), [0] * len(KEYS_COUNTERS)
            )
            won_ms = ms(d["closed_at"] - d["opened_at"]) if won else 0
            for i, add in enumerate(
                (1, int(d["status"] == "open"), won, lost, units if won else 0, won_ms)
            ):
                k[i] += add
    return {
        STATS_TABLE: {k: tuple(v) for k, v in stats.items() if any(v)},
        KEYS_TABLE: {k: tuple(v) for k, v in keys.items() if any(v)},
        VISITS_TABLE: {k: (v,) for k, v in visits.items() if v},
        WON_TABLE: {k: (v,) for k, v in won_buckets.items() if v},
        CLOSED_TABLE: {k: tuple(v) for k, v in closed.items()},
    }


def dump(app: DealflowApp) -> dict[str, Any]:
    """Every row of every read-model table, in key order, as plain tuples, and the summary
    tables (which must also equal a recount from the rows)."""
    tables: dict[str, Any] = {
        table: [
            tuple(str(v) for v in tuple(row))
            if not isinstance(row, dict)
            else tuple(str(v) for v in row.values())
            for row in app.db.fetchall(f"SELECT * FROM {table} ORDER BY {order}")
        ]
        for table, order in TABLES.items()
    }
    stored = summaries(app)
    assert stored == recount(app)
    tables.update(stored)
    return tables


@pytest.fixture
def app(store_settings: StoreSettings) -> Iterator[DealflowApp]:
    application = DealflowApp(store_settings)
    application.put_pipeline(
        BENCH_PIPELINE_ID, PipelineDefinition.model_validate(BENCH_PIPELINE), "test"
    )
    try:
        yield application
    finally:
        application.close()


def ingest(app: DealflowApp, deals: int, seed: int, prefix: str, chunk: int = 300) -> int:
    pairs = list(stream(deals, seed=seed, wave=25, prefix=prefix))
    for start in range(0, len(pairs), chunk):
        outcomes = app.ingest([to_command(d, b) for d, b in pairs[start : start + chunk]])
        assert all(o.status == "recorded" for o in outcomes)
    return len(pairs)


def test_live_runner_equals_a_rebuild(app: DealflowApp) -> None:
    """Events arrive while the runner follows the log (the subscription on PostgreSQL, polling on
    SQLite), in small batches of whatever arrived; a rebuild in big pages gives the same rows."""
    service = ProjectionsService(app, run=True)
    service.start()
    try:
        ingest(app, 60, seed=5, prefix="live", chunk=37)
        assert service.wait(app.max_position(), timeout=30)
        assert service.status()[0]["lag"] == 0
    finally:
        service.stop()
    live = dump(app)
    assert len(live[CURRENT_TABLE]) == 60
    service.rebuild()
    assert dump(app) == live


def test_a_summary_key_back_at_zero_is_deleted(app: DealflowApp) -> None:
    """A deal moves from one owner to another in a later batch: the first owner's breakdown
    keys (now and in business time, both changes on one day) come back to all zeros and are
    deleted, as a rebuild would never have written them."""
    service = ProjectionsService(app, run=False)
    opened = {"type": "opened", "pipeline_id": BENCH_PIPELINE_ID, "name": "Z", "owner": "ann"}
    app.ingest([to_command("zero-1", {**opened, "event_id": "z1", "occurred_at": _DAY + "10Z"})])
    service.catch_up()

    def owners(table: str) -> set[str]:
        return {r["key"] for r in app.db.fetchall(f"SELECT key FROM {table} WHERE dim = 'owner'")}

    assert owners(KEYS_TABLE) == owners(T_KEYS_TABLE) == {"ann"}
    changed = {"type": "updated", "owner": "bob", "event_id": "z2", "occurred_at": _DAY + "11Z"}
    app.ingest([to_command("zero-1", changed)])
    service.catch_up()
    assert owners(KEYS_TABLE) == owners(T_KEYS_TABLE) == {"bob"}


_DAY = "2026-01-05T"  # a past day (+ hour and zone)


def test_a_crash_mid_batch_and_a_restart_count_nothing_twice(
    app: DealflowApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(app, 50, seed=9, prefix="crash")
    reference = ProjectionsService(app, run=False)
    reference.catch_up()
    expected = dump(app)
    reference.view.reset()

    service = ProjectionsService(app, run=False)
    service.runner.page = 100
    view_class = type(service.view)
    original = view_class._write
    calls = {"n": 0}

    def crashing_write(self: Any, curs: Any, changes: Any) -> None:
        calls["n"] += 1
        original(self, curs, changes)  # the rows are written... then the process "dies"
        if calls["n"] == 3:
            raise RuntimeError("killed mid-batch")

    monkeypatch.setattr(view_class, "_write", crashing_write)
    with pytest.raises(RuntimeError):
        service.catch_up()
    assert service.position() > 0  # two batches committed, the third rolled back
    monkeypatch.setattr(view_class, "_write", original)
    restarted = ProjectionsService(app, run=False)
    restarted.catch_up()
    assert dump(app) == expected


def test_competing_runners_apply_each_batch_once(app: DealflowApp) -> None:
    ingest(app, 50, seed=11, prefix="race")
    reference = ProjectionsService(app, run=False)
    reference.catch_up()
    expected = dump(app)
    reference.view.reset()
    runners = [ProjectionsService(app, run=False) for _ in range(3)]
    for service in runners:
        service.runner.page = 64
    errors: list[BaseException] = []

    def work(service: ProjectionsService) -> None:
        try:
            service.catch_up()
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=work, args=(s,)) for s in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # SQLite may refuse a competing writer outright ("database is locked"); nothing half-done stays.
    runners[0].catch_up()
    assert dump(app) == expected
    assert all("locked" in str(e) for e in errors), errors


def test_rebuild_by_name_and_status(app: DealflowApp) -> None:
    ingest(app, 10, seed=1, prefix="named")
    service = ProjectionsService(app, run=False)
    assert service.status()[0]["lag"] == app.max_position()
    service.catch_up()
    before = dump(app)
    service.rebuild("deals")
    assert dump(app) == before
    assert service.status()[0]["lag"] == 0
    assert service.wait(app.max_position(), timeout=0.1)
    assert not service.wait(app.max_position() + 1, timeout=0.1)


def test_stage_occupancy_does_not_wait_when_the_projections_run_elsewhere(
    app: DealflowApp,
) -> None:
    import time

    ingest(app, 30, seed=4, prefix="occ")
    elsewhere = ProjectionsService(app, run=False)
    started = time.monotonic()
    assert elsewhere.stage_occupancy(BENCH_PIPELINE_ID) == {}  # the view as it stands: empty
    assert time.monotonic() - started < 1.0
    here = ProjectionsService(app, run=True)  # not started: the guard folds the log itself
    occupied = here.stage_occupancy(BENCH_PIPELINE_ID)
    assert here.position() == app.max_position()
    open_rows = app.db.fetchall(
        f"SELECT stage, COUNT(*) AS n FROM {CURRENT_TABLE} WHERE status = 'open' GROUP BY stage"
    )
    assert occupied == {r["stage"]: int(r["n"]) for r in open_rows} and occupied
    assert elsewhere.stage_occupancy(BENCH_PIPELINE_ID) == occupied


def test_audit_checkpoints_are_written_beside_the_projection_not_in_its_way(
    app: DealflowApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service keeps the audit checkpoints coming on a thread of its own: a slow checkpoint
    does not hold the read models back, and checkpoints keep being written."""
    from engine.audit import checkpoints
    from projections import runtime

    sealing = threading.Event()
    release = threading.Event()
    real = checkpoints.maybe_write_checkpoint

    def slow_checkpoint(application: Any, **kwargs: Any) -> Any:
        sealing.set()
        release.wait(20)  # a long seal
        return real(application, every_events=1)

    monkeypatch.setattr(runtime, "CHECKPOINT_CHECK_SECONDS", 0.05)
    monkeypatch.setattr(checkpoints, "maybe_write_checkpoint", slow_checkpoint)
    service = ProjectionsService(app, run=True)
    service.start()
    try:
        ingest(app, 5, seed=7, prefix="cp", chunk=10)
        assert sealing.wait(10)
        # While the checkpoint is still sealing, new events reach the read models.
        ingest(app, 5, seed=8, prefix="cp2", chunk=10)
        assert service.wait(app.max_position(), timeout=10)
        assert not release.is_set()
        release.set()
        deadline = time.monotonic() + 10
        while checkpoints.latest_checkpoint(app) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert checkpoints.latest_checkpoint(app) is not None
    finally:
        release.set()
        service.stop()
