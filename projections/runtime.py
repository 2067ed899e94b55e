"""Placeholder: the projections area fills this in (read models, runner, wait)."""

from __future__ import annotations

from typing import Any


def attach(services: Any, *, run: bool = True) -> None:
    """Create the read-model tables and, if ``run``, the runner that keeps them current."""
