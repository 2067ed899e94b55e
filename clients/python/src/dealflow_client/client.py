"""The dealflow HTTP client: writes (idempotent, retried), reads, the feed, subscriptions."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import quote

import httpx

from dealflow_client.errors import ApiError
from dealflow_client.types import (
    BatchItem,
    DealState,
    FeedEvent,
    FeedPage,
    Subscription,
)

MAX_BATCH = 5000
RETRY_STATUSES = frozenset({429, 503})


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter; ``Retry-After`` is honoured when it is longer."""

    attempts: int = 6
    initial: float = 0.2
    maximum: float = 10.0
    multiplier: float = 2.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        ceiling = min(self.maximum, self.initial * self.multiplier**attempt)
        pause = random.uniform(ceiling / 2, ceiling)
        return max(pause, min(retry_after or 0.0, self.maximum))


@dataclass
class BatchResult:
    """The results of :meth:`DealflowClient.send_events`, across every batch it took."""

    results: list[BatchItem] = field(default_factory=list)
    position: int | None = None  # the highest log position recorded, if any

    @property
    def rejected(self) -> list[BatchItem]:
        return [r for r in self.results if r["status"] == "rejected"]


class DealflowClient:
    """A client for one dealflow server and token. Thread-safe like ``httpx.Client``."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DealflowClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Send one request, retrying 503, 429 and network errors with the very same body
        (every write carries its event_id, so a retry is answered as a replay)."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        for attempt in range(self.retry.attempts):
            last = attempt == self.retry.attempts - 1
            try:
                response = self._http.request(method, path, json=json, params=clean, **extra)
            except httpx.TransportError:
                if last:
                    raise
                time.sleep(self.retry.delay(attempt))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                time.sleep(self.retry.delay(attempt, _retry_after(response)))
                continue
            if response.status_code >= 400:
                raise ApiError.from_response(response)
            return response
        raise AssertionError("unreachable")

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # -- writes --------------------------------------------------------------------------------
    def send_event(self, deal_id: str, event: Mapping[str, Any]) -> DealState:
        """Record one event on a deal (``event_id`` generated when absent). The answer is the
        deal's state with ``position``; ``replayed`` tells an idempotent replay."""
        body = _with_event_id(event)
        response = self.request("POST", f"/v1/deals/{_path(deal_id)}/events", json=body)
        state = cast(DealState, response.json())
        state["replayed"] = response.headers.get("Idempotent-Replay") == "true"
        return state

    def send_events(self, events: Iterable[Mapping[str, Any]]) -> BatchResult:
        """Record any number of events (each with ``deal_id``), in batches of 5,000.

        Items of one deal keep their order. ``index`` in the results counts across batches."""
        result = BatchResult()
        batch: list[dict[str, Any]] = []
        offset = 0

        def flush() -> None:
            nonlocal offset, batch
            if not batch:
                return
            answer = self._json("POST", "/v1/events", json={"events": batch})
            for item in answer["results"]:
                item["index"] += offset
                result.results.append(item)
            if answer.get("position") is not None:
                result.position = max(result.position or 0, int(answer["position"]))
            offset += len(batch)
            batch = []

        for event in events:
            if "deal_id" not in event:
                raise ValueError("every event of a batch needs its deal_id")
            batch.append(_with_event_id(event))
            if len(batch) == MAX_BATCH:
                flush()
        flush()
        return result

    def put_pipeline(self, pipeline_id: str, definition: Mapping[str, Any]) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self._json("PUT", f"/v1/pipelines/{_path(pipeline_id)}", json=definition),
        )

    def put_sequence(self, sequence_id: str, definition: Mapping[str, Any]) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self._json("PUT", f"/v1/sequences/{_path(sequence_id)}", json=definition),
        )

    def nurture(
        self, deal_id: str, action: str, sequence_id: str, *, event_id: str | None = None
    ) -> DealState:
        body = {"event_id": event_id or _new_id(), "action": action, "sequence_id": sequence_id}
        return cast(DealState, self._json("POST", f"/v1/deals/{_path(deal_id)}/nurture", json=body))

    # -- reads ---------------------------------------------------------------------------------
    def get_deal(
        self, deal_id: str, *, as_of: str | None = None, version: int | None = None
    ) -> DealState:
        return cast(
            DealState,
            self._json(
                "GET", f"/v1/deals/{_path(deal_id)}", params={"as_of": as_of, "version": version}
            ),
        )

    def history(self, deal_id: str) -> list[dict[str, Any]]:
        return cast(
            list[dict[str, Any]], self._json("GET", f"/v1/deals/{_path(deal_id)}/history")["events"]
        )

    def deals(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every deal matching the filters (pipeline_id, stage, status, stale), newest first."""
        return self._listing("/v1/deals", "deals", filters)

    def get_pipeline(self, pipeline_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._json("GET", f"/v1/pipelines/{_path(pipeline_id)}"))

    def pipelines(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every pipeline: id, name and current version."""
        return self._listing("/v1/pipelines", "pipelines", {"limit": page_size})

    def sequences(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._listing("/v1/sequences", "sequences", {"limit": page_size})

    def _listing(self, path: str, key: str, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Every item of a cursor-paged list, page after page."""
        cursor: str | None = None
        while True:
            page = self._json("GET", path, params={**params, "cursor": cursor})
            yield from page[key]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def metrics(self, pipeline_id: str, **params: Any) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self._json("GET", f"/v1/pipelines/{_path(pipeline_id)}/metrics", params=params),
        )

    # -- the feed ------------------------------------------------------------------------------
    def feed_page(
        self,
        after: int = 0,
        *,
        limit: int = 1000,
        types: Sequence[str] = (),
        pipeline_ids: Sequence[str] = (),
        deal_id: str | None = None,
        wait: float = 0,
    ) -> FeedPage:
        params: dict[str, Any] = {"after": after, "limit": limit, "deal_id": deal_id}
        if types:
            params["types"] = ",".join(types)
        if pipeline_ids:
            params["pipeline_id"] = ",".join(pipeline_ids)
        if wait:
            params["wait"] = wait
        # A long-poll may legitimately take ``wait`` seconds before answering.
        timeout = None if not wait else float(self._http.timeout.read or 30) + wait
        return cast(FeedPage, self._json("GET", "/v1/feed", params=params, timeout=timeout))

    def feed(
        self,
        after: int = 0,
        *,
        follow: bool = False,
        wait: float = 20.0,
        page_size: int = 1000,
        types: Sequence[str] = (),
        pipeline_ids: Sequence[str] = (),
        deal_id: str | None = None,
    ) -> Iterator[FeedEvent]:
        """Events after a position, in log order. Without ``follow`` it stops at the head;
        with it, it long-polls for what comes next, forever. Keep the last ``position`` you
        processed to resume after a restart."""
        while True:
            page = self.feed_page(
                after,
                limit=page_size,
                types=types,
                pipeline_ids=pipeline_ids,
                deal_id=deal_id,
                wait=wait if follow else 0,
            )
            yield from page["events"]
            after = max(after, page["next_after"])
            if not follow and not page["has_more"]:
                return

    # -- webhook subscriptions -----------------------------------------------------------------
    def put_subscription(self, subscription_id: str, body: Mapping[str, Any]) -> Subscription:
        return cast(
            Subscription,
            self._json("PUT", f"/v1/subscriptions/{_path(subscription_id)}", json=body),
        )

    def get_subscription(self, subscription_id: str) -> Subscription:
        return cast(Subscription, self._json("GET", f"/v1/subscriptions/{_path(subscription_id)}"))

    def subscriptions(self) -> list[Subscription]:
        return cast(list[Subscription], self._json("GET", "/v1/subscriptions")["subscriptions"])

    def delete_subscription(self, subscription_id: str) -> None:
        self.request("DELETE", f"/v1/subscriptions/{_path(subscription_id)}")

    def pause_subscription(self, subscription_id: str) -> Subscription:
        return cast(
            Subscription, self._json("POST", f"/v1/subscriptions/{_path(subscription_id)}/pause")
        )

    def resume_subscription(self, subscription_id: str) -> Subscription:
        return cast(
            Subscription, self._json("POST", f"/v1/subscriptions/{_path(subscription_id)}/resume")
        )

    def replay_subscription(self, subscription_id: str, from_position: int) -> Subscription:
        return cast(
            Subscription,
            self._json(
                "POST",
                f"/v1/subscriptions/{_path(subscription_id)}/replay",
                params={"from": from_position},
            ),
        )

    def deliveries(self, subscription_id: str, *, limit: int = 100) -> list[dict[str, Any]]:
        return cast(
            list[dict[str, Any]],
            self._json(
                "GET",
                f"/v1/subscriptions/{_path(subscription_id)}/deliveries",
                params={"limit": limit},
            )["deliveries"],
        )


def _new_id() -> str:
    return f"client-{uuid.uuid4()}"


def _with_event_id(event: Mapping[str, Any]) -> dict[str, Any]:
    """The body as sent, with an event_id fixed once: every retry sends the same key."""
    body = dict(event)
    body.setdefault("event_id", _new_id())
    return body


def _path(segment: str) -> str:
    return quote(segment, safe="")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
