"""A real `dealflow serve` process driven over HTTP: the README's curl walk-through, a token made with
`dealflow tokens create`, and a pipeline applied with `dealflow pipelines apply` — on SQLite and on
PostgreSQL (DATABASE_URL)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.live import dealflow_command, dealflow_env, serve_process

BOOTSTRAP = "e2e-bootstrap-secret"
H = {"Authorization": f"Bearer {BOOTSTRAP}"}


@dataclass
class Server:
    url: str
    env: dict[str, str]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*dealflow_command(), *args], env=self.env, capture_output=True, text=True, timeout=60
        )


@contextmanager
def serving(request: pytest.FixtureRequest, tmp_path: Path, *args: str) -> Iterator[Server]:
    """``dealflow serve ARGS`` with the bootstrap token, on the store ``request.param`` names
    (``sqlite`` or ``postgres``)."""
    database_url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    env = dealflow_env(tmp_path / "home", database_url, DEALFLOW_BOOTSTRAP_TOKEN=BOOTSTRAP)
    with serve_process(env, tmp_path, *args) as url:
        yield Server(url, env)


@pytest.fixture(params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with serving(request, tmp_path, "--log-level", "warning") as running:
        yield running


def _readme_walkthrough(server: Server) -> None:
    with httpx.Client(base_url=server.url, headers=H, timeout=30) as http:
        opened = http.post(
            "/v1/deals/acme-42/events",
            json={
                "type": "opened",
                "event_id": "crm-acme-42-open",
                "pipeline_id": "default",
                "name": "Acme platform deal",
                "amount": "48000",
                "owner": "Moses Frase",
                "industry": "software",
                "lead_source": "webinar",
                "occurred_at": "2017-03-01",
            },
        )
        assert opened.status_code == 201, opened.text
        assert opened.json()["stage"] == "prospecting"

        refused = http.post(
            "/v1/deals/acme-42/events",
            json={"type": "stage_changed", "event_id": "crm-acme-42-s1", "to_stage": "meeting"},
        )
        assert refused.status_code == 422
        body = refused.json()
        assert body["error"] == "exit_criteria_unmet"
        assert body["unmet"] == [
            {"stage": "prospecting", "criterion": "contact_made"},
            {"stage": "qualification", "criterion": "need"},
            {"stage": "qualification", "criterion": "budget"},
            {"stage": "qualification", "criterion": "authority"},
            {"stage": "qualification", "criterion": "timeline"},
        ]
        assert http.get("/v1/deals/acme-42").json()["version"] == 1

        facts = {
            "events": [
                {
                    "deal_id": "acme-42",
                    "type": "fact_recorded",
                    "event_id": "f1",
                    "fact": "contact_made",
                    "value": True,
                    "occurred_at": "2017-03-02",
                },
                {
                    "deal_id": "acme-42",
                    "type": "fact_recorded",
                    "event_id": "f2",
                    "fact": "need",
                    "value": True,
                    "occurred_at": "2017-03-05",
                },
                {
                    "deal_id": "acme-42",
                    "type": "fact_recorded",
                    "event_id": "f3",
                    "fact": "budget",
                    "value": True,
                    "occurred_at": "2017-03-05",
                },
                {
                    "deal_id": "acme-42",
                    "type": "fact_recorded",
                    "event_id": "f4",
                    "fact": "authority",
                    "value": True,
                    "occurred_at": "2017-03-06",
                },
                {
                    "deal_id": "acme-42",
                    "type": "fact_recorded",
                    "event_id": "f5",
                    "fact": "timeline",
                    "value": True,
                    "occurred_at": "2017-03-06",
                },
            ]
        }
        batch = http.post("/v1/events", json=facts).json()
        assert [r["status"] for r in batch["results"]] == ["recorded"] * 5
        again = http.post("/v1/events", json=facts).json()
        assert [r["status"] for r in again["results"]] == ["duplicate"] * 5

        move = {
            "type": "stage_changed",
            "event_id": "crm-acme-42-s1",
            "to_stage": "meeting",
            "occurred_at": "2017-03-07",
        }
        accepted = http.post("/v1/deals/acme-42/events", json=move)
        assert accepted.status_code == 201, accepted.text
        assert (accepted.json()["stage"], accepted.json()["version"]) == ("meeting", 7)
        replay = http.post("/v1/deals/acme-42/events", json=move)
        assert replay.status_code == 200 and replay.headers["idempotent-replay"] == "true"
        assert replay.json() == accepted.json()
        reused = http.post("/v1/deals/acme-42/events", json={**move, "to_stage": "qualification"})
        assert reused.status_code == 409 and reused.json()["error"] == "idempotency_key_reused"

        history = http.get("/v1/deals/acme-42/history").json()
        assert [(e["version"], e["type"]) for e in history["events"]] == [
            (1, "opened"),
            *[(v, "fact_recorded") for v in range(2, 7)],
            (7, "stage_changed"),
        ]
        last = history["events"][-1]
        assert last["data"]["from_stage"] == "prospecting" and last["actor"] == "bootstrap"
        assert {c["held"] for c in last["data"]["criteria"]} == {True}

        as_of = http.get("/v1/deals/acme-42", params={"as_of": "2017-03-04"}).json()
        assert (as_of["stage"], as_of["version"], as_of["facts"]) == (
            "prospecting",
            2,
            {"contact_made": True},
        )
        v1 = http.get("/v1/deals/acme-42", params={"version": "1"}).json()
        assert (v1["version"], v1["facts"]) == (1, {})
        assert http.get("/openapi.json", headers={}).status_code == 200
        assert http.get("/v1/deals/acme-42", headers={"Authorization": ""}).status_code == 401


def _cli_token_and_pipeline_apply(server: Server, tmp_path: Path) -> None:
    made = server.cli("tokens", "create", "--name", "crm-sync", "--scopes", "ingest,read")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    assert token and " " not in token
    pipeline = tmp_path / "renewals.yaml"
    pipeline.write_text(
        "name: Renewals\n"
        "currency: EUR\n"
        "stages:\n"
        "  - id: review\n"
        "    name: Account review\n"
        "    probability: 0.3\n"
        "    max_days_in_stage: 10.5\n"
        "    exit_criteria:\n"
        "      - {id: usage_checked, kind: fact}\n"
        "      - {id: big_enough, kind: field, field: amount, op: gte, value: 1000}\n"
        "  - id: offer\n"
        "    name: Offer\n"
        "    probability: 0.7\n",
        encoding="utf-8",
    )
    applied = server.cli("pipelines", "apply", str(pipeline))
    assert applied.returncode == 0, applied.stderr
    assert "version 1" in applied.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Bad\nstages:\n  - {id: a, name: A, probability: 1.5}\n", encoding="utf-8")
    refused = server.cli("pipelines", "apply", str(bad))
    assert refused.returncode != 0 and "probability" in refused.stderr

    mine = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, headers=mine, timeout=30) as http:
        got = http.get("/v1/pipelines/renewals").json()
        assert (got["version"], got["currency"], [s["id"] for s in got["stages"]]) == (
            1,
            "EUR",
            ["review", "offer"],
        )
        opened = http.post(
            "/v1/deals/r-1/events",
            json={
                "type": "opened",
                "event_id": "r-1-o",
                "pipeline_id": "renewals",
                "name": "Renewal",
                "amount": "500",
            },
        )
        assert opened.status_code == 201, opened.text
        assert opened.json()["currency"] == "EUR"
        http.post(
            "/v1/deals/r-1/events",
            json={
                "type": "fact_recorded",
                "event_id": "r-1-f",
                "fact": "usage_checked",
                "value": True,
            },
        )
        short = http.post(
            "/v1/deals/r-1/events",
            json={"type": "stage_changed", "event_id": "r-1-s", "to_stage": "offer"},
        )
        assert short.status_code == 422 and short.json()["unmet"] == [
            {"stage": "review", "criterion": "big_enough"}
        ]
        http.post(
            "/v1/deals/r-1/events", json={"type": "updated", "event_id": "r-1-u", "amount": "1000"}
        )
        moved = http.post(
            "/v1/deals/r-1/events",
            json={"type": "stage_changed", "event_id": "r-1-s", "to_stage": "offer"},
        )
        assert moved.status_code == 201 and moved.json()["stage"] == "offer"
        # The CLI token has no audit or admin scope.
        assert http.get("/v1/deals/r-1/history").status_code == 403
        assert http.put("/v1/pipelines/renewals", json={}).status_code == 403
    revoked = server.cli("tokens", "revoke", "--name", "crm-sync")
    assert revoked.returncode == 0, revoked.stderr
    assert httpx.get(f"{server.url}/v1/deals/r-1", headers=mine, timeout=30).status_code == 401


def test_serve_end_to_end(server: Server, tmp_path: Path) -> None:
    """One server start per backend (they are slow): the walk-through, then the CLI."""
    _readme_walkthrough(server)
    _cli_token_and_pipeline_apply(server, tmp_path)
