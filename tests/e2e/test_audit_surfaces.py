"""The audit surfaces end to end: HTTP routes (scope audit) and the `dealflow audit` commands."""

from __future__ import annotations

import csv
import io
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from dealflow.bench.audit_sample import populate
from dealflow.http import create_app
from dealflow.runtime import build_services
from engine.application import DealflowApp
from engine.domain.deal import deal_uuid
from engine.persistence.settings import StoreSettings
from engine.services import Services
from tests.conftest import AUTH, TEST_TOKEN
from tests.live import dealflow_env, run_dealflow


@pytest.fixture
def served(store_settings: StoreSettings) -> Iterator[tuple[TestClient, Services]]:
    services = build_services(store_settings, bootstrap_token=TEST_TOKEN, run_projections=False)
    populate(services.app, 60)
    try:
        with TestClient(create_app(services)) as client:
            yield client, services
    finally:
        services.close()


def test_verify_route(served: tuple[TestClient, Services]) -> None:
    client, _ = served
    body = client.get("/v1/audit/verify", headers=AUTH).json()
    assert body["ok"] is True and body["breaks"] == [] and body["log_checked"] is True
    assert body["checked"]["events"] > 60
    assert client.post("/v1/audit/checkpoints", headers=AUTH).json()["checkpoint"]["position"] > 0
    one = client.get("/v1/audit/verify", params={"deal_id": "d-1"}, headers=AUTH).json()
    assert one["ok"] and one["deal_id"] == "d-1" and one["log_checked"] is False
    missing = client.get("/v1/audit/verify", params={"deal_id": "nobody"}, headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


def test_audit_routes_need_the_audit_scope(served: tuple[TestClient, Services]) -> None:
    client, services = served
    reader = {"Authorization": f"Bearer {services.tokens.create('reader', ['read'])}"}
    for path in ("/v1/audit/verify", "/v1/audit/export", "/v1/deals/d-0/timeline"):
        assert client.get(path, headers=reader).status_code == 403
        assert client.get(path).status_code == 401


def test_export_route_streams_jsonl_and_csv(served: tuple[TestClient, Services]) -> None:
    client, _ = served
    with client.stream("GET", "/v1/audit/export", headers=AUTH) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [orjson.loads(line) for line in response.iter_lines() if line]
    assert len(lines) > 60 and {
        "deal_id",
        "actor",
        "event_id",
        "occurred_at",
        "recorded_at",
        "version",
        "pipeline_id",
        "pipeline_version",
        "hash",
        "type",
        "data",
    } <= set(lines[0])
    response = client.get(
        "/v1/audit/export",
        params={
            "format": "csv",
            "deal_id": "d-0",
            "from": "2017-03-01T01:00:00Z",
            "to": "2017-03-01T03:00:00Z",
        },
        headers=AUTH,
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [int(r["version"]) for r in rows] == [2, 3]
    bad = client.get("/v1/audit/export", params={"from": "yesterday"}, headers=AUTH)
    assert bad.status_code == 422


def test_timeline_route(served: tuple[TestClient, Services]) -> None:
    client, services = served
    body = client.get("/v1/deals/d-0/timeline", headers=AUTH).json()
    assert body["chain"]["ok"] and len(body["events"]) == 17
    assert body["events"][2]["criteria"] == [
        {"stage": "prospecting", "criterion": "contact_made", "held": True}
    ]
    assert client.get("/v1/deals/nobody/timeline", headers=AUTH).status_code == 404


def test_tampering_shows_over_http(
    served: tuple[TestClient, Services], store_settings: StoreSettings
) -> None:
    client, services = served
    app: DealflowApp = services.app
    table = app.db.events_table
    with app.db.transaction() as cur:
        cur.execute(
            f"DELETE FROM {table} WHERE originator_id = %s AND originator_version = 4",
            (deal_uuid("d-1") if app.db.is_postgres else deal_uuid("d-1").hex,),
        )
    body = client.get("/v1/audit/verify", headers=AUTH).json()
    assert body["ok"] is False
    assert [(b["kind"], b["deal_id"], b["version"]) for b in body["breaks"]] == [
        ("version_gap", "d-1", 4)
    ]
    timeline = client.get("/v1/deals/d-1/timeline", headers=AUTH).json()
    assert timeline["chain"]["ok"] is False and timeline["replay_error"]


# -- the command line ------------------------------------------------------------------------------


def _dealflow(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_dealflow(dealflow_env(home), *args)


def test_cli(tmp_path: Path) -> None:
    settings = StoreSettings(database_url=None, home=tmp_path)
    app = DealflowApp(settings)
    populate(app, 40)
    app.close()

    verified = _dealflow(tmp_path, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert "OK" in verified.stdout
    assert _dealflow(tmp_path, "audit", "checkpoint").stdout.startswith(
        "sealed the log up to position"
    )

    exported = _dealflow(tmp_path, "audit", "export", "--deal", "d-1", "--format", "jsonl")
    assert [orjson.loads(line)["version"] for line in exported.stdout.splitlines()] == list(
        range(1, 18)
    )
    out = tmp_path / "events.csv"
    assert _dealflow(tmp_path, "audit", "export", "--format", "csv", "-o", str(out)).returncode == 0
    assert out.read_text().startswith("position,deal_id,pipeline_id")

    replay = _dealflow(tmp_path, "audit", "replay", "--deal", "d-0")
    assert (
        replay.returncode == 0
        and "hash chain intact" in replay.stdout
        and "contact_made" in replay.stdout
    )
    as_json: dict[str, Any] = orjson.loads(
        _dealflow(tmp_path, "audit", "replay", "--deal", "d-0", "--json").stdout
    )
    assert len(as_json["events"]) == 17

    conn = sqlite3.connect(settings.sqlite_path)
    conn.execute("UPDATE stored_events SET state = replace(state, 'no budget', 'no fit')")
    conn.commit()
    conn.close()
    broken = _dealflow(tmp_path, "audit", "verify")
    assert broken.returncode == 1
    assert "hash_mismatch" in broken.stderr and "deal d-2 v9" in broken.stderr
    assert _dealflow(tmp_path, "audit", "replay", "--deal", "d-2").returncode == 1
