"""Fixtures of the fault tests: a PostgreSQL cluster of their own (so that stopping it never
touches the shared server), and the Temporal CLI check."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.live import free_port

PG_VERSION = "15"


@dataclass
class OwnPostgres:
    """A throwaway cluster (``pg_createcluster``), trust auth, on a port of its own."""

    name: str
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, self.name, *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        self._ctl("start")

    def stop_immediately(self) -> None:
        """``-m immediate``: every backend dies at once, nothing is shut down cleanly."""
        self._ctl("stop", "-m", "immediate")


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    if shutil.which("pg_createcluster") is None or os.geteuid() != 0:
        pytest.skip("needs Debian's pg_createcluster, run as root")
    cluster = OwnPostgres(f"dffaults{uuid.uuid4().hex[:8]}", free_port())
    subprocess.run(
        [
            "pg_createcluster",
            PG_VERSION,
            cluster.name,
            "--port",
            str(cluster.port),
            "--",
            "--auth=trust",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        cluster.start()
        yield cluster
    finally:
        subprocess.run(
            ["pg_dropcluster", "--stop", PG_VERSION, cluster.name],
            capture_output=True,
            timeout=120,
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long crash run only when asked for: ``-m chaos_long``."""
    if "chaos_long" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="long chaos run: select it with -m chaos_long")
    for item in items:
        if "chaos_long" in item.keywords:
            item.add_marker(skip)
