"""The terminal face of a deal's timeline (`dealflow audit replay`), drawn with rich."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

# State fields worth a line after each event; the rest is in the JSON.
STATE_FIELDS = ("stage", "status", "amount", "currency", "owner", "stale")


def render_timeline(timeline: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    chain = timeline.get("chain")
    if chain is None:
        seal = Text("chain not checked", style="dim")
    elif chain["ok"]:
        seal = Text("hash chain intact", style="bold green")
    else:
        seal = Text(f"hash chain BROKEN: {chain['break_count']} finding(s)", style="bold red")
    console.print(
        Panel(
            Group(
                Text.assemble(
                    ("deal ", "dim"),
                    (timeline["deal_id"], "bold"),
                    ("  pipeline ", "dim"),
                    (str(timeline["pipeline_id"]), "bold"),
                    ("  version ", "dim"),
                    (str(timeline["version"]), "bold"),
                ),
                seal,
            ),
            title="dealflow audit replay",
            expand=False,
        )
    )
    if chain and not chain["ok"]:
        for item in chain["breaks"]:
            console.print(f"  [red]✗ v{item['version']} {item['kind']}[/red]: {item['message']}")
    if timeline.get("replay_error"):
        console.print(f"[red]{timeline['replay_error']}[/red]")

    for item in timeline["events"]:
        _event(console, item)


def _event(console: Console, item: dict[str, Any]) -> None:
    if item.get("pipeline_changed"):
        change = item["pipeline_changed"]
        console.rule(
            f"[yellow]pipeline definition v{change['from']} → v{change['to']} from here on[/yellow]"
        )
    header = Text.assemble(
        (f"v{item['version']:<3}", "bold cyan"),
        (f" {item['occurred_at']}", ""),
        (f"  {item['type']:<18}", "bold"),
        (f" {item['summary']}", ""),
    )
    console.print(header)
    meta = Text.assemble(
        ("      by ", "dim"),
        (item["actor"], ""),
        ("  event ", "dim"),
        (item["event_id"], ""),
        ("  recorded ", "dim"),
        (item["recorded_at"], ""),
        ("  pipeline v", "dim"),
        (str(item["pipeline_version"]), ""),
        ("  hash ", "dim"),
        (item["hash"][:12], "dim"),
    )
    console.print(meta)
    criteria = item.get("criteria")
    if criteria:
        table = Table(show_header=True, header_style="dim", box=None, padding=(0, 1, 0, 6))
        table.add_column("stage")
        table.add_column("exit criterion")
        table.add_column(f"held (pipeline v{item['pipeline_version']})")
        for criterion in criteria:
            held = "[green]✓ held[/green]" if criterion["held"] else "[red]✗ not held[/red]"
            table.add_row(criterion["stage"], criterion["criterion"], held)
        console.print(table)
    elif item["type"] == "stage_changed" and item["stage_change"]["direction"] == "backward":
        console.print("      [dim]moved backward: no exit criteria apply[/dim]")
    state = item.get("state")
    if state:
        parts = [
            f"{name}={state[name]}" for name in STATE_FIELDS if state.get(name) not in (None, False)
        ]
        facts = [name for name, value in sorted(state["facts"].items()) if value]
        if facts:
            parts.append("facts=" + ",".join(facts))
        console.print(Text("      → " + "  ".join(parts), style="green"))
