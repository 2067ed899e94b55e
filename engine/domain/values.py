"""Small value checks and conversions the deal's commands share."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from engine.domain.errors import ValidationFailed


def check_amount(amount: Any) -> None:
    if amount is None:
        return
    value = amount if isinstance(amount, Decimal) else Decimal(str(amount))
    if not value.is_finite():
        raise ValidationFailed("amount must be a finite number", field="amount")
    if value < 0:
        raise ValidationFailed("amount cannot be negative", field="amount")


def json_ready(changes: dict[str, Any]) -> dict[str, Any]:
    ready: dict[str, Any] = {}
    for key, value in changes.items():
        if isinstance(value, Decimal):
            ready[key] = str(value)
        elif isinstance(value, date):
            ready[key] = value.isoformat()
        else:
            ready[key] = value
    return ready
