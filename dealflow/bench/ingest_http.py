"""`dealflow bench ingest`'s HTTP figure: single events through a real `dealflow serve` at a
steady rate, with p50/p99 latency."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from typing import Any

from dealflow.bench.figures import percentile
from dealflow.bench.served import serving


def run_http(database_url: str, rate: float, seconds: float, deals: int = 200) -> dict[str, Any]:
    import httpx

    token = f"bench-{uuid.uuid4().hex}"
    with serving(database_url, 1, token) as port:
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        client = httpx.Client(
            base_url=base, headers=headers, timeout=30, limits=httpx.Limits(max_connections=64)
        )
        opened = [
            {
                "deal_id": f"http-{i}",
                "type": "opened",
                "event_id": f"http-{i}-open",
                "pipeline_id": "default",
                "name": f"HTTP {i}",
            }
            for i in range(deals)
        ]
        client.post("/v1/events", json={"events": opened}).raise_for_status()
        # Warm up (connections, caches) outside the measurement.
        for i in range(20):
            client.post(
                f"/v1/deals/http-{i}/events",
                json={"type": "activity_logged", "event_id": f"warm-{i}", "activity": "call"},
            )
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        lock = threading.Lock()

        def send(n: int) -> None:
            deal = f"http-{n % deals}"
            body = (
                {
                    "type": "activity_logged",
                    "event_id": f"h-{n}",
                    "activity": "email",
                    "summary": "follow-up",
                }
                if n % 3
                else {
                    "type": "fact_recorded",
                    "event_id": f"h-{n}",
                    "fact": "need",
                    "value": bool(n % 2),
                }
            )
            t = time.perf_counter()
            r = client.post(f"/v1/deals/{deal}/events", json=body)
            elapsed = time.perf_counter() - t
            with lock:
                latencies.append(elapsed * 1000)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        total = int(rate * seconds)
        threads = []
        start = time.perf_counter()
        for n in range(total):  # open loop: a request every 1/rate s, whatever the answers do
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t = threading.Thread(target=send, args=(n,))
            t.start()
            threads.append(t)
        for t in threads:
            t.join(60)
        wall = time.perf_counter() - start
        client.close()
        ordered = sorted(latencies)

        def pct(p: float) -> float:
            return percentile(ordered, p / 100)

        return {
            "http_rate": rate,
            "http_requests": len(ordered),
            "http_seconds": wall,
            "http_statuses": {str(k): v for k, v in sorted(statuses.items())},
            "http_p50_ms": pct(50),
            "http_p90_ms": pct(90),
            "http_p99_ms": pct(99),
            "http_max_ms": ordered[-1],
            "http_mean_ms": statistics.fmean(ordered),
        }


# -- command -----------------------------------------------------------------------------------
