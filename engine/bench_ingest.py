"""Placeholder: `dealflow bench ingest` (batch path vs raw COPY)."""

from __future__ import annotations

import argparse


def register(benches: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `dealflow bench ingest`."""
