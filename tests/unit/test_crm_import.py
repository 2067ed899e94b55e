"""The CRM importer's plan: the commands it builds from the export, without a store.

Expectations are computed here straight from the CSV files with the csv module."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from engine.domain.defaults import built_in
from engine.importers.crm import ACTOR, Export, plan
from engine.importers.crm.plan import directory_people

SAMPLE = Path(__file__).resolve().parents[2] / "dealflow" / "demo" / "sample_data" / "crm"


def _rows(name: str, directory: Path = SAMPLE) -> list[dict[str, str]]:
    with (directory / name).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def sample_plan():
    return plan(Export.load(SAMPLE), built_in("default"))


def test_the_bundled_sample_is_complete() -> None:
    for name in (
        "sales_pipeline.csv",
        "accounts.csv",
        "products.csv",
        "sales_teams.csv",
        "SOURCE.md",
    ):
        assert (SAMPLE / name).is_file(), name
    assert len(_rows("sales_pipeline.csv")) == 8800


def test_every_row_becomes_one_deal_and_outcomes_match_the_csv(sample_plan) -> None:
    rows = _rows("sales_pipeline.csv")
    assert len(sample_plan.deals) == len(rows)
    assert [d[0].deal_id for d in sample_plan.deals] == [r["opportunity_id"] for r in rows]
    assert dict(sample_plan.outcomes) == dict(Counter(r["deal_stage"] for r in rows))
    last = Counter(d[-1].type for d in sample_plan.deals)
    expected = Counter(r["deal_stage"] for r in rows)
    assert last["won"] == expected["Won"]
    assert last["lost"] == expected["Lost"]
    assert last["stage_changed"] == expected["Engaging"]
    assert last["opened"] == expected["Prospecting"]
    assert sample_plan.anomalies == []


def test_event_ids_are_deterministic_and_business_time_never_runs_backwards(sample_plan) -> None:
    export = Export.load(SAMPLE)
    export.opportunities = export.opportunities[:400]
    again = plan(export, built_in("default"), export_date=sample_plan.export_date)
    for first, second in zip(sample_plan.deals[:400], again.deals, strict=True):
        assert [c.event_id for c in first] == [c.event_id for c in second]
        assert [c.request_hash for c in first] == [c.request_hash for c in second]
    ids = [c.event_id for d in sample_plan.deals for c in d]
    assert len(ids) == len(set(ids))
    for commands in sample_plan.deals:
        times = [c.occurred_at for c in commands]
        assert all(t is not None for t in times)
        assert times == sorted(times)
        assert all(c.event_id.startswith(f"crm:{c.deal_id}:") for c in commands)
        assert all(c.actor == ACTOR for c in commands)


def test_won_deal_events_follow_the_exit_criteria_at_the_close_date(sample_plan) -> None:
    row = next(r for r in _rows("sales_pipeline.csv") if r["deal_stage"] == "Won")
    commands = next(d for d in sample_plan.deals if d[0].deal_id == row["opportunity_id"])
    steps = [c.event_id.split(":", 2)[2] for c in commands]
    assert steps == [
        "opened",
        "fact:contact_made",
        "stage:qualification",
        "fact:need",
        "fact:budget",
        "fact:authority",
        "fact:timeline",
        "activity:demo",
        "activity:proposal",
        "fact:verbal_commit",
        "fact:contract_signed",
        "won",
    ]
    engaged = date.fromisoformat(row["engage_date"])
    closed = date.fromisoformat(row["close_date"])
    assert [c.occurred_at.date() for c in commands[:3]] == [engaged] * 3
    assert all(c.occurred_at.date() == closed for c in commands[3:])
    assert commands[-1].payload.amount == int(row["close_value"])
    opened = commands[0].payload
    assert opened.owner == row["sales_agent"]
    assert opened.account == row["account"]


def test_prices_quirks_and_industries(sample_plan) -> None:
    prices = {r["product"]: int(r["sales_price"]) for r in _rows("products.csv")}
    sectors = {r["account"]: r["sector"] for r in _rows("accounts.csv")}
    rows = {r["opportunity_id"]: r for r in _rows("sales_pipeline.csv")}
    industries = set()
    for commands in sample_plan.deals:
        opened = commands[0].payload
        row = rows[commands[0].deal_id]
        product = "GTX Pro" if row["product"] == "GTXPro" else row["product"]
        assert opened.amount == prices[product]
        if row["account"]:
            sector = sectors[row["account"]]
            assert opened.industry == ("technology" if sector == "technolgy" else sector)
        else:
            assert opened.account is None and opened.industry is None
        industries.add(opened.industry)
    assert "technolgy" not in industries and "technology" in industries

    quirks = sample_plan.quirks
    gtxpro = sum(1 for r in rows.values() if r["product"] == "GTXPro")
    assert quirks["product_renamed"] == {"GTXPro": {"to": "GTX Pro", "rows": gtxpro}}
    assert quirks["unknown_products"] == {}
    tech_accounts = [a for a, s in sectors.items() if s == "technolgy"]
    assert quirks["sector_corrected"] == {
        "technolgy": {
            "to": "technology",
            "accounts": len(tech_accounts),
            "rows": sum(1 for r in rows.values() if r["account"] in tech_accounts),
        }
    }
    no_account = Counter(r["deal_stage"] for r in rows.values() if not r["account"])
    assert quirks["no_account"] == dict(no_account)
    assert quirks["no_account"]["Engaging"] == 1088
    undated = sum(1 for r in rows.values() if r["deal_stage"] == "Prospecting")
    last_date = max(d for r in rows.values() for d in (r["engage_date"], r["close_date"]) if d)
    assert quirks["undated_prospecting"] == {"rows": undated, "opened_at": last_date}
    assert quirks["lost_zero_close_value"] == sum(
        1 for r in rows.values() if r["deal_stage"] == "Lost" and r["close_value"] == "0"
    )


def test_the_team_directory_has_every_agent_and_manager() -> None:
    teams = _rows("sales_teams.csv")
    people = {p["id"]: p for p in directory_people(teams)}
    for row in teams:
        assert people[row["sales_agent"]]["manager"] == row["manager"]
        assert people[row["manager"]]["manager"] is None
    assert people["Moses Frase"]["email"] == "moses.frase@example.com"
    assert len(people) == len({r["sales_agent"] for r in teams} | {r["manager"] for r in teams})


def _write(directory: Path, name: str, header: str, lines: list[str]) -> None:
    (directory / name).write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")


def test_odd_rows_are_imported_as_far_as_the_data_goes_and_reported(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "accounts.csv",
        "account,sector,year_established,revenue,employees,office_location,subsidiary_of",
        ["Acme, Technolgy ,1996,1,1,US,"],
    )
    _write(tmp_path, "products.csv", "product,series,sales_price", ["GTX Pro,GTX,4821"])
    _write(tmp_path, "sales_teams.csv", "sales_agent,manager,regional_office", ["Ann,Bob,East"])
    _write(
        tmp_path,
        "sales_pipeline.csv",
        "opportunity_id,sales_agent,product,account,deal_stage,engage_date,close_date,close_value",
        [
            "A1,Ann,Mystery Box,Acme,Won,2017-01-02,2017-02-03,700",  # unknown product
            "A2,Zed,gtx-pro,Nowhere,Lost,2017-01-02,2017-01-05,0",  # unknown agent, account
            "A3,Ann,GTX Pro,Acme,Won,2017-01-02,,",  # won without a close date
            "A4,Ann,GTX Pro,Acme,Stalled,2017-01-02,,",  # unknown stage
            "A5,Ann,GTX Pro,Acme,Lost,2017-03-02,2017-01-01,0",  # closed before engaged
        ],
    )
    built = plan(Export.load(tmp_path), built_in("default"))
    assert len(built.deals) == 5
    by_id = {d[0].deal_id: d for d in built.deals}
    assert by_id["A1"][0].payload.amount == 700  # no list price: the close value
    assert by_id["A1"][-1].type == "won"
    assert by_id["A1"][0].payload.industry == "technology"
    assert by_id["A2"][0].payload.amount == 4821 and by_id["A2"][-1].type == "lost"
    assert by_id["A2"][0].payload.industry is None
    assert by_id["A3"][-1].type == "stage_changed"
    assert [c.type for c in by_id["A4"]] == ["opened"]
    assert by_id["A5"][-1].type == "stage_changed"
    assert built.quirks["unknown_products"] == {"Mystery Box": 1}
    assert built.quirks["product_renamed"] == {"gtx-pro": {"to": "GTX Pro", "rows": 1}}
    assert built.quirks["unknown_accounts"] == {"Nowhere": 1}
    assert built.quirks["unknown_agents"] == {"Zed": 1}
    problems = {a["opportunity_id"]: a["problem"] for a in built.anomalies}
    assert set(problems) == {"A3", "A4", "A5"}
    assert built.outcomes["other"] == 1
