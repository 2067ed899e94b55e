"""Tokens that can be limited: expiry, a rate limit, last use, unique names that cannot imitate
dealflow's own actors, and the actor on every event taken from the token (both stores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.persistence.settings import StoreSettings
from engine.services import Services
from tests.conftest import AUTH
from tests.hardening.conftest import live_client


@pytest.fixture
def api(store_settings: StoreSettings) -> Iterator[tuple[Any, Services]]:
    with live_client(store_settings) as pair:
        yield pair


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _make(client: Any, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/tokens", headers=AUTH, json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_an_expired_token_is_refused_with_www_authenticate(api: tuple[Any, Services]) -> None:
    client, _ = api
    made = _make(client, name="short-lived", scopes=["read"], expires_in="1s")
    assert made["expires_at"] is not None and made["active"] is True
    assert client.get("/v1/projections", headers=_bearer(made["token"])).status_code != 401
    time.sleep(1.3)
    refused = client.get("/v1/deals", headers=_bearer(made["token"]))
    assert refused.status_code == 401
    assert refused.json()["error"] == "unauthorized"
    assert refused.headers["www-authenticate"] == 'Bearer realm="dealflow", error="invalid_token"'
    listed = {t["name"]: t for t in client.get("/v1/tokens", headers=AUTH).json()["tokens"]}
    assert listed["short-lived"]["active"] is False
    missing = client.get("/v1/deals")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="dealflow"'


def test_a_rate_limited_token_gets_429_with_retry_after(api: tuple[Any, Services]) -> None:
    client, _ = api
    made = _make(client, name="chatty", scopes=["read"], rate_limit_per_minute=3)
    assert made["rate_limit_per_minute"] == 3
    statuses = [
        client.get("/v1/deals", headers=_bearer(made["token"])).status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 200]
    limited = client.get("/v1/deals", headers=_bearer(made["token"]))
    assert limited.status_code == 429
    assert limited.json()["error"] == "rate_limited"
    # A bucket of 3 a minute refills one request every 20 s.
    assert 1 <= int(limited.headers["retry-after"]) <= 20
    # Other tokens are not affected.
    assert client.get("/v1/deals", headers=AUTH).status_code == 200


def test_every_use_updates_last_used(api: tuple[Any, Services]) -> None:
    client, _ = api
    made = _make(client, name="reader", scopes=["read"])
    listed = {t["name"]: t for t in client.get("/v1/tokens", headers=AUTH).json()["tokens"]}
    assert listed["reader"]["last_used_at"] is None
    assert client.get("/v1/deals", headers=_bearer(made["token"])).status_code == 200
    listed = {t["name"]: t for t in client.get("/v1/tokens", headers=AUTH).json()["tokens"]}
    first = listed["reader"]["last_used_at"]
    assert first is not None
    time.sleep(1.1)
    assert client.get("/v1/deals", headers=_bearer(made["token"])).status_code == 200
    listed = {t["name"]: t for t in client.get("/v1/tokens", headers=AUTH).json()["tokens"]}
    assert listed["reader"]["last_used_at"] > first


@pytest.mark.parametrize(
    "name",
    [
        "bootstrap",
        "dealflow",
        "dealflow:automation",
        "Dealflow-bot",
        "import:crm",
        "a b",
        "",
        "x" * 101,
    ],
)
def test_token_names_cannot_imitate_system_actors(api: tuple[Any, Services], name: str) -> None:
    client, services = api
    before = services.tokens.list()
    response = client.post("/v1/tokens", headers=AUTH, json={"name": name, "scopes": ["read"]})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error"
    assert services.tokens.list() == before


def test_token_names_are_unique_forever(api: tuple[Any, Services]) -> None:
    client, _ = api
    _make(client, name="crm-sync", scopes=["ingest"])
    again = client.post("/v1/tokens", headers=AUTH, json={"name": "crm-sync", "scopes": ["read"]})
    assert again.status_code == 422 and "exists already" in again.json()["message"]
    assert client.delete("/v1/tokens/crm-sync", headers=AUTH).status_code == 200
    reused = client.post("/v1/tokens", headers=AUTH, json={"name": "crm-sync", "scopes": ["read"]})
    assert reused.status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        {"name": "t1", "scopes": ["read"], "expires_in": "soon"},
        {"name": "t1", "scopes": ["read"], "expires_in": "0d"},
        {"name": "t1", "scopes": ["read"], "rate_limit_per_minute": 0},
        {"name": "t1", "scopes": ["read"], "rate_limit_per_minute": "60"},
        {"name": "t1", "scopes": ["write"]},
        {"name": "t1", "scopes": []},
        {"name": "t1", "scopes": ["read"], "extra": 1},
    ],
)
def test_bad_token_requests_change_nothing(api: tuple[Any, Services], body: dict[str, Any]) -> None:
    client, services = api
    response = client.post("/v1/tokens", headers=AUTH, json=body)
    assert response.status_code == 422, response.text
    assert [t["name"] for t in services.tokens.list()] == []


def test_the_actor_is_always_the_token_never_the_body(api: tuple[Any, Services]) -> None:
    client, services = api
    made = _make(client, name="crm-sync", scopes=["ingest", "read"])
    opened = client.post(
        "/v1/deals/acme/events",
        headers=_bearer(made["token"]),
        json={"type": "opened", "event_id": "o-1", "pipeline_id": "default", "name": "Acme"},
    )
    assert opened.status_code == 201, opened.text
    forged = client.post(
        "/v1/deals/acme/events",
        headers=_bearer(made["token"]),
        json={
            "type": "fact_recorded",
            "event_id": "f-1",
            "fact": "need",
            "value": True,
            "actor": "mallory",
        },
    )
    assert forged.status_code == 422 and forged.json()["error"] == "validation_error"
    batch = client.post(
        "/v1/events",
        headers=_bearer(made["token"]),
        json={
            "events": [
                {
                    "deal_id": "acme",
                    "type": "fact_recorded",
                    "event_id": "f-2",
                    "fact": "need",
                    "value": True,
                    "actor": "mallory",
                },
                {
                    "deal_id": "acme",
                    "type": "fact_recorded",
                    "event_id": "f-3",
                    "fact": "budget",
                    "value": True,
                },
            ]
        },
    )
    assert [r["status"] for r in batch.json()["results"]] == ["rejected", "recorded"]
    history = services.app.history("acme")["events"]
    assert [(e["event_id"], e["actor"]) for e in history] == [
        ("o-1", "crm-sync"),
        ("f-3", "crm-sync"),
    ]


def test_cli_creates_limited_tokens_and_lists_their_use(tmp_path: Path) -> None:
    env = {**os.environ, "DEALFLOW_HOME": str(tmp_path / "home")}
    env.pop("DATABASE_URL", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dealflow", "tokens", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    made = cli(
        "create",
        "--name",
        "nightly",
        "--scopes",
        "read",
        "--expires-in",
        "30d",
        "--rate-limit",
        "120",
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().startswith("df_")
    bad = cli("create", "--name", "dealflow:automation", "--scopes", "read")
    assert bad.returncode == 2 and "reserved" in bad.stderr, bad.stderr
    listed = cli("list", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["name"] for r in rows] == ["nightly"]
    row = rows[0]
    assert row["rate_limit_per_minute"] == 120 and row["active"] is True
    days = (
        time.mktime(time.strptime(row["expires_at"][:19], "%Y-%m-%dT%H:%M:%S"))
        - time.mktime(time.strptime(row["created_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    ) / 86400
    assert 29.99 < days < 30.01
    table = cli("list")
    assert "nightly" in table.stdout and "never" in table.stdout  # never used yet
