"""A served app (both stores) with the read models running, for the revenue features."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dealflow.http import create_app
from dealflow.runtime import build_services
from engine.persistence.settings import StoreSettings
from engine.services import Services
from tests.conftest import AUTH, TEST_TOKEN


@pytest.fixture
def served(store_settings: StoreSettings) -> Iterator[tuple[TestClient, Services]]:
    services = build_services(store_settings, bootstrap_token=TEST_TOKEN, run_projections=True)
    with TestClient(create_app(services)) as test_client:
        test_client.headers.update(AUTH)
        yield test_client, services
    services.close()


@pytest.fixture
def client(served: tuple[TestClient, Services]) -> TestClient:
    return served[0]


def post_events(client: TestClient, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Post a batch, wait until the read models have it, return the per-event results."""
    response = client.post("/v1/events", json={"events": events})
    assert response.status_code == 200, response.text
    body = response.json()
    waited = client.get(f"/v1/projections/wait?position={body['position']}&timeout=30").json()
    assert waited["reached"]
    results: list[dict[str, Any]] = body["results"]
    return results
