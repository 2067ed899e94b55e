"""`dealflow bench ...`: programs that print figures against a baseline measured in the same
run (the machine is shared and noisy). Each module adds its own subcommands."""

from __future__ import annotations

import argparse

from dealflow.bench import (
    audit,
    chaos,
    crm_replay,
    feed,
    http_scale,
    ingest,
    read_side,
    scoring,
    workflows,
)


def register(benches: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for area in (ingest, crm_replay, http_scale, read_side, workflows, audit, feed, chaos, scoring):
        area.register(benches)
