"""Read queries under pool pressure (issue 9, defect 3): a query used to hold its snapshot
connection while asking the pool for a second one (the pipeline definition), so with every
connection taken each waited for the others; the answer was a 500. One pooled connection is
enough now, for concurrent requests too."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engine.persistence.settings import StoreSettings
from tests.hardening.conftest import AUTH, live_client

pytestmark = pytest.mark.postgres

PATHS = [
    "/v1/pipelines/default/metrics",
    "/v1/pipelines/default/metrics?as_of=2020-01-01",
    "/v1/pipelines/default/board",
    "/v1/deals",
    "/v1/deals?as_of=2020-01-01",
    "/v1/pipelines/default/metrics/breakdown?by=industry",
]


def test_reads_with_a_single_pooled_connection(pg_url: str, tmp_path: Path) -> None:
    settings = StoreSettings(database_url=pg_url, home=tmp_path, pool_size=1, max_overflow=0)
    with live_client(settings) as (client, _):
        opened = {"type": "opened", "event_id": "o1", "pipeline_id": "default", "name": "D"}
        assert client.post("/v1/deals/d1/events", json=opened, headers=AUTH).status_code == 201
        answers: list[tuple[str, int]] = []

        def read(path: str) -> None:
            answers.append((path, client.get(path, headers=AUTH).status_code))

        threads = [threading.Thread(target=read, args=(p,)) for p in PATHS * 3]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(answers) == sorted((p, 200) for p in PATHS * 3), answers
