"""`dealflow import crm` against real stores: the whole sample on SQLite, a slice on PostgreSQL.

Every expectation is computed here from the CSV files (csv module), never by the importer."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dealflow.http import create_app
from dealflow.runtime import build_services
from engine.domain.definitions import DIRECTORY
from engine.importers.crm import import_crm
from engine.persistence.settings import StoreSettings
from tests.conftest import AUTH, TEST_TOKEN

SAMPLE = Path(__file__).resolve().parents[2] / "dealflow" / "demo" / "sample_data" / "crm"


def _rows(name: str, directory: Path = SAMPLE) -> list[dict[str, str]]:
    with (directory / name).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _midnight(text: str) -> datetime:
    return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)


def _sector(raw: str) -> str:
    return "technology" if raw == "technolgy" else raw


def slice_of_sample(target: Path, every: int) -> Path:
    """A smaller export: every n-th opportunity (all four CRM stages stay represented)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("accounts.csv", "products.csv", "sales_teams.csv"):
        shutil.copy(SAMPLE / name, target / name)
    with (SAMPLE / "sales_pipeline.csv").open(newline="") as source:
        lines = source.read().splitlines()
    (target / "sales_pipeline.csv").write_text("\n".join([lines[0], *lines[1::every]]) + "\n")
    return target


def _expected(directory: Path) -> dict:
    rows = _rows("sales_pipeline.csv", directory)
    sectors = {r["account"]: _sector(r["sector"]) for r in _rows("accounts.csv", directory)}
    stages = Counter(r["deal_stage"] for r in rows)
    won_by_industry: Counter[str | None] = Counter()
    for r in rows:
        if r["deal_stage"] == "Won":
            won_by_industry[sectors.get(r["account"])] += 1
    return {
        "rows": rows,
        "stages": stages,
        "won_value": sum(Decimal(r["close_value"]) for r in rows if r["deal_stage"] == "Won"),
        "industries": {sectors.get(r["account"]) for r in rows},
        "won_by_industry": won_by_industry,
    }


def _check_store(services, report, expected) -> None:
    stages = expected["stages"]
    assert report["by_crm_stage"] == {
        s: stages.get(s, 0) for s in ("Prospecting", "Engaging", "Won", "Lost")
    }
    assert report["events"]["rejected"] == 0, report["rejected_examples"]
    assert report["events"]["recorded"] == report["events"]["total"]
    services.projections.catch_up()
    client = TestClient(create_app(services))
    metrics = client.get("/v1/pipelines/default/metrics", headers=AUTH).json()
    assert metrics["won"] == stages["Won"]
    assert metrics["lost"] == stages["Lost"]
    assert metrics["open_deals"] == stages["Prospecting"] + stages["Engaging"]
    assert Decimal(metrics["won_value"]) == expected["won_value"]
    by_stage = {s["stage"]: s for s in metrics["stages"]}
    assert by_stage["prospecting"]["open_deals"] == stages["Prospecting"]
    assert by_stage["qualification"]["open_deals"] == stages["Engaging"]
    assert by_stage["prospecting"]["entered"] == len(expected["rows"])
    breakdown = client.get(
        "/v1/pipelines/default/metrics/breakdown", params={"by": "industry"}, headers=AUTH
    ).json()
    keys = {row["key"] for row in breakdown["rows"]}
    assert keys == expected["industries"]
    assert "technolgy" not in keys
    assert {row["key"]: row["won"] for row in breakdown["rows"] if row["won"]} == {
        k: v for k, v in expected["won_by_industry"].items() if v
    }


