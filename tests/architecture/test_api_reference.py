"""docs/api.md and the served OpenAPI document name the same routes, so the reference kept in
the repository cannot drift from the code (either way)."""

from __future__ import annotations

import re
from pathlib import Path

from dealflow.http import create_app
from dealflow.runtime import build_services
from engine.persistence.settings import StoreSettings

ROOT = Path(__file__).resolve().parents[2]
# `GET /v1/deals/{deal_id}` or `GET /v1/deals?pipeline_id=...` in backticks
ROUTE = re.compile(r"`(GET|POST|PUT|DELETE|PATCH)\s+(/[^`?\s]*)")


def _documented() -> set[tuple[str, str]]:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    # A route may wrap onto the next line inside its backticks.
    text = re.sub(r"`(GET|POST|PUT|DELETE|PATCH)\s*\n\s*", r"`\1 ", text)
    return {(method, path) for method, path in ROUTE.findall(text)}


def _served(tmp_path: Path) -> set[tuple[str, str]]:
    services = build_services(
        StoreSettings(database_url=None, home=tmp_path), run_projections=False
    )
    try:
        document = create_app(services).openapi()
    finally:
        services.close()
    return {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }


def test_every_served_route_is_documented_and_every_documented_route_is_served(
    tmp_path: Path,
) -> None:
    documented, served = _documented(), _served(tmp_path)
    assert served - documented == set(), "routes missing from docs/api.md"
    assert documented - served == set(), "docs/api.md names routes the API does not serve"


def test_the_reference_reader_finds_routes() -> None:
    """Guards the regex above: without it the test could pass on an empty set."""
    documented = _documented()
    assert ("POST", "/v1/deals/{deal_id}/events") in documented
    assert ("GET", "/v1/sequences/{sequence_id}/versions") in documented
    assert len(documented) >= 25
