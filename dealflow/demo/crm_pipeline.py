"""The demo's pipeline shaped like the CRM sample, and the demo's estimate of close dates.

The sample knows only Prospecting > Engaging > Won / Lost, so the demo pipeline has exactly those
two stages (the default pipeline's six would leave four empty forever). Its figures come from
the sample itself: Engaging's probability is the sample's win rate (4,238 won of 6,711 closed),
its limit the 90th percentile of days from engaging to winning (106), and the review's monthly
target about the sample's monthly won value.

The sample has no expected close dates. So that the forecast has something to show, the demo
records one for each open Engaging deal: its engage date plus the sample's median days to win
(57), as an ``updated`` event by the actor ``demo:estimate`` with the basis in the attribute
``expected_close_basis``; it is an estimate and says so.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

from engine.application import Command
from engine.domain.pipeline import PipelineDefinition

PIPELINE_ID = "crm"
MEDIAN_DAYS_TO_WIN = 57
BASIS = f"estimate: engage date + {MEDIAN_DAYS_TO_WIN} days (the sample's median days to win)"
BODY: dict[str, Any] = {
    "name": "CRM sample: Prospecting > Engaging",
    "currency": "USD",
    "qualified_after": "prospecting",
    "stages": [
        {"id": "prospecting", "name": "Prospecting", "probability": 0.1, "max_days_in_stage": 30},
        {
            "id": "engaging",
            "name": "Engaging",
            "probability": 0.63,
            "max_days_in_stage": 106,
            "forecast_category": "best_case",
            "escalation": {"manager_after_days": 7, "flag_after_days": 14},
        },
    ],
    "scoring": {
        "min_closed_deals": 50,
        "base": 50,
        "rules": [
            {
                "id": "big-ticket",
                "points": 10,
                "when": {
                    "id": "big",
                    "kind": "field",
                    "field": "amount",
                    "op": "gte",
                    "value": 1000,
                },
            }
        ],
    },
    "review": {"monthly_target": "1000000", "near_limit_days": 7, "to": "sales@example.test"},
}


def install(app: Any, pipeline_id: str = PIPELINE_ID) -> int:
    return int(app.put_pipeline(pipeline_id, PipelineDefinition.model_validate(BODY), "demo"))


def estimate_close_dates(app: Any, directory: Path, export_date: str) -> int:
    """Record the estimated expected close date of every open Engaging deal of the export (its
    engage date plus the median days to win), at the end of the export date; how many."""
    from engine.importers.crm.export import Export, parse_date

    at = datetime.combine(datetime.fromisoformat(export_date).date(), time(23, 59), tzinfo=UTC)
    commands = []
    for row in Export.load(directory).opportunities:
        try:
            engaged = parse_date(row.get("engage_date", ""))
        except ValueError:
            continue
        if row.get("deal_stage") != "Engaging" or engaged is None:
            continue
        body = {
            "type": "updated",
            "event_id": f"demo:estimate:{row['opportunity_id']}",
            "occurred_at": at.isoformat(),
            "expected_close": (engaged + timedelta(days=MEDIAN_DAYS_TO_WIN)).isoformat(),
            "attributes": {"expected_close_basis": BASIS},
        }
        commands.append(Command.from_body(row["opportunity_id"], body, "demo:estimate"))
    recorded = 0
    for start in range(0, len(commands), 2000):
        outcomes = app.ingest(commands[start : start + 2000])
        recorded += sum(1 for outcome in outcomes if outcome.status == "recorded")
    return recorded
