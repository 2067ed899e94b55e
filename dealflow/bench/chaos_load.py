"""A load generator that behaves like a careful client of the HTTP contract.

Each thread owns its deals (so its own writes never race each other) and sends, across every
API replica: deals opened one by one, batches of activities, updates, and stage changes that
start escalations (into ``qualification``) or enrol the deal in a nurture sequence (into
``proposal``). A failed request (transport error, 5xx) is sent again with the same body and
``event_id``s, to the next replica, until it gets an answer; some acknowledged requests are
sent again on purpose and must come back as replays. Everything sent is remembered, so that
the checks can tell acknowledged from unknown outcomes.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

PIPELINE = "chaos"
NEXT_STAGE = {"lead": "qualification", "qualification": "proposal"}


@dataclass
class Sent:
    """One request as the client saw it, after all its attempts."""

    kind: str  # "single" or "batch"
    deal_ids: list[str]
    event_ids: list[str]
    acked: set[str] = field(default_factory=set)  # recorded or replayed
    rejected: set[str] = field(default_factory=set)  # refused: must not be in the log
    answered: bool = False  # False: every attempt failed, the outcome is unknown
    attempts: int = 0


@dataclass
class LoadStats:
    requests: int = 0  # HTTP attempts, retries included
    answered: int = 0
    unknown: int = 0
    transport_errors: int = 0
    by_status: collections.Counter[int] = field(default_factory=collections.Counter)
    unavailable_with_retry_after: int = 0
    unavailable_without_retry_after: int = 0
    replays_asked: int = 0
    replays_ok: int = 0
    acked_at: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, events)


class Load:
    def __init__(
        self,
        apis: list[str],
        token: str,
        *,
        threads: int = 4,
        seed: int = 7,
        pause: float = 0.0,
        timeout: float = 15.0,
        max_attempts: int = 60,
    ) -> None:
        self.apis = apis
        self.headers = {"Authorization": f"Bearer {token}"}
        self.threads = threads
        self.seed = seed
        self.pause = pause
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.sent: list[Sent] = []
        self.stats = LoadStats()
        self.stages: dict[str, str] = {}  # deal -> last acknowledged stage
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    # -- running ----------------------------------------------------------------------------
    def start(self) -> None:
        for n in range(self.threads):
            thread = threading.Thread(target=self._run, args=(n,), name=f"load-{n}", daemon=True)
            thread.start()
            self._workers.append(thread)

    def stop(self, timeout: float = 120.0) -> None:
        """Stop sending; a request in flight keeps retrying until it has an answer."""
        self._stop.set()
        for thread in self._workers:
            thread.join(timeout)

    def acked_ids(self) -> set[str]:
        return {i for s in self.sent for i in s.acked}

    def _run(self, n: int) -> None:
        rng = random.Random(self.seed * 1000 + n)
        counter = 0
        mine: list[str] = []
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stop.is_set():
                counter += 1
                roll = rng.random()
                if roll < 0.2 or len(mine) < 3:
                    deal = f"c{n}-{counter}"
                    mine.append(deal)
                    stage = "qualification" if rng.random() < 0.3 else "lead"
                    body = {
                        "type": "opened",
                        "event_id": f"{deal}-open",
                        "pipeline_id": PIPELINE,
                        "name": deal,
                        "stage": stage,
                        "owner": "Owner A",
                        "attributes": {"contact_email": f"{deal}@buyers.test"},
                    }
                    self._single(client, rng, deal, body, stage)
                elif roll < 0.55:
                    size = rng.randint(2, 30)
                    events = [
                        {
                            "deal_id": rng.choice(mine),
                            "type": "activity_logged",
                            "event_id": f"c{n}-{counter}-a{i}",
                            "activity": "call",
                        }
                        for i in range(size)
                    ]
                    self._batch(client, rng, events)
                elif roll < 0.8:
                    deal = rng.choice(mine)
                    stage = NEXT_STAGE.get(self.stages.get(deal, ""), "")
                    if stage:
                        body = {
                            "type": "stage_changed",
                            "event_id": f"{deal}-to-{stage}",
                            "to_stage": stage,
                        }
                        self._single(client, rng, deal, body, stage)
                else:
                    deal = rng.choice(mine)
                    body = {
                        "type": "updated",
                        "event_id": f"c{n}-{counter}-u",
                        "amount": str(rng.randint(1, 500) * 100),
                    }
                    self._single(client, rng, deal, body, None)
                if self.pause:
                    time.sleep(self.pause)

    # -- one request, with retries --------------------------------------------------------
    def _post(
        self, client: httpx.Client, rng: random.Random, path: str, body: dict[str, Any], sent: Sent
    ) -> httpx.Response | None:
        first = rng.randrange(len(self.apis))
        for attempt in range(self.max_attempts):
            api = self.apis[(first + attempt) % len(self.apis)]
            sent.attempts += 1
            with self._lock:
                self.stats.requests += 1
            try:
                response = client.post(f"{api}{path}", json=body, headers=self.headers)
            except httpx.TransportError:
                with self._lock:
                    self.stats.transport_errors += 1
                time.sleep(min(0.05 * 2**attempt, 1.0))
                continue
            with self._lock:
                self.stats.by_status[response.status_code] += 1
            if response.status_code >= 500:
                wait = 0.2
                if response.status_code == 503:
                    retry_after = response.headers.get("Retry-After")
                    with self._lock:
                        if retry_after:
                            self.stats.unavailable_with_retry_after += 1
                        else:
                            self.stats.unavailable_without_retry_after += 1
                    wait = min(float(retry_after or 1), 2.0)
                time.sleep(wait)
                continue
            return response
        return None

    def _single(
        self,
        client: httpx.Client,
        rng: random.Random,
        deal: str,
        body: dict[str, Any],
        stage: str | None,
    ) -> None:
        sent = Sent("single", [deal], [body["event_id"]])
        with self._lock:
            self.sent.append(sent)
        response = self._post(client, rng, f"/v1/deals/{deal}/events", body, sent)
        self._settle_single(sent, response, deal, stage)
        if sent.acked and rng.random() < 0.1:
            # A client that never saw the answer sends again: it must be a replay.
            again = self._post(client, rng, f"/v1/deals/{deal}/events", body, sent)
            with self._lock:
                self.stats.replays_asked += 1
                if (
                    again is not None
                    and again.status_code == 200
                    and again.headers.get("Idempotent-Replay") == "true"
                ):
                    self.stats.replays_ok += 1

    def _settle_single(
        self, sent: Sent, response: httpx.Response | None, deal: str, stage: str | None
    ) -> None:
        with self._lock:
            if response is None:
                self.stats.unknown += 1
                return
            sent.answered = True
            self.stats.answered += 1
            if response.status_code in (200, 201):
                sent.acked.add(sent.event_ids[0])
                self.stats.acked_at.append((time.monotonic(), 1))
                if stage is not None:
                    self.stages[deal] = stage
            else:
                sent.rejected.add(sent.event_ids[0])

    def _batch(
        self, client: httpx.Client, rng: random.Random, events: list[dict[str, Any]]
    ) -> None:
        sent = Sent("batch", [e["deal_id"] for e in events], [e["event_id"] for e in events])
        with self._lock:
            self.sent.append(sent)
        response = self._post(client, rng, "/v1/events", {"events": events}, sent)
        with self._lock:
            if response is None:
                self.stats.unknown += 1
                return
            sent.answered = True
            self.stats.answered += 1
            if response.status_code != 200:
                sent.rejected.update(sent.event_ids)
                return
            for item in response.json()["results"]:
                event_id = sent.event_ids[item["index"]]
                if item["status"] in ("recorded", "duplicate"):
                    sent.acked.add(event_id)
                else:
                    sent.rejected.add(event_id)
            self.stats.acked_at.append((time.monotonic(), len(sent.acked)))
