"""`dealflow serve --workers N`: N processes answering on one port, writes through any of them
landing once, SIGTERM stopping them all; SQLite refused; `dealflow bench http` runs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from dealflow.bench.served import Conn
from tests.live import dealflow_command, dealflow_env, free_port, run_dealflow, wait_healthy

TOKEN = "e2e-workers-secret"


async def _connections_by_worker(port: int, want: int) -> dict[str, Conn]:
    """A keep-alive connection to each of ``want`` workers (a connection stays with the worker
    that accepted it; /healthz names that worker in X-Dealflow-Worker)."""
    found: dict[str, Conn] = {}
    deadline = time.monotonic() + 60
    while len(found) < want:
        assert time.monotonic() < deadline, f"only workers {sorted(found)} answered"
        conns = [await Conn.open(port, TOKEN) for _ in range(8)]
        answers = await asyncio.gather(*(c.request("GET", "/healthz") for c in conns))
        for conn, (status, _, headers) in zip(conns, answers, strict=True):
            pid = headers.get("x-dealflow-worker")
            if status == 200 and pid and pid not in found:
                found[pid] = conn
            else:
                conn.close()
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_two_workers_share_the_port_write_once_and_stop_on_sigterm(
    pg_url: str, tmp_path: Path
) -> None:
    env = dealflow_env(tmp_path / "home", pg_url, DEALFLOW_BOOTSTRAP_TOKEN=TOKEN)
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        serve = subprocess.Popen(
            [*dealflow_command(), "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", serve, log=log)

        async def drive() -> dict[str, Conn]:
            conns = await _connections_by_worker(port, 2)
            a, b = conns.values()
            opened = {"type": "opened", "event_id": "w-open", "pipeline_id": "default"}
            first = await a.request("POST", "/v1/deals/w-1/events", opened | {"name": "W"})
            again = await b.request("POST", "/v1/deals/w-1/events", opened | {"name": "W"})
            assert (first[0], again[0]) == (201, 200), (first, again)
            assert again[2].get("idempotent-replay") == "true"
            events = [
                {"type": "activity_logged", "event_id": f"w-{n}", "activity": "call"}
                for n in range(20)
            ]
            for n, event in enumerate(events):  # alternate workers, then resend via the other
                status, body, _ = await (a, b)[n % 2].request("POST", "/v1/deals/w-1/events", event)
                assert status == 201, body
            for n, event in enumerate(events):
                status, body, _ = await (b, a)[n % 2].request("POST", "/v1/deals/w-1/events", event)
                assert status == 200, body
            status, body, _ = await a.request("GET", "/v1/deals/w-1")
            assert status == 200 and json.loads(body)["version"] == 21
            # TCP_NODELAY on the workers' connections (dealflow.server.SettingsH11Protocol):
            # without it every answer waits ~40 ms for the client's delayed ACK.
            times = []
            for _ in range(21):
                started = time.perf_counter()
                await b.request("GET", "/healthz")
                times.append(time.perf_counter() - started)
            assert sorted(times)[10] < 0.035, times
            return conns

        conns = asyncio.run(drive())
        pids = [int(pid) for pid in conns]
        assert serve.pid not in pids and len(set(pids)) == 2
        assert all(_alive(pid) for pid in pids)
    finally:
        serve.terminate()
        code = serve.wait(30)
    assert code == 0, log.read_text()
    assert not any(_alive(pid) for pid in pids), log.read_text()


def test_workers_on_sqlite_are_refused_in_one_line(tmp_path: Path) -> None:
    env = dealflow_env(tmp_path / "home", DEALFLOW_BOOTSTRAP_TOKEN=TOKEN)
    done = run_dealflow(env, "serve", "--port", str(free_port()), "--workers", "2", timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "needs PostgreSQL" in done.stderr, done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--clients", "2", "--workers", "2", "--seconds", "1"),
        ("--workers", "1", "--find-max", "--rate", "20", "--steps", "2", "--step-seconds", "1"),
    ],
    ids=["closed-loop", "find-max"],
)
def test_bench_http_prints_figures(pg_url: str, tmp_path: Path, args: tuple[str, ...]) -> None:
    env = dealflow_env(tmp_path / "home", pg_url)
    figures_file = tmp_path / "figures.json"
    done = run_dealflow(env, "bench", "http", *args, "--json", str(figures_file), timeout=120)
    assert done.returncode == 0, done.stderr
    figures = json.loads(figures_file.read_text())
    if "--find-max" in args:
        assert "max sustained" in done.stdout
        assert [s["offered_per_s"] for s in figures["runs"]["1"][0]["steps"]][:1] == [20.0]
    else:
        assert set(figures["runs"]) == {"1", "2"} and "ratio" in done.stdout
        assert all(r["events"] > 0 and r["p99_ms"] > 0 for [r] in figures["runs"].values())
        assert figures["ratio_vs_1_worker"] > 0
