"""The pipeline review digest as text (terminal, plain e-mail) and as HTML (e-mail, browser)."""

from __future__ import annotations

from html import escape
from typing import Any


def _money(value: Any, currency: str) -> str:
    if value is None:
        return "-"
    return f"{float(value):,.2f} {currency}"


def _deal(d: dict[str, Any], currency: str) -> str:
    owner = f", {d['owner']}" if d.get("owner") else ""
    return f"{d['name']} ({d['deal_id']}{owner}, {_money(d.get('amount'), currency)})"


def sections(digest: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(title, lines) pairs: what both renderings show, in order."""
    cur = digest["currency"]
    moved = digest["moved_forward"]
    closed = digest["closed"]
    new = digest["new_deals"]
    stuck = digest["stuck"]
    out: list[tuple[str, list[str]]] = []
    out.append(
        (
            f"Moved forward: {moved['count']}",
            [f"{_deal(d, cur)}: {d['from_stage']} -> {d['to_stage']}" for d in moved["deals"]],
        )
    )
    out.append(
        (
            f"Closed: {closed['won']} won ({_money(closed['won_value'], cur)}), {closed['lost']} lost",
            [f"{d['status'].upper()} {_deal(d, cur)}" for d in closed["deals"]],
        )
    )
    out.append(
        (
            f"Stuck: {stuck['count']} ({stuck['stale']} stale, {stuck['near_limit']} near their limit)",
            [
                f"{group['owner']}: {group['count']} -- "
                + "; ".join(
                    f"{d['name']} in {d['stage']}"
                    + (" (stale)" if d["stale"] else f" ({d['days_left']:.1f} d left)")
                    for d in group["deals"][:5]
                )
                for group in stuck["by_owner"]
            ],
        )
    )
    out.append(
        (
            f"New deals: {new['count']} ({_money(new['value'], cur)})",
            [_deal(d, cur) for d in new["deals"]],
        )
    )
    out.append(
        (
            "Forecast against target",
            [
                f"{m['month']}: won {_money(m['closed_won'], cur)}, commit {_money(m['commit'], cur)},"
                f" best case {_money(m['best_case'], cur)}, pipeline {_money(m['pipeline'], cur)}"
                + (
                    f"; target {_money(m['target'], cur)}, gap {_money(m['gap'], cur)}"
                    if m["target"] is not None
                    else ""
                )
                for m in digest["forecast"]["months"]
            ],
        )
    )
    top = digest["top_scored"]
    out.append(
        (
            "Top-scored open deals",
            [
                f"{d['score'] if d['score'] is not None else '-'} ({d['score_kind']}) {_deal(d, cur)}"
                for d in top["deals"]
            ],
        )
    )
    return out


def title(digest: dict[str, Any]) -> str:
    return (
        f"Pipeline review: {digest['pipeline_name']} ({digest['pipeline_id']}),"
        f" {digest['since'][:10]} to {digest['until'][:10]}"
    )


def to_text(digest: dict[str, Any]) -> str:
    lines = [title(digest), ""]
    for heading, items in sections(digest):
        lines.append(heading)
        lines.extend(f"  - {item}" for item in items)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def to_html(digest: dict[str, Any]) -> str:
    parts = [
        '<!doctype html><html><head><meta charset="utf-8">',
        f"<title>{escape(title(digest))}</title></head><body>",
        f"<h1>{escape(title(digest))}</h1>",
    ]
    for heading, items in sections(digest):
        parts.append(f"<h2>{escape(heading)}</h2>")
        if items:
            parts.append("<ul>" + "".join(f"<li>{escape(i)}</li>" for i in items) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
