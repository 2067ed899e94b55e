"""Webhook subscriptions end to end on both stores, delivered by Temporal (the real dev server)
to a real HTTP receiver: signatures the client verifies, per-deal order, delivery ids,
the delivery log, secret rotation, replay; and the failure cases: a receiver down then back,
a worker killed mid-delivery, a slow receiver, a 410, a tampered signature."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from dealflow_client import WebhookVerificationError, verify_webhook
from fastapi.testclient import TestClient
from temporalio.client import Client

from dealflow.http import create_app
from engine.persistence.settings import StoreSettings
from engine.services import Services
from tests.conftest import AUTH
from tests.helpers import send
from tests.webhook_receiver import Received, Receiver
from tests.workflows.conftest import stack_services, wait_for, worker_process
from workflows.channels import Channels
from workflows.worker import AutomationProcess

pytestmark = pytest.mark.temporal

SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYnl0ZXM="  # 32 bytes
NEW_SECRET = "whsec_" + "bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNyZXQhIQ=="  # 32 bytes


@dataclass
class Hooks:
    services: Services
    settings: StoreSettings
    api: TestClient
    client: Client
    task_queue: str
    prefix: str
    receiver: Receiver
    processes: list[AutomationProcess]

    @property
    def app(self) -> Any:
        return self.services.app

    async def start(self, *, run_worker: bool = True) -> AutomationProcess:
        process = AutomationProcess(
            self.app,
            self.client,
            self.task_queue,
            channels=Channels(),
            run_worker=run_worker,
            bridge_options={"poll_interval": 0.05, "workflow_id_prefix": self.prefix},
        )
        await process.start()
        self.processes.append(process)
        return process

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.api.request, method, path, headers=AUTH, **kwargs)

    async def subscribe(self, subscription_id: str = "billing", **body: Any) -> dict[str, Any]:
        document = {
            "url": self.receiver.url,
            "secret": SECRET,
            "from": 1,
            "types": ["opened", "activity_logged", "won", "lost"],
            **body,
        }
        response = await self.call("PUT", f"/v1/subscriptions/{subscription_id}", json=document)
        assert response.status_code in (200, 201), response.text
        return response.json()  # type: ignore[no-any-return]

    async def send(self, deal_id: str, body: dict[str, Any]) -> int:
        outcome = await asyncio.to_thread(send, self.app, deal_id, body)
        assert outcome.status == "recorded", outcome
        assert outcome.position is not None  # a recorded event has its position
        return outcome.position

    async def open_deals(self, prefix: str, count: int, events: int) -> list[int]:
        """``count`` deals with ``events`` events each, interleaved; returns their positions."""
        positions = []
        for d in range(count):
            positions.append(
                await self.send(
                    f"{prefix}-{d}",
                    {"type": "opened", "pipeline_id": "default", "name": f"Deal {d}"},
                )
            )
        for e in range(events - 1):
            for d in range(count):
                positions.append(
                    await self.send(
                        f"{prefix}-{d}", {"type": "activity_logged", "activity": f"call-{e}"}
                    )
                )
        return positions

    async def status(self, subscription_id: str = "billing") -> dict[str, Any]:
        response = await self.call("GET", f"/v1/subscriptions/{subscription_id}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


@pytest.fixture
async def hooks(temporal_client: Client, store_settings: StoreSettings) -> AsyncIterator[Hooks]:
    services = stack_services(store_settings)
    task_queue = f"tq-{uuid.uuid4().hex[:10]}"
    receiver = Receiver().start()
    api = TestClient(create_app(services))
    result = Hooks(
        services=services,
        settings=store_settings,
        api=api,
        client=temporal_client,
        task_queue=task_queue,
        prefix=f"{task_queue}/",
        receiver=receiver,
        processes=[],
    )
    try:
        yield result
    finally:
        for process in result.processes:
            await process.stop()
        # Subscriptions outlive this test's workers in the shared dev server: end them.
        for subscription in await asyncio.to_thread(
            lambda: api.get("/v1/subscriptions", headers=AUTH).json()["subscriptions"]
        ):
            await asyncio.to_thread(
                api.delete, f"/v1/subscriptions/{subscription['subscription_id']}", headers=AUTH
            )
        async for execution in temporal_client.list_workflows(
            f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running'"
        ):
            await temporal_client.get_workflow_handle(execution.id).terminate()
        receiver.stop()
        api.close()
        services.close()


def _by_deal(received: list[Received]) -> dict[str, list[int]]:
    order: dict[str, list[int]] = {}
    for item in received:
        data = item.payload["data"]
        order.setdefault(data["deal_id"] or data["type"], []).append(data["position"])
    return order


def _in_order_per_deal(received: list[Received]) -> None:
    for deal, positions in _by_deal(received).items():
        # At least once: a retried delivery may come again, but never before an earlier event.
        assert positions == sorted(positions), (deal, positions)


async def test_signed_deliveries_in_order_with_a_log_rotation_and_replay(hooks: Hooks) -> None:
    await hooks.start()
    created = await hooks.subscribe(types=["opened", "activity_logged", "won", "lost"])
    assert created["status"] == "active" and created["secret"] == SECRET
    positions = await hooks.open_deals("s", 4, 5)
    await wait_for(lambda: hooks.receiver.positions() >= set(positions), timeout=60)
    received = hooks.receiver.snapshot()
    assert {r.position for r in received} == set(positions)  # nothing else (filter by type)
    _in_order_per_deal(received)
    for item in received:
        payload = verify_webhook(item.body, item.headers, SECRET)
        data = payload["data"]
        assert payload["type"] == data["type"] and payload["timestamp"] == data["recorded_at"]
        assert item.delivery_id == f"billing-{data['position']}-0"
        assert {"deal_id", "pipeline_id", "hash", "event_id", "occurred_at"} <= data.keys()
    # A tampered body or signature is refused by the client's verifier.
    sample = received[0]
    with pytest.raises(WebhookVerificationError):
        verify_webhook(sample.body.replace(b"Deal", b"Meal"), sample.headers, SECRET)
    bad_headers = {**sample.headers, "webhook-signature": "v1," + "A" * 44}
    with pytest.raises(WebhookVerificationError):
        verify_webhook(sample.body, bad_headers, SECRET)

    # The delivery log: one 200 attempt per delivery, with its latency. The activity writes it
    # after a deal's POSTs, so it may trail what the receiver has by a moment: wait for it.
    def delivery_log() -> list[dict[str, Any]]:
        response = hooks.api.get(
            "/v1/subscriptions/billing/deliveries", params={"limit": 1000}, headers=AUTH
        )
        rows: list[dict[str, Any]] = response.json()["deliveries"]
        return rows if {row["position"] for row in rows} >= set(positions) else []

    log = await wait_for(delivery_log, timeout=30)
    assert {row["position"] for row in log} == set(positions)
    assert all(row["status_code"] == 200 and row["ok"] and row["latency_ms"] >= 0 for row in log)
    await wait_for(
        lambda: (
            hooks.api.get("/v1/subscriptions/billing", headers=AUTH).json()["cursor"]
            >= max(positions)
        )
    )

    # Rotation: the new secret signs from now on, the old one alongside until the overlap ends.
    rotated = await hooks.subscribe(types=["opened", "won", "lost"], secret=NEW_SECRET)
    assert rotated["secret"] == NEW_SECRET and len(rotated["secrets"]) == 2
    position = await hooks.send("s-0", {"type": "lost", "reason": "budget"})
    await wait_for(lambda: position in hooks.receiver.positions(), timeout=30)
    latest = next(r for r in hooks.receiver.snapshot() if r.position == position)
    assert len(latest.headers["webhook-signature"].split(" ")) == 2
    assert verify_webhook(latest.body, latest.headers, NEW_SECRET)
    assert verify_webhook(latest.body, latest.headers, SECRET)
    # A rotation with no overlap drops the old secret at once.
    await hooks.subscribe(types=["won", "lost"], secret=SECRET, secret_overlap_seconds=0)
    position = await hooks.send("s-1", {"type": "lost", "reason": "timing"})
    await wait_for(lambda: position in hooks.receiver.positions(), timeout=30)
    latest = next(r for r in hooks.receiver.snapshot() if r.position == position)
    assert verify_webhook(latest.body, latest.headers, SECRET)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(latest.body, latest.headers, NEW_SECRET)

    # Replay from a position: history matching the (current) filter comes again, new ids.
    before = len(hooks.receiver.snapshot())
    response = await hooks.call("POST", "/v1/subscriptions/billing/replay", params={"from": 1})
    assert response.status_code == 200 and response.json()["status"] == "active"
    lost_positions = {r.position for r in hooks.receiver.snapshot() if r.payload["type"] == "lost"}
    await wait_for(
        lambda: (
            len([r for r in hooks.receiver.snapshot()[before:] if r.payload["type"] == "lost"])
            >= len(lost_positions)
        ),
        timeout=30,
    )
    again = hooks.receiver.snapshot()[before:]
    assert {r.position for r in again} == lost_positions
    assert all(r.delivery_id.endswith("-1") for r in again)


async def test_subscription_api_validation_and_lifecycle(hooks: Hooks) -> None:
    bad = await hooks.call("PUT", "/v1/subscriptions/x", json={"url": "ftp://nowhere"})
    assert bad.status_code == 422 and bad.json()["error"] == "validation_error"
    bad = await hooks.call(
        "PUT", "/v1/subscriptions/x", json={"url": hooks.receiver.url, "types": ["nope"]}
    )
    assert bad.status_code == 422 and "nope" in bad.json()["message"]
    bad = await hooks.call(
        "PUT", "/v1/subscriptions/x", json={"url": hooks.receiver.url, "secret": "plain"}
    )
    assert bad.status_code == 422
    bad = await hooks.call("PUT", "/v1/subscriptions/Not A Slug", json={"url": hooks.receiver.url})
    assert bad.status_code == 422
    assert (await hooks.call("GET", "/v1/subscriptions")).json() == {"subscriptions": []}

    created = await hooks.call("PUT", "/v1/subscriptions/x", json={"url": hooks.receiver.url})
    assert created.status_code == 201
    generated = created.json()["secret"]
    assert generated.startswith("whsec_")
    # Defaults: every type, every pipeline, only events from now on.
    body = created.json()
    assert (
        body["types"] == []
        and body["pipelines"] == []
        and body["cursor"] == hooks.app.max_position()
    )
    replaced = await hooks.call(
        "PUT", "/v1/subscriptions/x", json={"url": hooks.receiver.url, "pipelines": ["default"]}
    )
    assert replaced.status_code == 200 and "secret" not in replaced.json()
    assert replaced.json()["pipelines"] == ["default"]
    listed = (await hooks.call("GET", "/v1/subscriptions")).json()["subscriptions"]
    assert [s["subscription_id"] for s in listed] == ["x"]
    assert all(generated not in str(s) for s in listed)  # secrets are never shown again

    paused = await hooks.call("POST", "/v1/subscriptions/x/pause")
    assert paused.json()["status"] == "paused"
    resumed = await hooks.call("POST", "/v1/subscriptions/x/resume")
    assert resumed.json()["status"] == "active"
    assert (
        await hooks.call("POST", "/v1/subscriptions/x/replay", params={"from": 0})
    ).status_code == 422
    assert (await hooks.call("DELETE", "/v1/subscriptions/x")).status_code == 204
    for method, path in (
        ("GET", "/v1/subscriptions/x"),
        ("DELETE", "/v1/subscriptions/x"),
        ("POST", "/v1/subscriptions/x/pause"),
        ("GET", "/v1/subscriptions/x/deliveries"),
    ):
        response = await hooks.call(method, path)
        assert response.status_code == 404 and response.json()["error"] == "not_found"
    reader = hooks.services.tokens.create("reader", ["read"])
    response = await asyncio.to_thread(
        hooks.api.get, "/v1/subscriptions", headers={"Authorization": f"Bearer {reader}"}
    )
    assert response.status_code == 403
    schema = (await hooks.call("GET", "/openapi.json")).json()["paths"]
    assert {"put", "get", "delete"} <= schema["/v1/subscriptions/{subscription_id}"].keys()
    for suffix in ("pause", "resume", "replay"):
        assert "post" in schema[f"/v1/subscriptions/{{subscription_id}}/{suffix}"]
    assert "get" in schema["/v1/subscriptions/{subscription_id}/deliveries"]


async def test_receiver_down_then_back(hooks: Hooks) -> None:
    await hooks.start()
    hooks.receiver.stop()
    await hooks.subscribe(failing_after_seconds=1, retry_max_seconds=1)
    positions = await hooks.open_deals("d", 3, 4)

    def failing() -> bool:
        return (
            hooks.api.get("/v1/subscriptions/billing", headers=AUTH).json()["status"] == "failing"
        )

    await wait_for(failing, timeout=30)
    log = (await hooks.call("GET", "/v1/subscriptions/billing/deliveries")).json()["deliveries"]
    assert log and all(row["status_code"] is None and row["error"] for row in log)
    assert max(row["attempt"] for row in log) >= 2  # retried
    hooks.receiver.start()
    await wait_for(lambda: hooks.receiver.positions() >= set(positions), timeout=60)
    received = hooks.receiver.snapshot()
    assert {r.position for r in received} == set(positions)
    _in_order_per_deal(received)
    await wait_for(lambda: not failing(), timeout=20)
    assert (await hooks.status())["status"] == "active"


async def test_slow_receiver_times_out_and_is_retried(hooks: Hooks) -> None:
    await hooks.start()
    await hooks.subscribe(timeout_seconds=1, retry_max_seconds=1)
    first = await hooks.send("slow", {"type": "opened", "pipeline_id": "default", "name": "S"})
    hooks.receiver.slow_once.add(f"billing-{first}-0")
    second = await hooks.send("slow", {"type": "activity_logged", "activity": "call"})
    await wait_for(lambda: {first, second} <= hooks.receiver.positions(), timeout=60)

    def log() -> list[dict[str, Any]]:
        return hooks.api.get("/v1/subscriptions/billing/deliveries", headers=AUTH).json()[
            "deliveries"
        ]

    rows = await wait_for(
        lambda: [r for r in log() if r["status_code"] == 200 and r["position"] == second]
    )
    timed_out = [r for r in log() if r["position"] == first and r["status_code"] is None]
    assert timed_out and "timed out" in timed_out[0]["error"]
    assert 900 <= timed_out[0]["latency_ms"] < 2900  # the 1 s timeout, not the 3 s answer
    assert any(r["position"] == first and r["status_code"] == 200 for r in log())
    assert rows
    # The slow delivery came twice, with one id; the second event only after it.
    received = hooks.receiver.snapshot()
    assert [r.position for r in received] == [first, first, second]
    assert received[0].delivery_id == received[1].delivery_id


async def test_gone_pauses_the_subscription(hooks: Hooks) -> None:
    await hooks.start()
    hooks.receiver.status = 410
    await hooks.subscribe()
    first = await hooks.send("g", {"type": "opened", "pipeline_id": "default", "name": "G"})
    await wait_for(lambda: first in hooks.receiver.positions(), timeout=30)
    await wait_for(
        lambda: (
            hooks.api.get("/v1/subscriptions/billing", headers=AUTH).json()["status"] == "paused"
        ),
        timeout=20,
    )
    state = await hooks.status()
    assert "410" in state["status_reason"]
    second = await hooks.send("g", {"type": "activity_logged", "activity": "call"})
    await asyncio.sleep(2)
    assert hooks.receiver.positions() == {first}  # nothing more while paused
    assert len(hooks.receiver.snapshot()) == 1  # and no retry of the 410
    hooks.receiver.status = 200
    assert (await hooks.call("POST", "/v1/subscriptions/billing/resume")).json()[
        "status"
    ] == "active"
    await wait_for(lambda: second in hooks.receiver.positions(), timeout=30)
    # The event the receiver refused with 410 is sent again on resume: no event is skipped.
    assert [r.position for r in hooks.receiver.snapshot()] == [first, first, second]


def _worker_process(hooks: Hooks) -> subprocess.Popen[bytes]:
    return worker_process(hooks.settings, hooks.client, hooks.task_queue)


async def test_worker_killed_mid_delivery_skips_nothing(hooks: Hooks) -> None:
    await hooks.start(run_worker=False)  # supervisor here, the worker in a child process
    hooks.receiver.hold = threading.Event()
    await hooks.subscribe(timeout_seconds=2, retry_max_seconds=1)
    worker = _worker_process(hooks)
    try:
        positions = await hooks.open_deals("k", 3, 3)
        await wait_for(lambda: hooks.receiver.snapshot(), timeout=60)  # a delivery is in flight
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        held = {r.delivery_id for r in hooks.receiver.snapshot()}
        hooks.receiver.hold.set()
        hooks.receiver.hold = None
        worker = _worker_process(hooks)
        await wait_for(lambda: hooks.receiver.positions() >= set(positions), timeout=90)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=20)
    received = hooks.receiver.snapshot()
    assert {r.position for r in received} == set(positions)
    _in_order_per_deal(received)
    # What was in flight when the worker died came again, under the same delivery id.
    ids = [r.delivery_id for r in received]
    assert all(ids.count(delivery) >= 2 for delivery in held)
    for delivery in set(ids):
        bodies = {r.body for r in received if r.delivery_id == delivery}
        assert len(bodies) == 1  # duplicates are the same delivery
