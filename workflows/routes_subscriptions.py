"""Webhook subscriptions (admin): create or replace, read, list, delete, pause, resume, replay,
and the delivery log. Delivery itself is the worker's (workflows.webhook_supervisor)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.api.bodies import json_schema_body, read_json_object
from engine.api.deps import get_services, require
from engine.api.errors import ApiError, validation_error
from engine.api.helpers import check_slug
from engine.feed import FEED_TYPES
from engine.tokens import Principal
from workflows.subscriptions import (
    DEFAULT_FAILING_AFTER_SECONDS,
    DEFAULT_OVERLAP_SECONDS,
    DEFAULT_RETRY_MAX_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    Subscription,
    SubscriptionStore,
)

router = APIRouter(tags=["subscriptions"])
MAX_POSITION = 2**63 - 1
MAX_FAILING_AFTER_SECONDS = 365 * 86400
# http(s), a host (name, IPv4 or [IPv6]), an optional port, then printable ASCII. In the
# documented schema, so that what the document allows is what PUT accepts: "0" or "http://?"
# matched the old schema yet were refused (schemathesis positive_data_acceptance).
URL_PATTERN = (
    r"^https?://(?:[A-Za-z0-9._~%!$&'()*+,;=-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
    r"(?:[/?#][!-~]*)?$"
)


class SubscriptionBody(BaseModel):
    """A webhook subscription: where to POST which events, and how to sign them."""

    # strict: `false` is not a number of seconds (lax mode took it as 0)
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    url: str = Field(
        min_length=1,
        max_length=2000,
        pattern=URL_PATTERN,
        description="http(s) URL the events go to (ASCII: an international host in punycode)",
    )
    types: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="event types (empty: all)",
        json_schema_extra={"items": {"type": "string", "enum": list(FEED_TYPES)}},
    )
    pipelines: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=100, description="pipeline ids (empty: all)"
    )
    secret: str | None = Field(
        None,
        description="signing secret `whsec_<base64>`; generated when creating without one; a "
        "different one rotates: the old secrets keep signing for `secret_overlap_seconds`",
    )
    secret_overlap_seconds: float = Field(DEFAULT_OVERLAP_SECONDS, ge=0, le=30 * 86400)
    timeout_seconds: float = Field(DEFAULT_TIMEOUT_SECONDS, ge=0.001, le=120)
    failing_after_seconds: float = Field(
        DEFAULT_FAILING_AFTER_SECONDS,
        ge=0,
        le=MAX_FAILING_AFTER_SECONDS,
        description="a subscription whose deliveries keep failing this long is marked failing",
    )
    retry_max_seconds: float = Field(
        DEFAULT_RETRY_MAX_SECONDS, ge=1, le=86400, description="longest pause between retries"
    )
    start_from: int | None = Field(
        None,
        alias="from",
        ge=1,
        le=MAX_POSITION,
        description="on creation: the first log position to deliver (default: only new events)",
    )

    @field_validator(
        "secret_overlap_seconds", "timeout_seconds", "failing_after_seconds", "retry_max_seconds"
    )
    @classmethod
    def _milliseconds(cls, value: float) -> float:
        # PostgreSQL keeps these as REAL: 5e-324 was an underflow there, a 500 (schemathesis,
        # issue 9). Durations are kept to the millisecond.
        return round(value, 3)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.isprintable() or " " in value:
            raise ValueError("must be an http or https URL")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http or https URL")
        return value

    @field_validator("types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in FEED_TYPES]
        if unknown:
            raise ValueError(f"unknown event type(s): {', '.join(unknown)}")
        return sorted(set(value))

    @field_validator("pipelines")
    @classmethod
    def _pipelines(cls, value: list[str]) -> list[str]:
        return sorted(set(value))

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("whsec_"):
            raise ValueError("must look like whsec_<base64>")
        try:
            raw = base64.b64decode(value[len("whsec_") :], validate=True)
        except (binascii.Error, ValueError) as error:
            raise ValueError("must look like whsec_<base64>") from error
        if not 24 <= len(raw) <= 64:
            raise ValueError("must hold 24 to 64 random bytes")
        return value


def _store(request: Request) -> SubscriptionStore:
    return SubscriptionStore(get_services(request).app.db)


def _found(subscription: Subscription | None, subscription_id: str) -> Subscription:
    if subscription is None:
        raise ApiError(
            404,
            "not_found",
            f"subscription {subscription_id!r} does not exist",
            subscription_id=subscription_id,
        )
    return subscription


@router.put(
    "/v1/subscriptions/{subscription_id}",
    summary="Create or replace a webhook subscription (201 created, 200 replaced)",
    openapi_extra=json_schema_body(
        SubscriptionBody.model_json_schema(by_alias=True),
        {"url": "https://billing.example.com/hooks/dealflow", "types": ["won", "lost"]},
    ),
)
async def put_subscription(
    subscription_id: str, request: Request, _: Principal = require("admin")
) -> JSONResponse:
    check_slug(subscription_id, "subscription_id")
    body = await read_json_object(request)
    try:
        parsed = SubscriptionBody.model_validate(body)
    except ValidationError as error:
        raise validation_error(error) from error
    app = get_services(request).app
    store = _store(request)

    def work() -> tuple[Subscription, bool, str | None]:
        start_after = parsed.start_from - 1 if parsed.start_from is not None else app.max_position()
        return store.put(
            subscription_id,
            url=parsed.url,
            types=parsed.types,
            pipelines=parsed.pipelines,
            secret=parsed.secret,
            overlap_seconds=parsed.secret_overlap_seconds,
            timeout_seconds=parsed.timeout_seconds,
            failing_after_seconds=parsed.failing_after_seconds,
            retry_max_seconds=parsed.retry_max_seconds,
            start_after=start_after,
        )

    subscription, created, secret = await run_in_threadpool(work)
    view = subscription.view()
    if secret is not None:
        view["secret"] = secret  # shown once, when it is set
    return JSONResponse(view, status_code=201 if created else 200)


@router.get("/v1/subscriptions", summary="Every webhook subscription")
async def list_subscriptions(request: Request, _: Principal = require("admin")) -> dict[str, Any]:
    store = _store(request)
    subscriptions = await run_in_threadpool(store.all)
    return {"subscriptions": [s.view() for s in subscriptions]}


@router.get("/v1/subscriptions/{subscription_id}", summary="A webhook subscription")
async def get_subscription(
    subscription_id: str, request: Request, _: Principal = require("admin")
) -> dict[str, Any]:
    store = _store(request)
    return _found(await run_in_threadpool(store.get, subscription_id), subscription_id).view()


@router.delete(
    "/v1/subscriptions/{subscription_id}",
    status_code=204,
    summary="Delete a webhook subscription (its deliveries stop)",
)
async def delete_subscription(
    subscription_id: str, request: Request, _: Principal = require("admin")
) -> Response:
    store = _store(request)
    if not await run_in_threadpool(store.delete, subscription_id):
        _found(None, subscription_id)
    return Response(status_code=204)


async def _change(
    request: Request, subscription_id: str, change: Callable[[SubscriptionStore], object]
) -> dict[str, Any]:
    """Apply a change to an existing subscription (else 404) and show it as it now stands."""
    store = _store(request)

    def work() -> Subscription | None:
        if store.get(subscription_id) is None:
            return None
        change(store)
        return store.get(subscription_id)

    return _found(await run_in_threadpool(work), subscription_id).view()


@router.post("/v1/subscriptions/{subscription_id}/pause", summary="Pause deliveries")
async def pause_subscription(
    subscription_id: str, request: Request, principal: Principal = require("admin")
) -> dict[str, Any]:
    reason = f"paused by {principal.name}"
    return await _change(request, subscription_id, lambda s: s.pause(subscription_id, reason))


@router.post(
    "/v1/subscriptions/{subscription_id}/resume",
    summary="Resume deliveries from where they stopped",
)
async def resume_subscription(
    subscription_id: str, request: Request, _: Principal = require("admin")
) -> dict[str, Any]:
    return await _change(request, subscription_id, lambda s: s.resume(subscription_id))


@router.post(
    "/v1/subscriptions/{subscription_id}/replay",
    summary="Send history again from a log position on (new delivery ids), then carry on",
)
async def replay_subscription(
    subscription_id: str,
    request: Request,
    from_position: int = Query(
        ..., alias="from", ge=1, le=MAX_POSITION, description="first position to resend"
    ),
    _: Principal = require("admin"),
) -> dict[str, Any]:
    return await _change(
        request, subscription_id, lambda s: s.replay(subscription_id, from_position)
    )


@router.get(
    "/v1/subscriptions/{subscription_id}/deliveries",
    summary="The delivery log, newest first: every attempt with status code and latency",
)
async def list_deliveries(
    subscription_id: str,
    request: Request,
    limit: int = Query(100, ge=1, le=1000),
    cursor: int | None = Query(
        None, ge=1, le=MAX_POSITION, description="`next_cursor` of the previous page"
    ),
    _: Principal = require("admin"),
) -> dict[str, Any]:
    store = _store(request)
    _found(await run_in_threadpool(store.get, subscription_id), subscription_id)
    rows, next_cursor = await run_in_threadpool(
        lambda: store.deliveries(subscription_id, limit=limit, before=cursor)
    )
    return {"subscription_id": subscription_id, "deliveries": rows, "next_cursor": next_cursor}
