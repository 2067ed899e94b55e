"""CPU time of the processes a served bench runs, read from /proc (Linux; elsewhere: nothing).

Where the machine's cores go while a bench writes through ``dealflow serve``: the server
process (and its API workers), each of the server's threads (the in-process projection runner
is one of them), the PostgreSQL backends connected to the bench's database, the bench's own
client, and the whole machine (busy seconds of all cores, from /proc/stat)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROC = Path("/proc")
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(path: Path) -> list[str] | None:
    """The fields of a /proc stat file after the command name (which may hold spaces)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def process_cpu(pid: int) -> float:
    """User + system seconds of one process (all its threads), 0 once it is gone."""
    fields = _stat(PROC / str(pid) / "stat")
    return (int(fields[11]) + int(fields[12])) / TICK if fields else 0.0


def thread_cpu(pid: int) -> dict[int, float]:
    """User + system seconds of each thread of a process, by thread id."""
    out: dict[int, float] = {}
    for task in (PROC / str(pid) / "task").glob("*"):
        fields = _stat(task / "stat")
        if fields:
            out[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def children(pid: int) -> list[int]:
    """The direct children of a process (uvicorn's API workers under the supervisor)."""
    found = []
    for entry in PROC.glob("[0-9]*"):
        fields = _stat(entry / "stat")
        if fields and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def backends_cpu(database: str) -> float:
    """User + system seconds of the live PostgreSQL backends connected to ``database`` (their
    process title names it; backends that have exited are not counted)."""
    total = 0.0
    needle = f" {database} ".encode()
    for entry in PROC.glob("[0-9]*"):
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if title.startswith(b"postgres:") and needle in title:
            total += process_cpu(int(entry.name))
    return total


def machine_busy() -> float:
    """Busy seconds of all cores since boot (everything but idle and iowait)."""
    try:
        first = (PROC / "stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(x) for x in first]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / TICK


def sample(server_pid: int, database: str) -> dict[str, float]:
    """One cumulative sample; two samples' difference is a window's CPU seconds."""
    workers = children(server_pid)
    return {
        "server": process_cpu(server_pid),
        "api_workers": sum(process_cpu(p) for p in workers),
        "postgres": backends_cpu(database),
        "client": process_cpu(os.getpid()),
        "machine": machine_busy(),
    }


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before.get(k, 0.0), 2) for k in after}


def thread_names(pid: int) -> dict[int, str]:
    """Python's names of a process's threads by thread id, from ``py-spy dump`` when py-spy is
    installed (Python 3.11 does not give them to the OS); empty otherwise."""
    import re
    import shutil
    import subprocess

    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not spy:
        return {}
    try:
        dump = subprocess.run(
            [spy, "dump", "--nonblocking", "--pid", str(pid)],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {int(t): name for t, name in re.findall(r'^Thread (\d+) \(\w+\): "(.*)"', dump, re.M)}


def by_name(seconds: dict[int, float], names: dict[int, str]) -> dict[str, float]:
    """Thread CPU seconds summed by thread name (the pool's worker threads share one), the
    busiest first; threads without a known name keep their id."""
    out: dict[str, float] = {}
    for tid, value in seconds.items():
        name = names.get(tid, str(tid))
        out[name] = round(out.get(name, 0.0) + value, 2)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
