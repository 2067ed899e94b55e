"""Running an import: whole deals per batch through the write path, the team directory merged,
and the report."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

from engine.application import Command, DealflowApp
from engine.domain.defaults import DEFAULT_PIPELINE_ID
from engine.domain.definitions import DIRECTORY
from engine.domain.errors import NotFound
from engine.importers.crm.export import ACTOR, BATCH_EVENTS, STAGES, Export
from engine.importers.crm.plan import plan


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
        # A bulk sender: the next batch is decided while the last one is stored.
        for outcomes in app.ingest_stream(_batches(built.deals, batch_events)):
            for outcome in outcomes:
                statuses[outcome.status] += 1
                if outcome.position:
                    position = max(position, outcome.position)
                if outcome.status == "rejected" and outcome.error is not None:
                    code = outcome.error.to_dict().get("error", "rejected")
                    rejected[code] += 1
                    examples.setdefault(code, f"{outcome.event_id}: {outcome.error.message}")
            advance(len(outcomes))

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
