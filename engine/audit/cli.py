"""Placeholder command-line registration; its area fills it in."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's subcommands (and its `dealflow bench <name>`)."""