@pytest.fixture(scope="module")
def full_import(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("crm-sqlite")
    services = build_services(
        StoreSettings(database_url=None, home=home),
        bootstrap_token=TEST_TOKEN,
        run_projections=False,
    )
    report = import_crm(services.app, SAMPLE, progress=False)
    yield services, report
    services.close()


def test_the_whole_sample_imports_with_the_csv_outcomes(full_import) -> None:
    services, report = full_import
    assert report["rows"] == report["deals"] == 8800
    _check_store(services, report, _expected(SAMPLE))


def test_quirks_are_reported(full_import) -> None:
    _, report = full_import
    quirks = report["quirks"]
    assert quirks["product_renamed"]["GTXPro"]["to"] == "GTX Pro"
    assert quirks["product_renamed"]["GTXPro"]["rows"] == 1480
    assert quirks["sector_corrected"]["technolgy"]["to"] == "technology"
    assert quirks["no_account"] == {"Engaging": 1088, "Prospecting": 337}
    assert quirks["undated_prospecting"] == {"rows": 500, "opened_at": "2017-12-31"}
    assert quirks["lost_zero_close_value"] == 2473
    assert report["anomalies"] == []


def test_deal_state_follows_the_csv(full_import) -> None:
    services, report = full_import
    app = services.app
    prices = {r["product"]: Decimal(r["sales_price"]) for r in _rows("products.csv")}
    rows = _rows("sales_pipeline.csv")
    checked: Counter[str] = Counter()
    for row in rows[::97]:
        deal = app.deal(row["opportunity_id"])
        stage = row["deal_stage"]
        checked[stage] += 1
        assert deal.owner == row["sales_agent"]
        assert deal.account == (row["account"] or None)
        price = prices["GTX Pro" if row["product"] == "GTXPro" else row["product"]]
        if stage == "Won":
            assert deal.status == "won"
            assert deal.closed_at == _midnight(row["close_date"])
            assert deal.amount == Decimal(row["close_value"])
            assert deal.opened_at == _midnight(row["engage_date"])
        elif stage == "Lost":
            assert deal.status == "lost"
            assert deal.closed_at == _midnight(row["close_date"])
            assert deal.amount == price
            assert deal.lost_reason
        elif stage == "Engaging":
            assert (deal.status, deal.stage) == ("open", "qualification")
            assert deal.stage_entered_at == _midnight(row["engage_date"])
            assert deal.facts == {"contact_made": True}
            assert deal.amount == price
        else:
            assert (deal.status, deal.stage) == ("open", "prospecting")
            assert deal.opened_at == _midnight(report["export_date"])
            assert deal.amount == price
    assert set(checked) == {"Won", "Lost", "Engaging", "Prospecting"}
    # Winning opened the post-purchase follow-up, as for any won deal.
    won = next(r["opportunity_id"] for r in rows if r["deal_stage"] == "Won")
    assert app.deal(f"{won}:post-purchase").pipeline_id == "post-purchase"


def test_the_team_directory_is_loaded(full_import) -> None:
    services, _ = full_import
    _, body = services.app.get_definition(DIRECTORY, "team")
    people = {p["id"]: p for p in body["people"]}
    for row in _rows("sales_teams.csv"):
        assert people[row["sales_agent"]]["manager"] == row["manager"]
        assert people[row["sales_agent"]]["email"].endswith("@example.com")
        assert row["manager"] in people


def test_a_second_import_is_all_duplicates(full_import) -> None:
    services, first = full_import
    head = services.app.max_position()
    again = import_crm(services.app, SAMPLE, progress=False)
    assert again["events"] == {
        "total": first["events"]["total"],
        "recorded": 0,
        "duplicate": first["events"]["total"],
        "rejected": 0,
    }
    assert services.app.max_position() == head
    assert again["directory"]["version"] == first["directory"]["version"]


@pytest.mark.postgres
def test_a_slice_imports_on_postgres(pg_url: str, tmp_path: Path) -> None:
    directory = slice_of_sample(tmp_path / "slice", every=9)
    services = build_services(
        StoreSettings(database_url=pg_url, home=tmp_path / "home"),
        bootstrap_token=TEST_TOKEN,
        run_projections=False,
    )
    try:
        report = import_crm(services.app, directory, progress=False)
        _check_store(services, report, _expected(directory))
        again = import_crm(services.app, directory, progress=False)
        assert again["events"]["duplicate"] == again["events"]["total"] == report["events"]["total"]
        assert again["events"]["recorded"] == 0
    finally:
        services.close()
