"""Inputs and results of the webhook delivery workflow and its activities.

Pure pydantic, no I/O: the workflow imports this module through the sandbox.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookRun(_Model):
    """One run of a subscription's delivery workflow; ``cursor`` None means "from the table"."""

    subscription_id: str
    run: int
    cursor: int | None = None
    batch_size: int = 200


class FetchInput(_Model):
    subscription_id: str
    run: int
    after: int | None
    limit: int
    wait_seconds: float = 5.0


class Delivery(_Model):
    """One event to one subscription: its id stays the same on every retry."""

    delivery_id: str
    position: int
    deal_key: str  # deliveries with one key go out one at a time, in log order
    deal_id: str | None
    type: str
    body: str  # the JSON payload, serialised once


class FetchResult(_Model):
    stopped: bool = False  # the subscription is gone, paused, or this run was superseded
    after: int = 0
    next_after: int = 0
    deliveries: list[Delivery] = []
    timeout_seconds: float = 10.0
    retry_max_seconds: float = 300.0


class DeliverInput(_Model):
    subscription_id: str
    run: int
    deliveries: list[Delivery]


class DeliverResult(_Model):
    delivered: int = 0
    gone: bool = False  # the receiver answered 410: the subscription is paused
    stopped: bool = False  # the subscription was paused, deleted or superseded meanwhile
