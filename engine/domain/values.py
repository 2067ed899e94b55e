"""Small value checks and conversions the deal's commands share."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic_core import to_jsonable_python

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
    """Values exactly as the stored event will hold them (pydantic's JSON mode: a decimal is a
    string, also inside attributes), so a deal decided in memory equals the deal read back."""
    return {key: to_jsonable_python(value) for key, value in changes.items()}
