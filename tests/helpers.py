"""Small builders shared by tests (no assertions here)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dealflow.runtime import build_services
from engine.application import Command, DealflowApp, Outcome
from engine.persistence.settings import StoreSettings
from engine.services import Services
from tests.conftest import TEST_TOKEN

_ids = itertools.count(1)

# The fields of a deal event as its audited history gives them (the feed and the export carry
# the same, plus their own position and deal/pipeline ids).
HISTORY_FIELDS = (
    "version",
    "type",
    "occurred_at",
    "recorded_at",
    "event_id",
    "actor",
    "pipeline_version",
    "hash",
    "data",
)


def command(deal_id: str, body: dict[str, Any], actor: str = "tester") -> Command:
    return Command.from_body(deal_id, {"event_id": f"evt-{next(_ids)}", **body}, actor)


def send(app: DealflowApp, deal_id: str, body: dict[str, Any]) -> Outcome:
    return app.ingest([command(deal_id, body)])[0]


@contextmanager
def api_services(settings: StoreSettings) -> Iterator[Services]:
    """The services behind the API, with the test token and no projection running; closed when
    the block ends. With no read model kept current, the occupancy check of a pipeline PUT would
    wait for one nobody updates, so it is off (pipeline_in_use is the projections area's to
    test)."""
    services = build_services(settings, bootstrap_token=TEST_TOKEN, run_projections=False)
    services.app.stage_occupancy = None
    try:
        yield services
    finally:
        services.close()
