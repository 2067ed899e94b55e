"""Pure time and text helpers shared by workflows and activities (deterministic, no I/O)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from workflows.models import EscalationInput, Level, SendWindow

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")


def days(value: float) -> timedelta:
    return timedelta(days=value)


def escalation_levels(stay: EscalationInput) -> list[tuple[Level, float]]:
    """A stay's levels, in order, each with its delay (days) after the stage's limit."""
    levels: list[tuple[Level, float]] = [
        ("owner", 0.0),
        ("manager", stay.manager_after_days),
        ("flagged", stay.flag_after_days),
    ]
    if stay.close_as_lost_after_days is not None:
        # The last level, only when the stage asks for it: the deal is recorded lost.
        levels.append(("closed_lost", stay.close_as_lost_after_days))
    return levels


def counted_from(stay: EscalationInput, last_activity_at: datetime | None) -> datetime:
    """Where a stay's clock starts: its entry, or its latest activity when activity extends it."""
    if stay.activity_extends_limit and last_activity_at is not None:
        return max(stay.entered_at, last_activity_at)
    return stay.entered_at


def escalation_due(
    stay: EscalationInput, offset_days: float, last_activity_at: datetime | None
) -> datetime:
    return counted_from(stay, last_activity_at) + days(stay.max_days) + days(offset_days)


def next_open_slot(moment: datetime, window: SendWindow | None) -> datetime:
    """The first instant at or after ``moment`` inside the send window (``moment`` if none)."""
    if window is None:
        return moment
    zone = ZoneInfo(window.timezone)
    local = moment.astimezone(zone)
    for _ in range(15):
        day_start = local.replace(hour=window.start_hour, minute=0, second=0, microsecond=0)
        if window.end_hour == 24:
            day_end = local.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        else:
            day_end = local.replace(hour=window.end_hour, minute=0, second=0, microsecond=0)
        # Re-anchor through the zone so that DST gaps land on a real local time.
        day_start = datetime.fromtimestamp(day_start.timestamp(), zone)
        if local.isoweekday() in window.weekdays:
            if local < day_start:
                return day_start.astimezone(UTC)
            if local < day_end:
                return local.astimezone(UTC)
        next_day = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        local = datetime.fromtimestamp(next_day.replace(tzinfo=zone).timestamp(), zone)
    raise ValueError("the send window never opens")  # weekdays is non-empty, so unreachable


def render(template: str | None, fields: Mapping[str, Any]) -> str:
    """Fill ``{field}`` placeholders from the deal (``{attributes.key}`` reaches attributes).

    Unknown or empty fields become empty text; anything else in braces is left as written.
    """
    if not template:
        return ""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("attributes."):
            found = (fields.get("attributes") or {}).get(name.split(".", 1)[1])
        elif name in fields:
            found = fields[name]
        else:
            return match.group(0)
        return "" if found is None else str(found)

    return _PLACEHOLDER.sub(value, template)
