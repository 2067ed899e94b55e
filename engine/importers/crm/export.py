"""Reading the export: the four CSV files, their dates and amounts, and the data's quirks."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

ACTOR = "import:crm"
FILES = ("sales_pipeline.csv", "accounts.csv", "products.csv", "sales_teams.csv")
BATCH_EVENTS = 5000
LOST_REASON = "Lost in CRM (no reason recorded in the export)"
IMPLIED = "Imported from the CRM export: implied by the Won outcome (no date of its own)"
SECTOR_CORRECTIONS = {"technolgy": "technology"}
STAGES = ("Prospecting", "Engaging", "Won", "Lost")


def normalise_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def email_for(person: str) -> str:
    local = ".".join(p for p in (normalise_key(part) for part in person.split()) if p)
    return f"{local or 'unknown'}@example.com"


def parse_date(text: str) -> date | None:
    text = (text or "").strip()
    return date.fromisoformat(text) if text else None


def parse_money(text: str) -> Decimal | None:
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
            normalise_key(row["product"]): (
                row["product"],
                row.get("series") or "",
                parse_money(row.get("sales_price", "")),
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
            for d in (safe_date(row.get("engage_date")), safe_date(row.get("close_date")))
            if d is not None
        ]
        return max(dates) if dates else date.today()


def safe_date(text: str | None) -> date | None:
    try:
        return parse_date(text or "")
    except ValueError:
        return None
