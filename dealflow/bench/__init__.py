"""`dealflow bench ...`: programs that print figures against a baseline measured in the same
run (the machine is shared and noisy). Each module adds its own subcommands."""

from __future__ import annotations

import argparse

from dealflow.bench import audit, ingest, projections, scoring, workflows


def register(benches: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for area in (ingest, projections, workflows, audit, scoring):
        area.register(benches)
