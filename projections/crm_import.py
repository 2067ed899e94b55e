"""`dealflow import crm DIR`: a CRM export (the "CRM Sales Opportunities" shape) as deal events.

The export (``sales_pipeline.csv``, ``accounts.csv``, ``products.csv``, ``sales_teams.csv``) only
knows four stages -- Prospecting > Engaging > Won / Lost -- and two dates per opportunity
(``engage_date``, ``close_date``). Everything goes through the same batch path as the HTTP API
(:meth:`engine.application.DealflowApp.ingest`, commands validated by
:data:`engine.commands.incoming_event`, actor ``import:crm``), so the importer cannot record
anything the API would refuse. Choices, one by one:

Deals
    * ``deal_id`` is the CRM's ``opportunity_id``; every event id is
      ``crm:{opportunity_id}:{step}`` and every body is a pure function of the CSV rows, so a
      second import of the same export records nothing (every event is a ``duplicate``).
    * ``owner`` is the sales agent, ``account`` the account (none when the row has none),
      ``industry`` the account's sector (normalised, see quirks), ``amount`` the product's list
      price (``products.csv`` ``sales_price``). ``lead_source`` and ``decision_maker_role`` are not
      in the export and stay empty: nothing is invented. ``attributes`` keep the CRM's own facts:
      ``crm_opportunity_id``, ``crm_stage``, ``product`` (as written in the export),
      ``product_series``, ``list_price``, ``close_value`` (closed deals) and ``regional_office``.
    * The name is ``"{product} for {account}"`` (``"{product} ({opportunity_id})"`` without an
      account).

Business time (the engine refuses a deal's time running backwards, so each deal's events are
built in time order and sent in that order; dates are bare, i.e. midnight UTC)
    * Prospecting: opened in the pipeline's first stage. The export gives these rows no date at
      all, so they are opened at the *export date*: the latest date found anywhere in
      ``sales_pipeline.csv`` (2017-12-31 for the bundled sample), i.e. "they were in the pipeline
      when the export was taken". It is deterministic (a re-import is still all duplicates),
      never earlier than any dated deal, and says nothing false about age before the export.
      ``--export-date`` overrides it.
    * Engaging, Won and Lost deals were engaged, so they are opened at ``engage_date`` (the CRM
      has no earlier creation date; the prospecting stay is therefore 0 days, which is what the
      data supports). At the same instant the first stage's exit criteria are recorded -- for
      the default pipeline the fact ``contact_made`` (engaging *is* making contact) -- and the
      deal moves to the second stage (``qualification``).
    * Lost deals: ``lost`` at ``close_date`` from the second stage, reason ``"Lost in CRM (no
      reason recorded in the export)"``. The export's ``close_value`` of 0 is kept as the
      attribute ``close_value``; the deal's ``amount`` stays the list price, i.e. the value that
      was lost (a 0 amount would hide what was at stake).
    * Won deals: ``won`` at ``close_date`` with ``amount`` = ``close_value``. Winning requires the
      exit criteria of the current stage and of every later stage. The export does not say when
      those were met, only that the deal was won, so each one is recorded at ``close_date``,
      just before the win, with a note/summary saying it is implied by the CRM's Won outcome:
      for the default pipeline the facts ``need``, ``budget``, ``authority``, ``timeline``
      (qualification), the activity ``demo`` (meeting), the activity ``proposal`` (proposal; the
      ``priced`` criterion holds through the list price), and the facts ``verbal_commit``
      (negotiation) and ``contract_signed`` (contract). The deal is *not* walked through meeting,
      proposal, negotiation and contract: the export never says it was there, and inventing
      zero-day stays would distort the funnel and time-in-stage figures. Criteria are read from
      the pipeline definition, so ``--pipeline`` works for other pipelines whose criteria are
      facts, activities and ``amount``.
    * Winning opens the pipeline's ``after_won`` follow-up deal (``post-purchase``) as the engine
      always does, at the close date.

Data quirks (each one handled on purpose and counted in the returned/printed report)
    * Product names that do not match ``products.csv`` (``GTXPro`` vs ``GTX Pro``) are matched
      ignoring case, spaces and punctuation; a product still unknown gets no price (a won deal
      then uses its close value as amount so the win can be recorded).
    * Misspelt sectors (``technolgy``) are corrected through a small explicit table; every
      sector is lower-cased and trimmed.
    * Deals without an account (1,088 Engaging, 337 Prospecting in the sample) are imported with
      no account and no industry (they show as ``key: null`` in breakdowns). Accounts missing
      from ``accounts.csv`` likewise get no industry and are reported.
    * Undated Prospecting deals: see the export date above.
    * Lost deals with ``close_value`` 0: see above.
    * Rows that cannot be imported faithfully (unknown stage, a closed deal without a date,
      unparseable dates, a close before the engage date) are imported as far as the data goes
      and listed under ``anomalies``; an event the engine refuses is counted under ``rejected``
      with its reason. No row is ever dropped silently.

The sales team directory (agents with their managers, managers with none) is merged into the
team directory (``put_directory``) so escalations reach the right manager. The export has no
e-mail addresses; each person gets a synthetic ``first.last@example.com`` (a reserved domain).
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from engine.application import Command, DealflowApp, request_hash
from engine.commands import incoming_event
from engine.domain.defaults import DEFAULT_PIPELINE_ID
from engine.domain.definitions import DIRECTORY
from engine.domain.errors import NotFound
from engine.domain.pipeline import ActivityCriterion, FactCriterion, PipelineDefinition

ACTOR = "import:crm"
FILES = ("sales_pipeline.csv", "accounts.csv", "products.csv", "sales_teams.csv")
BATCH_EVENTS = 5000
LOST_REASON = "Lost in CRM (no reason recorded in the export)"
IMPLIED = "Imported from the CRM export: implied by the Won outcome (no date of its own)"
SECTOR_CORRECTIONS = {"technolgy": "technology"}
STAGES = ("Prospecting", "Engaging", "Won", "Lost")


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _email(person: str) -> str:
    local = ".".join(p for p in (_key(part) for part in person.split()) if p)
    return f"{local or 'unknown'}@example.com"


def _date(text: str) -> date | None:
    text = (text or "").strip()
    return date.fromisoformat(text) if text else None


def _money(text: str) -> Decimal | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _read(directory: Path, name: str) -> list[dict[str, str]]:
    with (directory / name).open(newline="", encoding="utf-8-sig") as handle:
        return [
            {k.strip(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(handle)
        ]


@dataclass
class Export:
    """The four CSV files, read and cross-referenced; quirks noted as they are met."""

    opportunities: list[dict[str, str]]
    sectors: dict[str, str | None]  # account -> normalised sector
    prices: dict[str, tuple[str, str, Decimal | None]]  # product key -> (name, series, price)
    teams: list[dict[str, str]]
    quirks: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> Export:
        missing = [name for name in FILES if not (directory / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{directory}: missing {', '.join(missing)}")
        corrected: dict[str, dict[str, Any]] = {}
        sectors: dict[str, str | None] = {}
        for row in _read(directory, "accounts.csv"):
            raw = row.get("sector", "")
            sector = raw.strip().lower() or None
            if sector in SECTOR_CORRECTIONS:
                fix = corrected.setdefault(
                    raw, {"to": SECTOR_CORRECTIONS[sector], "accounts": 0, "rows": 0}
                )
                fix["accounts"] += 1
                sector = SECTOR_CORRECTIONS[sector]
            sectors[row["account"]] = sector
        prices = {
            _key(row["product"]): (
                row["product"],
                row.get("series") or "",
                _money(row.get("sales_price", "")),
            )
            for row in _read(directory, "products.csv")
        }
        export = cls(
            opportunities=_read(directory, "sales_pipeline.csv"),
            sectors=sectors,
            prices=prices,
            teams=_read(directory, "sales_teams.csv"),
        )
        export.quirks["sector_corrected"] = corrected
        return export

    def export_date(self) -> date:
        dates = [
            d
            for row in self.opportunities
            for d in (_safe_date(row.get("engage_date")), _safe_date(row.get("close_date")))
            if d is not None
        ]
        return max(dates) if dates else date.today()


def _safe_date(text: str | None) -> date | None:
    try:
        return _date(text or "")
    except ValueError:
        return None


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
        found = export.prices.get(_key(product))
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
            engaged = _date(row.get("engage_date", ""))
            closed = _date(row.get("close_date", ""))
        except ValueError as error:
            anomalies.append({"opportunity_id": opportunity, "problem": f"bad date: {error}"})
            engaged = closed = None
        close_value = _money(row.get("close_value", ""))

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
        people=_people(export.teams),
        export_date=exported,
    )


def _people(teams: list[dict[str, str]]) -> list[dict[str, Any]]:
    people: dict[str, dict[str, Any]] = {}
    for row in teams:
        manager = row.get("manager") or None
        agent = row.get("sales_agent")
        if agent:
            people[agent] = {"id": agent, "manager": manager, "email": _email(agent)}
        if manager and manager not in people:
            people[manager] = {"id": manager, "manager": None, "email": _email(manager)}
    return list(people.values())


def _batches(deals: list[list[Command]], size: int) -> Iterator[list[Command]]:
    """Whole deals per batch (a deal's events stay in order and together), about ``size`` each."""
    batch: list[Command] = []
    for commands in deals:
        if batch and len(batch) + len(commands) > size:
            yield batch
            batch = []
        batch.extend(commands)
    if batch:
        yield batch


def _merge_directory(app: DealflowApp, people: list[dict[str, Any]]) -> int:
    try:
        _, body = app.get_definition(DIRECTORY, "team")
        existing = list(body.get("people") or [])
    except NotFound:
        existing = []
    merged = {p["id"]: p for p in existing}
    for person in people:
        merged[person["id"]] = {**merged.get(person["id"], {}), **person}
    return app.put_directory({"people": list(merged.values())}, ACTOR)


def import_crm(
    app: DealflowApp,
    directory: str | Path,
    *,
    pipeline_id: str = DEFAULT_PIPELINE_ID,
    export_date: date | None = None,
    batch_events: int = BATCH_EVENTS,
    progress: bool = True,
    console: Any = None,
) -> dict[str, Any]:
    """Import one export; return the report (also what :func:`print_report` prints)."""
    directory = Path(directory)
    export = Export.load(directory)
    definition = app.pipeline_ref(pipeline_id).definition
    built = plan(export, definition, pipeline_id, export_date=export_date)

    statuses: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    examples: dict[str, str] = {}
    position = 0
    total = built.event_count

    def run(advance: Any) -> None:
        nonlocal position
        for batch in _batches(built.deals, batch_events):
            for outcome in app.ingest(batch):
                statuses[outcome.status] += 1
                if outcome.position:
                    position = max(position, outcome.position)
                if outcome.status == "rejected" and outcome.error is not None:
                    code = outcome.error.to_dict().get("error", "rejected")
                    rejected[code] += 1
                    examples.setdefault(code, f"{outcome.event_id}: {outcome.error.message}")
            advance(len(batch))

    if progress:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        with Progress(
            TextColumn("[bold]importing CRM events"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as bar:
            task = bar.add_task("import", total=total)
            run(lambda n: bar.advance(task, n))
    else:
        run(lambda n: None)

    directory_version = _merge_directory(app, built.people)
    return {
        "source": str(directory),
        "pipeline_id": pipeline_id,
        "rows": len(export.opportunities),
        "deals": len(built.deals),
        "by_crm_stage": {
            stage: built.outcomes.get(stage, 0)
            for stage in (*STAGES, "other")
            if stage in built.outcomes or stage in STAGES
        },
        "events": {
            "total": total,
            "recorded": statuses.get("recorded", 0),
            "duplicate": statuses.get("duplicate", 0),
            "rejected": statuses.get("rejected", 0),
        },
        "rejected": dict(rejected),
        "rejected_examples": examples,
        "export_date": built.export_date.isoformat(),
        "quirks": built.quirks,
        "anomalies": built.anomalies,
        "directory": {"people": len(built.people), "version": directory_version},
        "position": position,
    }


def print_report(report: dict[str, Any], console: Any = None) -> None:
    """The import summary as rich tables: counts, quirks and what was done about each."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    events = report["events"]
    console.print(
        f"[bold]CRM import[/bold] from {report['source']} into pipeline "
        f"[cyan]{report['pipeline_id']}[/cyan]: {report['rows']:,} rows -> {report['deals']:,} deals, "
        f"{events['total']:,} events: [green]{events['recorded']:,} recorded[/green], "
        f"{events['duplicate']:,} duplicate, "
        f"{'[red]' if events['rejected'] else ''}{events['rejected']:,} rejected"
        f"{'[/red]' if events['rejected'] else ''}"
    )
    stages = ", ".join(f"{k} {v:,}" for k, v in report["by_crm_stage"].items())
    console.print(f"  by CRM stage: {stages}")
    quirks = report["quirks"]
    table = Table(title="Data quirks and how they were handled", show_lines=False)
    table.add_column("quirk")
    table.add_column("rows", justify="right")
    table.add_column("handling")
    for product, entry in quirks["product_renamed"].items():
        table.add_row(
            f"product {product!r}",
            f"{entry['rows']:,}",
            f"matched to {entry['to']!r} (products.csv)",
        )
    for product, count in quirks["unknown_products"].items():
        table.add_row(f"unknown product {product!r}", f"{count:,}", "imported without a list price")
    for sector, entry in quirks["sector_corrected"].items():
        table.add_row(
            f"sector {sector!r}",
            f"{entry['rows']:,}",
            f"read as {entry['to']!r} ({entry['accounts']} accounts)",
        )
    for stage, count in quirks["no_account"].items():
        table.add_row(
            f"{stage} deals without an account", f"{count:,}", "imported, no account, no industry"
        )
    for account, count in quirks["unknown_accounts"].items():
        table.add_row(
            f"account {account!r} not in accounts.csv", f"{count:,}", "imported, no industry"
        )
    for agent, count in quirks["unknown_agents"].items():
        table.add_row(
            f"agent {agent!r} not in sales_teams.csv", f"{count:,}", "owner kept, no manager"
        )
    undated = quirks["undated_prospecting"]
    table.add_row(
        "Prospecting deals without any date",
        f"{undated['rows']:,}",
        f"opened at the export date {undated['opened_at']} (latest date in the export)",
    )
    table.add_row(
        "Lost deals with close_value 0",
        f"{quirks['lost_zero_close_value']:,}",
        "amount kept at list price; close_value kept as attribute",
    )
    if report["anomalies"]:
        table.add_row(
            "other anomalies",
            f"{len(report['anomalies']):,}",
            "imported as far as the data goes (see report)",
        )
    console.print(table)
    for code, example in report["rejected_examples"].items():
        console.print(
            f"  [red]rejected[/red] {report['rejected'][code]:,} x {code}, e.g. {example}"
        )
    console.print(
        f"  team directory: {report['directory']['people']} people merged (version {report['directory']['version']})"
    )


__all__ = ["ACTOR", "Export", "Plan", "import_crm", "plan", "print_report"]
