"""What /openapi.json declares (issue 9, defect 12), and regressions for the defects the
external schemathesis run (test_schemathesis_cli.py) found in the API itself."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.persistence.settings import StoreSettings
from engine.services import Services
from tests.hardening.conftest import AUTH, TestClient, live_client
from tests.hardening.test_auth_matrix import CONTRACT

JSON_ERROR = {"$ref": "#/components/schemas/Error"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Services]]:
    settings = StoreSettings(database_url=None, home=Path(tmp_path_factory.mktemp("truth")))
    with live_client(settings) as pair:
        yield pair


@pytest.fixture(scope="module")
def doc(world: tuple[TestClient, Services]) -> dict[str, Any]:
    return world[0].get("/openapi.json").json()  # type: ignore[no-any-return]


def _op(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return doc["paths"][path][method.lower()]  # type: ignore[no-any-return]


# -- the document -----------------------------------------------------------------------------


def test_the_rewriters_tables_name_served_operations(doc: dict[str, Any]) -> None:
    """engine.api.openapi's per-operation tables cannot drift from the routes unnoticed."""
    from engine.api import openapi, schemas

    keys = (
        openapi.IDEMPOTENT_WRITES
        | set(openapi.CONFLICTS)
        | set(openapi.TIME_PARAMETERS_OF)
        | set(openapi.PARAMETER_SCHEMAS)
        | openapi.RESOURCE_PARAMETERS
        | openapi.PUBLIC_STORE_READS
        | set(openapi.CONTENT)
        | set(schemas.SUCCESS_SCHEMAS)
    )
    served = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert keys - served == set()


