"""Helpers of `dealflow bench workflows`: more worker processes on the bench's task queue, RSS.

``--workers N`` runs the bench's own worker (with the bridge) plus N - 1 ``dealflow worker
--no-bridge`` processes on the same task queue, store and Temporal server; their RSS is read
from /proc while they run.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process (this one by default), in MB; 0 when it cannot be read."""
    path = f"/proc/{pid or 'self'}/status"
    with contextlib.suppress(OSError), open(path, encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds() -> float:
    """CPU time (user + system) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with contextlib.suppress(OSError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return max(peak, rss_mb())


@contextlib.contextmanager
def extra_workers(
    count: int,
    *,
    address: str,
    task_queue: str,
    database_url: str | None,
    home: Path,
    max_concurrent_activities: int = 64,
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` worker processes (no bridge) on ``task_queue``; stopped (SIGTERM) at the end."""
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "DEALFLOW_TASK_QUEUE": task_queue,
        "DEALFLOW_HOME": str(home),
    }
    env.pop("DATABASE_URL", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    command = [sys.executable, "-m", "dealflow", "worker", "--no-bridge", "--log-level", "warning"]
    command += ["--max-concurrent-activities", str(max_concurrent_activities)]
    processes = [subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL) for _ in range(count)]
    try:
        time.sleep(4.0 if count else 0)  # imports and connecting: polling before the load
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"bench: an extra worker exited with {process.returncode}")
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
