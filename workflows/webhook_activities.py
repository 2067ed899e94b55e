"""Activities of webhook delivery: read the log for a subscription, POST, move the cursor.

A delivery is signed the Standard Webhooks way (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``: HMAC-SHA256 over ``id.timestamp.body`` with each secret in force) and
its id is fixed by the subscription, the position and the replay count, so every retry of it
(another attempt, another worker) carries the same id and receivers can de-duplicate.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from standardwebhooks.webhooks import Webhook
from temporalio import activity
from temporalio.exceptions import ApplicationError

from engine.application import DealflowApp
from engine.domain.events import utcnow
from engine.feed import FeedFilter, FeedReader
from workflows.subscriptions import (
    PAUSED,
    AttemptRecord,
    Subscription,
    SubscriptionStore,
)
from workflows.webhook_models import (
    DeliverInput,
    DeliverResult,
    Delivery,
    FetchInput,
    FetchResult,
)

POLL_SECONDS = 0.05
USER_AGENT = "dealflow-webhooks/1"


def delivery_id(subscription: Subscription, position: int) -> str:
    return f"{subscription.id}-{position}-{subscription.replays}"


def payload(item: dict[str, Any]) -> bytes:
    """The Standard Webhooks payload shape: type, timestamp, and the feed event as data."""
    return orjson.dumps({"type": item["type"], "timestamp": item["recorded_at"], "data": item})


def _order_key(item: dict[str, Any]) -> str:
    """Deliveries with one key go out one at a time, in log order: a deal's events, or one
    definition's versions."""
    if item["deal_id"]:
        return str(item["deal_id"])
    definition = item.get("definition", {})
    return f"{definition.get('kind')}:{definition.get('id')}"


def signature_headers(delivery: str, body: str, secrets: list[str], at: datetime) -> dict[str, str]:
    return {
        "webhook-id": delivery,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(Webhook(s).sign(delivery, at, body) for s in secrets),
    }


class WebhookActivities:
    def __init__(self, app: DealflowApp, store: SubscriptionStore | None = None) -> None:
        self.app = app
        self.store = store or SubscriptionStore(app.db)
        self.reader = FeedReader(app)
        self._local = threading.local()

    def _http(self) -> httpx.Client:
        # One client (connection pool) per activity thread.
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(
                headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
                follow_redirects=False,
            )
        return client

    def _current(self, subscription_id: str, run: int) -> Subscription | None:
        subscription = self.store.get(subscription_id)
        if subscription is None or subscription.run != run or subscription.status == PAUSED:
            return None
        return subscription

    @activity.defn(name="webhook_fetch")
    def fetch(self, job: FetchInput) -> FetchResult:
        """The next batch of matching events after the cursor, waiting a little if none.

        The workflow passes the position everything before was delivered up to, so storing it
        here first saves a round trip per batch (the stored cursor trails by one batch)."""
        if job.after is not None and not self.store.advance(
            job.subscription_id, job.run, job.after
        ):
            return FetchResult(stopped=True)
        deadline = time.monotonic() + job.wait_seconds
        while True:
            subscription = self._current(job.subscription_id, job.run)
            if subscription is None:
                return FetchResult(stopped=True)
            after = subscription.cursor if job.after is None else job.after
            filters = FeedFilter.build(
                pipeline_ids=subscription.pipelines, types=subscription.types
            )
            page = self.reader.page(after, job.limit, filters)
            if page.events or page.next_after != after or time.monotonic() >= deadline:
                break
            activity.heartbeat()
            time.sleep(POLL_SECONDS)
        deliveries = [
            Delivery(
                delivery_id=delivery_id(subscription, item["position"]),
                position=item["position"],
                deal_key=_order_key(item),
                deal_id=item["deal_id"],
                type=item["type"],
                body=payload(item).decode(),
            )
            for item in page.events
        ]
        return FetchResult(
            after=after,
            next_after=page.next_after,
            deliveries=deliveries,
            timeout_seconds=subscription.timeout_seconds,
            retry_max_seconds=subscription.retry_max_seconds,
        )

    @activity.defn(name="webhook_deliver")
    def deliver(self, job: DeliverInput) -> DeliverResult:
        """POST one deal's deliveries in order, resuming after the last one a previous attempt
        reported done (its heartbeat); a failure fails the activity, and Temporal retries it."""
        info = activity.info()
        done = int(info.heartbeat_details[0]) if info.heartbeat_details else 0
        subscription = self._current(job.subscription_id, job.run)
        if subscription is None:
            return DeliverResult(stopped=True)
        records: list[AttemptRecord] = []
        try:
            for index in range(done, len(job.deliveries)):
                item = job.deliveries[index]
                status, error, latency = self._post(subscription, item)
                records.append(
                    AttemptRecord(
                        subscription_id=subscription.id,
                        delivery_id=item.delivery_id,
                        position=item.position,
                        deal_id=item.deal_id,
                        type=item.type,
                        attempt=info.attempt,
                        status_code=status,
                        error=error,
                        latency_ms=latency,
                    )
                )
                if status is not None and 200 <= status < 300:
                    activity.heartbeat(index + 1)
                    continue
                if status == 410:
                    self.store.pause(
                        subscription.id, "the receiver answered 410 Gone", run=subscription.run
                    )
                    return DeliverResult(delivered=index - done, gone=True)
                reason = error or f"the receiver answered {status}"
                self.store.delivery_failed(subscription, reason)
                raise ApplicationError(f"delivery {item.delivery_id}: {reason}", type="Undelivered")
        finally:
            self.store.log_attempts(records)
        self.store.delivered(subscription)
        return DeliverResult(delivered=len(job.deliveries) - done)

    def _post(
        self, subscription: Subscription, item: Delivery
    ) -> tuple[int | None, str | None, float]:
        secrets = subscription.signing_secrets(utcnow())
        headers = signature_headers(item.delivery_id, item.body, secrets, datetime.now(UTC))
        started = time.perf_counter()
        try:
            response = self._http().post(
                subscription.url,
                content=item.body.encode(),
                headers=headers,
                timeout=subscription.timeout_seconds,
            )
        except httpx.TimeoutException:
            latency = (time.perf_counter() - started) * 1000
            return None, f"timed out after {subscription.timeout_seconds:g} s", latency
        except httpx.TransportError as error:
            latency = (time.perf_counter() - started) * 1000
            return None, f"{type(error).__name__}: {error}"[:300], latency
        return response.status_code, None, (time.perf_counter() - started) * 1000

    def all(self) -> list[Any]:
        return [self.fetch, self.deliver]
