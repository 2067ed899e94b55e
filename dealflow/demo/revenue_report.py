"""What the demo prints about issue 12's features, read from the same API as the dashboard: the
forecast by expected close month, the top-scored open deals and the pipeline review, each as of
the sample's last day."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import httpx


def _get(client: httpx.Client, path: str, **params: Any) -> Any:
    response = client.get(path, params=params, timeout=120)
    response.raise_for_status()
    return response.json() if "json" in response.headers.get("content-type", "") else response.text


def _short(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def print_revenue(console: Any, client: httpx.Client, pipeline_id: str, export_date: str) -> None:
    from rich.table import Table

    end = f"{export_date}T23:59:59Z"
    month = export_date[:7]
    definition = _get(client, f"/v1/pipelines/{pipeline_id}")
    target = (definition.get("review") or {}).get("monthly_target")
    query = {"from": month, "as_of": end, **({"target": target} if target else {})}
    forecast = _get(client, f"/v1/pipelines/{pipeline_id}/forecast", **query)
    table = Table(
        title=f"Forecast by expected close month, as of {export_date}", title_justify="left"
    )
    for column in ("month", "closed won", "commit", "best case (weighted)", "pipeline", "gap"):
        table.add_column(column, justify="left" if column == "month" else "right")
    for row in forecast["months"][:4]:
        table.add_row(
            row["month"],
            row["closed_won"]["value"],
            row["commit"]["value"],
            f"{row['best_case']['value']} ({row['best_case']['weighted_value']})",
            row["pipeline"]["value"],
            row["gap"] or "-",
        )
    console.print(table)
    undated = sum(v["deals"] for v in forecast["undated"].values())
    console.print(
        f"[dim]{undated:,} open deals have no expected close date (the sample's Prospecting"
        " deals); Engaging deals carry the demo's estimate (engage date + 57 days).[/dim]"
    )

    scored = _get(client, "/v1/deals", pipeline_id=pipeline_id, sort="score", limit=5, as_of=end)
    top = Table(title="Top-scored open deals", title_justify="left")
    for column in ("score", "deal", "owner", "why (strongest reasons)"):
        top.add_column(column)
    for deal in scored["deals"]:
        reasons = ", ".join(
            f"{r['feature']}={_short(r['value'])} {r['contribution']:+.2f}"
            if "feature" in r
            else f"{r['rule']} {r['points']:+}"
            for r in deal["score_reasons"][:3]
        )
        top.add_row(
            f"{deal['score']} ({deal['score_kind']})", deal["name"], deal["owner"] or "", reasons
        )
    console.print(top)
    if scored.get("model"):
        console.print(f"[dim]model: {pipeline_id} version {scored['model']['version']}[/dim]")

    since = (date.fromisoformat(export_date) - timedelta(days=6)).isoformat()
    text = _get(
        client, f"/v1/pipelines/{pipeline_id}/review", since=since, as_of=end, format="text"
    )
    lines = text.splitlines()
    console.print("[bold]" + lines[0] + "[/bold]")
    for line in lines[1:]:
        if line and not line.startswith("  - "):
            console.print(line, highlight=False)
