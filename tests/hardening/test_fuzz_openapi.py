"""Fuzzing every operation of the live OpenAPI document (schemathesis, in-process ASGI).

Every request carries the bootstrap token so the fuzzer reaches the handlers. Checks: no 5xx
(``not_a_server_error``), every 4xx is the contract's error body ``{"error": str, "message":
str}``, and a 2xx body matches the documented response schema. Bounded and derandomized.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from engine.persistence.settings import StoreSettings
from engine.services import Services
from tests.hardening.conftest import AUTH, live_client
from tests.hardening.test_auth_matrix import CONTRACT, PUBLIC

MAX_EXAMPLES = 15
REF = re.compile(r'"\$ref": "#/components/schemas/([^"]+)"')


def dangling_refs(doc: dict[str, Any]) -> set[str]:
    defined = set(doc.get("components", {}).get("schemas", {}))
    return set(REF.findall(json.dumps(doc))) - defined


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Services]]:
    settings_ = StoreSettings(database_url=None, home=Path(tmp_path_factory.mktemp("fuzz")))
    with live_client(settings_) as (client, services):
        # Something for path parameters to hit now and then: one deal on the built-in pipeline.
        client.post(
            "/v1/deals/fuzz-1/events",
            json={"type": "opened", "event_id": "fuzz-open", "pipeline_id": "default", "name": "F"},
            headers=AUTH,
        )
        yield client, services


@pytest.fixture(scope="module")
def api_schema(fuzzed: tuple[Any, Services]) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed[0].app)


def error_body(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx carries the contract's error body."""
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict), body
        assert isinstance(body.get("error"), str) and body["error"], body
        assert isinstance(body.get("message"), str), body
    return None


def success_conforms(ctx: Any, response: Any, case: Any) -> bool | None:
    if 200 <= response.status_code < 300:
        return response_schema_conformance(ctx, response, case)
    return None


OPERATIONS = sorted(CONTRACT) + [
    ("GET", p) for p in PUBLIC if p not in ("/", "/docs", "/openapi.json")
]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_errors(api_schema: Any, method: str, path: str) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        if path == "/v1/projections/wait" and isinstance(case.query, dict):
            # No projection runs here: a wait lasts its whole timeout (up to 60 s). Keep it short.
            case.query["timeout"] = 0.05
        if path == "/v1/feed" and isinstance(case.query, dict) and "wait" in case.query:
            case.query["wait"] = 0.05  # a long-poll with nothing new lasts its whole wait
        response = case.call(headers=AUTH)
        case.validate_response(response, checks=[not_a_server_error, error_body, success_conforms])

    run()


def test_openapi_has_no_dangling_refs(fuzzed: tuple[Any, Services]) -> None:
    """Hand-read request bodies point at component schemas: they must be in the document (they
    were not before e9e70af, and the fuzzer then sent no bodies at all)."""
    doc = fuzzed[0].get("/openapi.json").json()
    assert dangling_refs(doc) == set()
