"""Placeholder: the workflows area fills this in (Temporal client, outbox, sequences)."""

from __future__ import annotations

from typing import Any


def attach(services: Any) -> None:
    """Give the API what automation routes need."""
