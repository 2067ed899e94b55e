"""Planning: each opportunity of the export as the deal events that tell its story, in time
order (the choices are listed in the package's docstring)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date
from typing import Any

from engine.application import Command, request_hash
from engine.commands import incoming_event
from engine.domain.defaults import DEFAULT_PIPELINE_ID
from engine.domain.pipeline import ActivityCriterion, FactCriterion, PipelineDefinition
from engine.importers.crm.export import (
    ACTOR,
    IMPLIED,
    LOST_REASON,
    STAGES,
    Export,
    email_for,
    normalise_key,
    parse_date,
    parse_money,
)


@dataclass
class Plan:
    """The commands for the whole export, grouped per deal in time order, plus the report."""

    deals: list[list[Command]]
    outcomes: Counter[str]
    quirks: dict[str, Any]
    anomalies: list[dict[str, str]]
    people: list[dict[str, Any]]
    export_date: date

    @property
    def event_count(self) -> int:
        return sum(len(d) for d in self.deals)


class _DealBuilder:
    def __init__(self, deal_id: str) -> None:
        self.deal_id = deal_id
        self.commands: list[Command] = []

    def add(self, step: str, when: date, body: dict[str, Any]) -> None:
        body = {"event_id": f"crm:{self.deal_id}:{step}", "occurred_at": when.isoformat(), **body}
        payload = incoming_event.validate_python(body)
        self.commands.append(
            Command(
                deal_id=self.deal_id,
                type=payload.type,
                event_id=payload.event_id,
                payload=payload,
                request_hash=request_hash(self.deal_id, body),
                actor=ACTOR,
                occurred_at=payload.occurred_at,
                expected_version=payload.expected_version,
            )
        )


def _criteria_steps(
    definition: PipelineDefinition, stage_ids: list[str]
) -> list[tuple[str, dict[str, Any]]]:
    """The facts and activities that satisfy the exit criteria of ``stage_ids`` (field criteria
    other than ``amount`` cannot be inferred from the export; the engine will say so)."""
    steps: list[tuple[str, dict[str, Any]]] = []
    activities: dict[str, int] = {}  # activity -> index in steps of its first log
    for stage_id in stage_ids:
        for criterion in definition.stage(stage_id).exit_criteria:
            if isinstance(criterion, FactCriterion):
                body = {"type": "fact_recorded", "fact": criterion.id, "value": True}
                steps.append((f"fact:{criterion.id}", body))
            elif isinstance(criterion, ActivityCriterion):
                # Activities count within the deal's current stage, so the largest min_count of
                # any stage is enough for all of them.
                name = criterion.activity
                logged = sum(1 for step, _ in steps if step.split(":")[:2] == ["activity", name])
                at = activities.setdefault(name, len(steps))
                for n in range(logged, criterion.min_count):
                    step = f"activity:{name}" if n == 0 else f"activity:{name}:{n + 1}"
                    steps.insert(at + n, (step, {"type": "activity_logged", "activity": name}))
    return steps


def plan(
    export: Export,
    definition: PipelineDefinition,
    pipeline_id: str = DEFAULT_PIPELINE_ID,
    *,
    export_date: date | None = None,
) -> Plan:
    stage_ids = list(definition.stage_ids)
    if len(stage_ids) < 2:
        raise ValueError(f"pipeline {pipeline_id!r} needs at least two stages for a CRM import")
    first, second = stage_ids[0], stage_ids[1]
    enter_second = _criteria_steps(definition, [first])
    to_win = _criteria_steps(definition, stage_ids[1:])
    for _step, body in enter_second:
        body["note" if body["type"] == "fact_recorded" else "summary"] = (
            "Imported from the CRM export: the deal was engaged on this date"
        )
    for _step, body in to_win:
        body["note" if body["type"] == "fact_recorded" else "summary"] = IMPLIED

    exported = export_date or export.export_date()
    outcomes: Counter[str] = Counter()
    renamed: dict[str, dict[str, Any]] = {}
    unknown_products: Counter[str] = Counter()
    no_account: Counter[str] = Counter()
    unknown_accounts: Counter[str] = Counter()
    corrected = export.quirks.get("sector_corrected", {})
    fixed_sectors = {v["to"] for v in corrected.values()}
    corrected_accounts = {
        account for account, sector in export.sectors.items() if sector in fixed_sectors
    }
    lost_zero = 0
    undated = 0
    anomalies: list[dict[str, str]] = []
    deals: list[list[Command]] = []
    offices = {row["sales_agent"]: row.get("regional_office") or None for row in export.teams}
    unknown_agents: Counter[str] = Counter()

    for row in export.opportunities:
        opportunity = row["opportunity_id"]
        stage = row.get("deal_stage", "")
        outcomes[stage if stage in STAGES else "other"] += 1
        builder = _DealBuilder(opportunity)

        product = row.get("product", "")
        found = export.prices.get(normalise_key(product))
        if found is None:
            unknown_products[product] += 1
            series, price = "", None
        else:
            canonical, series, price = found
            if canonical != product:
                entry = renamed.setdefault(product, {"to": canonical, "rows": 0})
                entry["rows"] += 1
        account = row.get("account") or None
        industry: str | None = None
        if account is None:
            no_account[stage] += 1
        elif account not in export.sectors:
            unknown_accounts[account] += 1
        else:
            industry = export.sectors[account]
            if account in corrected_accounts:
                for fix in corrected.values():
                    if fix["to"] == industry:
                        fix["rows"] += 1
        agent = row.get("sales_agent") or None
        if agent is not None and agent not in offices:
            unknown_agents[agent] += 1

        try:
            engaged = parse_date(row.get("engage_date", ""))
            closed = parse_date(row.get("close_date", ""))
        except ValueError as error:
            anomalies.append({"opportunity_id": opportunity, "problem": f"bad date: {error}"})
            engaged = closed = None
        close_value = parse_money(row.get("close_value", ""))

        attributes: dict[str, Any] = {"crm_opportunity_id": opportunity, "crm_stage": stage}
        if product:
            attributes["product"] = product
        if series:
            attributes["product_series"] = series
        if price is not None:
            attributes["list_price"] = str(price)
        if stage in ("Won", "Lost") and close_value is not None:
            attributes["close_value"] = str(close_value)
        if agent and offices.get(agent):
            attributes["regional_office"] = offices[agent]

        amount = price
        if stage == "Won" and (amount is None or amount <= 0) and close_value:
            amount = close_value  # no list price: the close value is the only price we know
        name = (
            f"{product or 'Deal'} for {account}"
            if account
            else f"{product or 'Deal'} ({opportunity})"
        )
        opened = {
            "type": "opened",
            "pipeline_id": pipeline_id,
            "name": name[:200],
            "stage": first,
            "owner": agent,
            "account": account,
            "industry": industry,
            "amount": None if amount is None else str(amount),
            "attributes": attributes,
        }
        opened = {k: v for k, v in opened.items() if v is not None}

        if stage not in STAGES:
            anomalies.append(
                {
                    "opportunity_id": opportunity,
                    "problem": f"unknown deal_stage {stage!r}: opened only",
                }
            )
        if engaged is None and stage != "Prospecting":
            anomalies.append(
                {
                    "opportunity_id": opportunity,
                    "problem": f"{stage} deal without engage_date: opened at the export date",
                }
            )
        if engaged is None:
            if stage == "Prospecting":
                undated += 1
            builder.add("opened", exported, opened)
            deals.append(builder.commands)
            continue

        builder.add("opened", engaged, opened)
        if stage == "Prospecting":
            anomalies.append(
                {
                    "opportunity_id": opportunity,
                    "problem": "Prospecting deal with an engage_date: moved to the second stage",
                }
            )
        if stage not in STAGES:
            deals.append(builder.commands)
            continue
        for step, body in enter_second:
            builder.add(step, engaged, dict(body))
        builder.add(f"stage:{second}", engaged, {"type": "stage_changed", "to_stage": second})

        if stage in ("Won", "Lost"):
            if closed is None:
                anomalies.append(
                    {
                        "opportunity_id": opportunity,
                        "problem": f"{stage} deal without close_date: left open in {second}",
                    }
                )
            elif closed < engaged:
                anomalies.append(
                    {
                        "opportunity_id": opportunity,
                        "problem": f"{stage} before its engage_date: left open in {second}",
                    }
                )
            elif stage == "Lost":
                if close_value is not None and close_value == 0:
                    lost_zero += 1
                builder.add("lost", closed, {"type": "lost", "reason": LOST_REASON})
            else:
                for step, body in to_win:
                    builder.add(step, closed, dict(body))
                won: dict[str, Any] = {"type": "won"}
                if close_value is not None:
                    won["amount"] = str(close_value)
                else:
                    anomalies.append(
                        {
                            "opportunity_id": opportunity,
                            "problem": "Won deal without close_value: won at its list price",
                        }
                    )
                builder.add("won", closed, won)
        elif closed is not None:
            anomalies.append(
                {
                    "opportunity_id": opportunity,
                    "problem": f"{stage} deal with a close_date: left open",
                }
            )
        deals.append(builder.commands)

    quirks: dict[str, Any] = {
        "product_renamed": renamed,
        "unknown_products": dict(unknown_products),
        "sector_corrected": corrected,
        "no_account": dict(no_account),
        "unknown_accounts": dict(unknown_accounts),
        "unknown_agents": dict(unknown_agents),
        "undated_prospecting": {"rows": undated, "opened_at": exported.isoformat()},
        "lost_zero_close_value": lost_zero,
    }
    return Plan(
        deals=deals,
        outcomes=outcomes,
        quirks=quirks,
        anomalies=anomalies,
        people=directory_people(export.teams),
        export_date=exported,
    )


def directory_people(teams: list[dict[str, str]]) -> list[dict[str, Any]]:
    people: dict[str, dict[str, Any]] = {}
    for row in teams:
        manager = row.get("manager") or None
        agent = row.get("sales_agent")
        if agent:
            people[agent] = {"id": agent, "manager": manager, "email": email_for(agent)}
        if manager and manager not in people:
            people[manager] = {"id": manager, "manager": None, "email": email_for(manager)}
    return list(people.values())
