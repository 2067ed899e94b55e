"""Auth matrix: every ``/v1`` route of the live OpenAPI document, against every kind of caller.

The scope each route needs is written down here from the contract (shared/contract/http-v1.md,
Conventions: ``ingest`` writes; ``read`` state, lists, metrics; ``audit`` history, as-of,
verify, export; ``admin`` pipelines, sequences, the directory, tokens), not read from the code,
so that a route wired to the wrong scope fails here. A route the table does not know fails
``test_every_v1_route_is_in_the_contract_table``: add it with the scope the contract gives it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.persistence.settings import StoreSettings
from engine.services import Services
from tests.hardening.conftest import AUTH, TEST_TOKEN, TestClient, live_client

SCOPES = ("ingest", "read", "audit", "admin")
DEAL = "auth-deal-1"
PIPELINE = "default"
SEQUENCE = "auth-nurture"
_n = itertools.count(1)

PIPELINE_BODY = {
    "name": "Hardening",
    "currency": "EUR",
    "stages": [
        {"id": "first", "name": "First", "probability": 0.1},
        {"id": "second", "name": "Second", "probability": 0.5},
    ],
}
SEQUENCE_BODY = {
    "name": "Auth nurture",
    "steps": [{"after_days": 0, "channel": "email", "subject": "Hello {name}", "body": "..."}],
}


@dataclass(frozen=True)
class Call:
    """How to call a route with valid values, so that only auth decides the answer."""

    params: dict[str, Any] = field(default_factory=dict)
    body: Callable[[Services], dict[str, Any]] | None = None
    path_values: Callable[[Services], dict[str, str]] | None = None


def _victim(services: Services) -> dict[str, str]:
    name = f"victim-{next(_n)}"
    services.tokens.create(name, ["read"])
    return {"name": name}


def _hook(services: Services, subscription_id: str = "auth-hook") -> dict[str, str]:
    """A webhook subscription to call routes on (created when missing)."""
    from workflows.subscriptions import SubscriptionStore

    store = SubscriptionStore(services.app.db)
    if store.get(subscription_id) is None:
        store.put(
            subscription_id,
            url="http://127.0.0.1:9/hook",
            types=[],
            pipelines=[],
            secret=None,
            overlap_seconds=0,
            timeout_seconds=1,
            failing_after_seconds=60,
            retry_max_seconds=1,
            start_after=0,
        )
    return {"subscription_id": subscription_id}


# (method, path) -> the scope the contract gives it, and a valid call.
CONTRACT: dict[tuple[str, str], tuple[str, Call]] = {
    # admin: pipelines, sequences, the directory, tokens (writes of definitions; tokens)
    ("GET", "/v1/tokens"): ("admin", Call()),
    ("POST", "/v1/tokens"): (
        "admin",
        Call(body=lambda services: {"name": f"made-{next(_n)}", "scopes": ["read"]}),
    ),
    ("DELETE", "/v1/tokens/{name}"): ("admin", Call(path_values=_victim)),
    ("PUT", "/v1/pipelines/{pipeline_id}"): (
        "admin",
        Call(
            body=lambda services: PIPELINE_BODY,
            path_values=lambda _: {"pipeline_id": "auth-pipeline"},
        ),
    ),
    ("PUT", "/v1/sequences/{sequence_id}"): ("admin", Call(body=lambda services: SEQUENCE_BODY)),
    ("PUT", "/v1/directory"): (
        "admin",
        Call(
            body=lambda services: {"people": [{"id": "Moses Frase", "manager": "Dustin Brinkmann"}]}
        ),
    ),
    # read: state, lists, metrics (and reading the current definitions, the outbox)
    ("GET", "/v1/pipelines/{pipeline_id}"): ("read", Call()),
    ("GET", "/v1/sequences/{sequence_id}"): ("read", Call()),
    ("GET", "/v1/directory"): ("read", Call()),
    ("GET", "/v1/deals/{deal_id}"): ("read", Call()),
    ("GET", "/v1/deals"): ("read", Call(params={"pipeline_id": PIPELINE, "limit": 5})),
    ("GET", "/v1/pipelines/{pipeline_id}/metrics"): ("read", Call()),
    ("GET", "/v1/pipelines/{pipeline_id}/metrics/breakdown"): (
        "read",
        Call(params={"by": "industry"}),
    ),
    ("GET", "/v1/pipelines/{pipeline_id}/board"): ("read", Call()),
    ("GET", "/v1/pipelines/{pipeline_id}/forecast"): ("read", Call(params={"from": "2017-01"})),
    ("GET", "/v1/pipelines/{pipeline_id}/review"): ("read", Call()),
    ("GET", "/v1/projections"): ("read", Call()),
    ("GET", "/v1/projections/wait"): ("read", Call(params={"position": 0, "timeout": 0})),
    ("GET", "/v1/outbox"): ("read", Call()),
    # ingest: writes
    ("POST", "/v1/deals/{deal_id}/events"): (
        "ingest",
        Call(
            body=lambda services: {
                "type": "fact_recorded",
                "event_id": f"auth-fact-{next(_n)}",
                "fact": "need",
                "value": True,
            }
        ),
    ),
    ("POST", "/v1/events"): (
        "ingest",
        Call(
            body=lambda services: {
                "events": [
                    {
                        "deal_id": DEAL,
                        "type": "activity_logged",
                        "event_id": f"auth-act-{next(_n)}",
                        "activity": "call",
                    }
                ]
            }
        ),
    ),
    ("POST", "/v1/deals/{deal_id}/nurture"): (
        "ingest",
        Call(
            body=lambda services: {
                "event_id": f"auth-nurture-{next(_n)}",
                # enroll, unenroll, enroll...: each accepted call is a valid transition
                "action": "unenroll" if SEQUENCE in services.app.deal(DEAL).nurture else "enroll",
                "sequence_id": SEQUENCE,
            }
        ),
    ),
    # audit: history, as-of, verify, export (and the timeline, checkpoints, definition history)
    ("GET", "/v1/deals/{deal_id}/history"): ("audit", Call()),
    ("GET", "/v1/deals/{deal_id}/timeline"): ("audit", Call()),
    ("GET", "/v1/pipelines/{pipeline_id}/versions"): ("audit", Call()),
    ("GET", "/v1/sequences/{sequence_id}/versions"): ("audit", Call()),
    ("GET", "/v1/directory/versions"): ("audit", Call()),
    ("GET", "/v1/audit/verify"): ("audit", Call()),
    ("GET", "/v1/audit/export"): ("audit", Call(params={"deal_id": DEAL})),
    ("POST", "/v1/audit/checkpoints"): ("audit", Call()),
    # the event feed and the definition lists (read); webhook subscriptions (admin)
    ("GET", "/v1/feed"): ("read", Call(params={"limit": 5})),
    ("GET", "/v1/pipelines"): ("read", Call()),
    ("GET", "/v1/sequences"): ("read", Call()),
    ("PUT", "/v1/subscriptions/{subscription_id}"): (
        "admin",
        Call(body=lambda services: {"url": "http://127.0.0.1:9/hook"}),
    ),
    ("GET", "/v1/subscriptions"): ("admin", Call()),
    ("GET", "/v1/subscriptions/{subscription_id}"): ("admin", Call(path_values=_hook)),
    ("DELETE", "/v1/subscriptions/{subscription_id}"): (
        "admin",
        Call(path_values=lambda services: _hook(services, f"doomed-{next(_n)}")),
    ),
    ("POST", "/v1/subscriptions/{subscription_id}/pause"): ("admin", Call(path_values=_hook)),
    ("POST", "/v1/subscriptions/{subscription_id}/resume"): ("admin", Call(path_values=_hook)),
    ("POST", "/v1/subscriptions/{subscription_id}/replay"): (
        "admin",
        Call(params={"from": 1}, path_values=_hook),
    ),
    ("GET", "/v1/subscriptions/{subscription_id}/deliveries"): (
        "admin",
        Call(path_values=_hook),
    ),
}

PUBLIC = ["/openapi.json", "/healthz", "/readyz", "/", "/docs"]
# Outside /v1 and still behind a token (issue 9: /metrics was open on the API port). The log
# position and the projections' names, lags and errors are read-side data: scope ``read``.
GUARDED = {("GET", "/metrics"): "read"}


@dataclass
class World:
    client: TestClient
    services: Services
    tokens: dict[str, str]  # who -> token value

    def position(self) -> int:
        return self.services.app.max_position()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = StoreSettings(database_url=None, home=Path(tmp_path_factory.mktemp("auth")))
    with live_client(settings) as (client, services):
        opened = client.post(
            f"/v1/deals/{DEAL}/events",
            json={
                "type": "opened",
                "event_id": "auth-open",
                "pipeline_id": PIPELINE,
                "name": "Auth",
            },
            headers=AUTH,
        )
        assert opened.status_code == 201, opened.text
        seq = client.put(f"/v1/sequences/{SEQUENCE}", json=SEQUENCE_BODY, headers=AUTH)
        assert seq.status_code == 200, seq.text
        tokens = {scope: services.tokens.create(f"only-{scope}", [scope]) for scope in SCOPES}
        tokens["read+audit"] = services.tokens.create("read-audit", ["read", "audit"])
        tokens["all-but-audit"] = services.tokens.create("no-audit", ["ingest", "read", "admin"])
        tokens["revoked"] = services.tokens.create("revoked-all", list(SCOPES))
        assert services.tokens.revoke("revoked-all") == 1
        yield World(client, services, tokens)


def _url(world: World, path: str, call: Call) -> str:
    values = {
        "deal_id": DEAL,
        "pipeline_id": PIPELINE,
        "sequence_id": SEQUENCE,
        "name": "nobody",
        "subscription_id": "auth-hook",
    }
    if call.path_values is not None:
        values.update(call.path_values(world.services))
    return path.format(**values)


def _send(world: World, method: str, path: str, headers: dict[str, str]) -> Any:
    call = CONTRACT[(method, path)][1]
    body = call.body(world.services) if call.body is not None else None
    return world.client.request(
        method, _url(world, path, call), params=call.params, json=body, headers=headers
    )


ROUTES = sorted(CONTRACT)
ROUTE_IDS = [f"{m} {p}" for m, p in ROUTES]


def _assert_refused(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    assert isinstance(body.get("message"), str) and body["message"], body


# -- the route inventory ----------------------------------------------------------------------


def test_every_v1_route_is_in_the_contract_table(world: World) -> None:
    doc = world.client.get("/openapi.json").json()
    live = {
        (method.upper(), path)
        for path, ops in doc["paths"].items()
        if path.startswith("/v1")
        for method in ops
        if method in {"get", "post", "put", "patch", "delete"}
    }
    assert live - set(CONTRACT) == set(), "routes with no scope in the table"
    assert set(CONTRACT) - live == set(), "table routes missing from /openapi.json"


def test_no_v1_route_is_hidden_from_openapi(world: World) -> None:
    doc = world.client.get("/openapi.json").json()
    documented = {
        (m.upper(), p) for p, ops in doc["paths"].items() for m in ops if p.startswith("/v1")
    }
    app = world.client.app
    hidden = {
        (method, route.path)  # type: ignore[attr-defined]
        for route in app.routes  # type: ignore[attr-defined]
        if getattr(route, "path", "").startswith("/v1")
        for method in (getattr(route, "methods", None) or ()) - {"HEAD", "OPTIONS"}
    } - documented
    assert hidden == set()


@pytest.mark.parametrize("path", PUBLIC)
def test_public_paths_need_no_token(world: World, path: str) -> None:
    assert world.client.get(path).status_code == 200


def test_every_route_outside_v1_is_public_or_guarded(world: World) -> None:
    doc = world.client.get("/openapi.json").json()
    outside = {
        (method.upper(), path)
        for path, ops in doc["paths"].items()
        if not path.startswith("/v1")
        for method in ops
    }
    public = {("GET", path) for path in PUBLIC}
    assert outside - public - set(GUARDED) == set(), "decide: public or which scope"


def test_metrics_needs_a_read_token(world: World) -> None:
    anonymous = world.client.get("/metrics")
    _assert_refused(anonymous, 401, "unauthorized")
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer "), anonymous.headers
    assert "dealflow_log_position" not in anonymous.text
    for headers in BAD_HEADERS.values():
        _assert_refused(world.client.get("/metrics", headers=headers), 401, "unauthorized")
    revoked = {"Authorization": f"Bearer {world.tokens['revoked']}"}
    _assert_refused(world.client.get("/metrics", headers=revoked), 401, "unauthorized")
    for scope in ("ingest", "audit", "admin"):
        headers = {"Authorization": f"Bearer {world.tokens[scope]}"}
        _assert_refused(world.client.get("/metrics", headers=headers), 403, "forbidden")
    for who in ("read", "read+audit"):
        answer = world.client.get(
            "/metrics", headers={"Authorization": f"Bearer {world.tokens[who]}"}
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain"), answer.headers
        assert "# TYPE dealflow_log_position gauge" in answer.text
        assert f"dealflow_log_position {world.position()}" in answer.text


# -- 401: no, malformed, unknown or revoked token ---------------------------------------------

BAD_HEADERS = {
    "none": {},
    "unknown": {"Authorization": "Bearer df_not-a-real-token"},
    "empty-bearer": {"Authorization": "Bearer "},
    "basic-scheme": {"Authorization": f"Basic {TEST_TOKEN}"},
    "token-without-scheme": {"Authorization": TEST_TOKEN},
}


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("who", sorted(BAD_HEADERS))
def test_unauthenticated_is_401(world: World, method: str, path: str, who: str) -> None:
    before = world.position()
    _assert_refused(_send(world, method, path, BAD_HEADERS[who]), 401, "unauthorized")
    assert world.position() == before


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=ROUTE_IDS)
def test_revoked_token_is_401(world: World, method: str, path: str) -> None:
    before = world.position()
    headers = {"Authorization": f"Bearer {world.tokens['revoked']}"}
    _assert_refused(_send(world, method, path, headers), 401, "unauthorized")
    assert world.position() == before


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=ROUTE_IDS)
def test_auth_is_checked_before_the_input(world: World, method: str, path: str) -> None:
    """No token and garbage everywhere else: still 401, never a 404/422 that leaks existence."""
    url = path.format(
        deal_id="no such deal!",
        pipeline_id="NO",
        sequence_id="NO",
        name="x y",
        subscription_id="NO",
    )
    response = world.client.request(
        method,
        url,
        params={"position": "x", "by": "nope", "limit": "-1", "as_of": "yesterday"},
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    _assert_refused(response, 401, "unauthorized")


# -- 403: a token with one scope --------------------------------------------------------------


WRONG_SCOPE = [
    pytest.param(m, p, scope, id=f"{m} {p} as {scope}")
    for m, p in ROUTES
    for scope in SCOPES
    if scope != CONTRACT[(m, p)][0]
]


@pytest.mark.parametrize(("method", "path", "scope"), WRONG_SCOPE)
def test_single_scope_token_without_the_scope_is_403(
    world: World, method: str, path: str, scope: str
) -> None:
    before = world.position()
    response = _send(world, method, path, {"Authorization": f"Bearer {world.tokens[scope]}"})
    _assert_refused(response, 403, "forbidden")
    assert world.position() == before


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=ROUTE_IDS)
def test_single_scope_token_with_the_scope(world: World, method: str, path: str) -> None:
    scope = CONTRACT[(method, path)][0]
    response = _send(world, method, path, {"Authorization": f"Bearer {world.tokens[scope]}"})
    assert 200 <= response.status_code < 300, response.text


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=ROUTE_IDS)
def test_bootstrap_token_has_every_scope(world: World, method: str, path: str) -> None:
    response = _send(world, method, path, AUTH)
    assert 200 <= response.status_code < 300, response.text


# -- reads that need audit for some query parameters only --------------------------------------

AS_OF_READS = [
    (f"/v1/deals/{DEAL}", {"as_of": "2100-01-01T00:00:00Z"}),
    (f"/v1/deals/{DEAL}", {"version": 1}),
    ("/v1/deals", {"as_of": "2100-01-01T00:00:00Z"}),
]


@pytest.mark.parametrize(("path", "params"), AS_OF_READS, ids=lambda v: str(v))
@pytest.mark.parametrize(
    ("who", "allowed"),
    [("read", False), ("audit", False), ("all-but-audit", False), ("read+audit", True)],
)
def test_as_of_and_version_need_read_and_audit(
    world: World, path: str, params: dict[str, Any], who: str, allowed: bool
) -> None:
    headers = {"Authorization": f"Bearer {world.tokens[who]}"}
    response = world.client.get(path, params=params, headers=headers)
    if allowed:
        assert response.status_code == 200, response.text
    else:
        _assert_refused(response, 403, "forbidden")
    # Without the audit-only parameters, read alone is enough.
    plain = world.client.get(path, headers={"Authorization": f"Bearer {world.tokens['read']}"})
    assert plain.status_code == 200, plain.text


def test_revoking_a_token_over_http(world: World) -> None:
    """(Was a 500 on SQLite that revoked nothing: db.Cursor.rowcount; fixed in e9e70af.)"""
    token = world.services.tokens.create("short-lived", ["read"])
    headers = {"Authorization": f"Bearer {token}"}
    assert world.client.get(f"/v1/deals/{DEAL}", headers=headers).status_code == 200
    revoke = world.client.delete("/v1/tokens/short-lived", headers=AUTH)
    assert revoke.status_code == 200, revoke.text
    _assert_refused(world.client.get(f"/v1/deals/{DEAL}", headers=headers), 401, "unauthorized")


@pytest.mark.postgres
def test_revoking_a_token_over_http_on_postgres(pg_url: str, tmp_path: Path) -> None:
    """The same revocation on PostgreSQL."""
    with live_client(StoreSettings(database_url=pg_url, home=tmp_path)) as (client, services):
        token = services.tokens.create("short-lived", ["read"])
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/v1/deals", headers=headers).status_code == 200
        revoke = client.delete("/v1/tokens/short-lived", headers=AUTH)
        assert revoke.status_code == 200, revoke.text
        assert revoke.json() == {"name": "short-lived", "revoked": 1}
        _assert_refused(client.get("/v1/deals", headers=headers), 401, "unauthorized")