def test_errors_are_the_contract_shape_not_fastapis(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert schemas["Error"]["required"] == ["error", "message"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                if status[0] in "45":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == JSON_ERROR, (method, path, status)


@pytest.mark.parametrize(("method", "path"), sorted(CONTRACT), ids=lambda v: str(v))
def test_every_v1_operation_needs_the_bearer_token(
    doc: dict[str, Any], method: str, path: str
) -> None:
    op = _op(doc, method, path)
    assert op["security"] == [{"bearer": []}]
    assert {"401", "403", "422", "429", "503"} <= set(op["responses"])
    assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
    assert f"Scope: {CONTRACT[(method, path)][0]}." in op["description"]
    if "requestBody" in op:
        assert {"400", "413"} <= set(op["responses"])
    if "{" in path:
        assert "404" in op["responses"]


def test_security_scheme_and_public_operations(doc: dict[str, Any]) -> None:
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    for path in ("/healthz", "/readyz"):
        op = _op(doc, "GET", path)
        assert "security" not in op and "401" not in op["responses"]
    assert "503" in _op(doc, "GET", "/readyz")["responses"]


@pytest.mark.parametrize("path", ["/v1/deals/{deal_id}/events", "/v1/deals/{deal_id}/nurture"])
def test_idempotent_writes_declare_the_replay_and_conflicts(doc: dict[str, Any], path: str) -> None:
    responses = _op(doc, "POST", path)["responses"]
    assert responses["200"]["headers"]["Idempotent-Replay"]["schema"] == {
        "type": "string",
        "enum": ["true"],
    }
    assert responses["200"]["content"] == responses["201"]["content"]
    for code in ("deal_exists", "version_conflict", "idempotency_key_reused"):
        assert code in responses["409"]["description"]
    for code in ("exit_criteria_unmet", "invalid_transition", "deal_closed"):
        assert code in responses["422"]["description"]
    assert (
        "pipeline_in_use"
        in _op(doc, "PUT", "/v1/pipelines/{pipeline_id}")["responses"]["409"]["description"]
    )


def test_media_types(doc: dict[str, Any]) -> None:
    export = _op(doc, "GET", "/v1/audit/export")["responses"]["200"]["content"]
    assert set(export) == {"application/x-ndjson", "text/csv"}
    review = _op(doc, "GET", "/v1/pipelines/{pipeline_id}/review")["responses"]["200"]["content"]
    assert set(review) == {"application/json", "text/plain", "text/html"}
    assert (
        "content"
        not in _op(doc, "DELETE", "/v1/subscriptions/{subscription_id}")["responses"]["204"]
    )


def test_times_are_date_time(doc: dict[str, Any]) -> None:
    state = doc["components"]["schemas"]["DealState"]["properties"]
    for field in ("opened_at", "stage_entered_at", "closed_at"):
        assert {"type": "string", "format": "date-time"} in state[field]["anyOf"]
    event = doc["components"]["schemas"]["History"]["properties"]["events"]["items"]
    assert event["properties"]["recorded_at"]["format"] == "date-time"
    params = {p["name"]: p["schema"] for p in _op(doc, "GET", "/v1/audit/export")["parameters"]}
    for name in ("from", "to"):
        assert {"type": "string", "format": "date-time"} in params[name]["anyOf"]
    as_of = {p["name"]: p["schema"] for p in _op(doc, "GET", "/v1/deals")["parameters"]}["as_of"]
    assert {"type": "string", "format": "date"} in as_of["anyOf"]  # a bare date is accepted
    forecast = {
        p["name"]: p["schema"]
        for p in _op(doc, "GET", "/v1/pipelines/{pipeline_id}/forecast")["parameters"]
    }
    assert "format" not in str(forecast["from"])  # months there, YYYY-MM


def test_the_served_replay_matches_the_document(world: tuple[TestClient, Services]) -> None:
    client = world[0]
    body = {"type": "opened", "event_id": "truth-open", "pipeline_id": "default", "name": "T"}
    first = client.post("/v1/deals/truth-1/events", json=body, headers=AUTH)
    again = client.post("/v1/deals/truth-1/events", json=body, headers=AUTH)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["Idempotent-Replay"] == "true"
    assert again.json() == first.json()
    assert first.json()["opened_at"].endswith("Z")


# -- defects schemathesis found ---------------------------------------------------------------


def test_405_allows_every_method_of_the_path(world: tuple[TestClient, Services]) -> None:
    """GET and PUT /v1/directory are two routes: the 405 said only `Allow: PUT`."""
    response = world[0].request("PATCH", "/v1/directory", headers=AUTH)
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "PUT"}
    assert response.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize("name", ["from", "to"])
def test_export_refuses_an_empty_time(world: tuple[TestClient, Services], name: str) -> None:
    """`?to=` was taken as "no bound" (200) where every other time parameter answers 422."""
    response = world[0].get("/v1/audit/export", params={name: ""}, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["details"][0]["field"] == name


@pytest.mark.parametrize(
    "stage",
    [
        {"max_days_in_stage": 1e270},
        {"max_days_in_stage": 100_001},
        {"max_days_in_stage": 10, "escalation": {"manager_after_days": 1e300}},
    ],
)
def test_day_counts_beyond_max_days_are_refused(
    world: tuple[TestClient, Services], stage: dict[str, Any]
) -> None:
    """1e270 days was stored, then every staleness read (`/v1/deals?stale=true`) was a 500."""
    client = world[0]
    body = {"name": "Huge", "stages": [{"id": "only", "name": "Only", "probability": 0.5, **stage}]}
    response = client.put("/v1/pipelines/huge-days", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    listed = client.get("/v1/deals", params={"stale": "true"}, headers=AUTH)
    assert listed.status_code == 200, listed.text


def test_sequence_steps_beyond_max_days_are_refused(world: tuple[TestClient, Services]) -> None:
    body = {"name": "Far", "steps": [{"after_days": 1e300, "channel": "task", "subject": "x"}]}
    response = world[0].put("/v1/sequences/far-away", json=body, headers=AUTH)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "change",
    [
        {"failing_after_seconds": False},
        {"timeout_seconds": 5e-324},
        {"failing_after_seconds": 1e300},
    ],
)
def test_subscription_durations_are_real_durations(
    world: tuple[TestClient, Services], change: dict[str, Any]
) -> None:
    """`false` was taken as 0 s; 5e-324 and 1e300 were a 500 on PostgreSQL (REAL column)."""
    body = {"url": "https://example.com/hook", **change}
    response = world[0].put("/v1/subscriptions/durations", json=body, headers=AUTH)
    assert response.status_code == 422, response.text


def test_tiny_durations_are_kept_to_the_millisecond(world: tuple[TestClient, Services]) -> None:
    body = {"url": "https://example.com/hook", "failing_after_seconds": 1e-300}
    response = world[0].put("/v1/subscriptions/tiny", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    assert response.json()["failing_after_seconds"] == 0


def test_token_names_are_documented_as_validated(doc: dict[str, Any]) -> None:
    """An empty name matched the documented schema yet was refused: the rule is in it now."""
    body = _op(doc, "POST", "/v1/tokens")["requestBody"]["content"]["application/json"]
    assert body["schema"]["properties"]["name"]["pattern"].startswith("^[A-Za-z0-9]")


@pytest.mark.parametrize("url", ["0", "http://?", "http:///hook", "http://é.example/"])
def test_subscription_urls_the_document_refuses_are_refused(
    world: tuple[TestClient, Services], doc: dict[str, Any], url: str
) -> None:
    """ "0" and "http://?" matched the documented schema yet were refused: the rule is in it."""
    import re

    body = _op(doc, "PUT", "/v1/subscriptions/{subscription_id}")["requestBody"]
    pattern = body["content"]["application/json"]["schema"]["properties"]["url"]["pattern"]
    assert re.search(pattern, url) is None
    response = world[0].put("/v1/subscriptions/bad-url", json={"url": url}, headers=AUTH)
    assert response.status_code == 422, response.text


def test_feed_filters_are_documented_as_the_wire_carries_them(
    world: tuple[TestClient, Services], doc: dict[str, Any]
) -> None:
    """`pipeline_id` is free text (comma-separated): documented as an array, a generated
    "schema-violating" boolean arrived as the valid text "true". `types`: empty pieces are
    ignored, so `types=` is no filter (it was documented as an enum, schemathesis seed 22)."""
    client = world[0]
    params = {p["name"]: p["schema"] for p in _op(doc, "GET", "/v1/feed")["parameters"]}
    assert params["pipeline_id"]["type"] == "string"
    pattern = re.compile(params["types"]["items"]["pattern"])
    for accepted in ["", "won", " won , lost ,", ",,"]:
        assert pattern.search(accepted), accepted
        assert client.get("/v1/feed", params={"types": accepted}, headers=AUTH).status_code == 200
    for refused in ["nope", "won,nope", "wonlost"]:
        assert not pattern.search(refused), refused
        assert client.get("/v1/feed", params={"types": refused}, headers=AUTH).status_code == 422


@pytest.mark.parametrize("lifetime", ["99999999999999999999w", "3000000d", "0", "1y"])
def test_token_lifetimes_beyond_a_datetime_are_refused(
    world: tuple[TestClient, Services], lifetime: str
) -> None:
    """ "99999999999999999999w" was a 500 (OverflowError) instead of a 422."""
    body = {"name": f"life-{len(lifetime)}", "scopes": ["read"], "expires_in": lifetime}
    response = world[0].post("/v1/tokens", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["details"][0]["field"] == "expires_in"
