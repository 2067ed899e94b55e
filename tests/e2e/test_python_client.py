"""The Python client (clients/python, package dealflow_client) against a real `dealflow serve`
process on both stores: writes with batch splitting, idempotent retries through injected
503/429/network failures, reads, the feed iterator; webhook signature verification; and the
package building on its own."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from dealflow_client import (
    MAX_BATCH,
    ApiError,
    DealflowClient,
    RetryPolicy,
    WebhookVerificationError,
    verify_webhook,
)
from standardwebhooks.webhooks import Webhook

from tests.e2e.test_serve_walkthrough import BOOTSTRAP, serving
from tests.live import free_port

ROOT = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(attempts=6, initial=0.01, maximum=0.05)


@pytest.fixture(params=["sqlite", "postgres"])
def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with serving(request, tmp_path, "--log-level", "warning", "--no-projections") as server:
        yield server.url


class FlakyTransport(httpx.BaseTransport):
    """The real network, with failures injected in front of chosen requests:
    ``"503"``/``"429"`` answer without reaching the server; ``"lost"`` reaches the server and
    then loses the answer (the case that makes idempotent retries necessary)."""

    def __init__(self, plan: list[str]) -> None:
        self.inner = httpx.HTTPTransport()
        self.plan = plan
        self.sent: list[bytes] = []  # bodies that reached the server

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        step = self.plan.pop(0) if self.plan else "ok"
        if step in ("503", "429"):
            return httpx.Response(
                int(step),
                json={"error": "busy", "message": "try later"},
                headers={"Retry-After": "0"},
            )
        request.read()
        self.sent.append(request.content)
        response = self.inner.handle_request(request)
        if step == "lost":
            response.read()
            raise httpx.ReadError("connection reset after the server answered", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def _opened(deal_id: str, **extra: Any) -> dict[str, Any]:
    return {"type": "opened", "pipeline_id": "default", "name": f"Deal {deal_id}", **extra}


def test_writes_reads_and_the_feed(server_url: str) -> None:
    with DealflowClient(server_url, BOOTSTRAP, retry=FAST) as client:
        state = client.send_event("c-1", _opened("c-1", amount="99.90", event_id="c-1-open"))
        assert state["deal_id"] == "c-1" and state["amount"] == "99.90" and state["version"] == 1
        assert state["replayed"] is False and state["position"] > 0
        again = client.send_event("c-1", _opened("c-1", amount="99.90", event_id="c-1-open"))
        assert again["replayed"] is True and again["version"] == 1

        with pytest.raises(ApiError) as conflict:
            client.send_event("c-1", _opened("c-1"))
        assert conflict.value.status == 409 and conflict.value.code == "deal_exists"
        with pytest.raises(ApiError) as invalid:
            client.send_event("c-1", {"type": "stage_changed", "to_stage": "contract"})
        assert invalid.value.status == 422 and invalid.value.code == "exit_criteria_unmet"

        # 2 * 5,000 + 7 events: three batches, indexes counted across them, one deal per 7.
        events: list[dict[str, Any]] = []
        for n in range(2 * MAX_BATCH + 7):
            deal_id = f"b-{n // 7}"
            if n % 7 == 0:
                events.append({"deal_id": deal_id, **_opened(deal_id)})
            else:
                events.append({"deal_id": deal_id, "type": "activity_logged", "activity": "call"})
        events.append({"deal_id": "b-0", "type": "reopened", "to_stage": "prospecting"})
        result = client.send_events(events)
        assert [r["index"] for r in result.results] == list(range(len(events)))
        assert [r["status"] for r in result.results[:-1]] == ["recorded"] * (len(events) - 1)
        assert result.results[-1]["status"] == "rejected"
        assert result.results[-1]["error"]["error"] == "invalid_transition"
        assert result.position is not None

        assert client.get_deal("b-3")["version"] == 7
        assert [e["type"] for e in client.history("c-1")] == ["opened"]
        assert {"default"} <= {p["pipeline_id"] for p in client.pipelines()}

        # The feed iterator walks the whole log, page by page, in order.
        everything = list(client.feed(page_size=700))
        positions = [e["position"] for e in everything]
        assert positions == sorted(positions)
        deal_events = [e for e in everything if e["kind"] == "deal"]
        assert len(deal_events) == 1 + 2 * MAX_BATCH + 7
        assert deal_events[-1]["position"] == result.position
        assert [e["type"] for e in client.feed(deal_id="b-3")] == ["opened"] + [
            "activity_logged"
        ] * 6
        only_opened = list(client.feed(types=["opened"], page_size=5000))
        assert len(only_opened) == 1 + sum(1 for e in events if e["type"] == "opened")

        # follow=True long-polls for what comes next.
        def later() -> None:
            time.sleep(0.5)
            client.send_event("late", _opened("late"))

        writer = threading.Thread(target=later)
        writer.start()
        followed = client.feed(after=positions[-1], follow=True, wait=5)
        arrived = next(followed)
        writer.join()
        assert arrived["deal_id"] == "late" and arrived["position"] > positions[-1]


def test_retries_reuse_the_event_id_and_never_record_twice(server_url: str) -> None:
    # 503, then 429, then an answer lost on the way back, then success: one event recorded.
    transport = FlakyTransport(["503", "429", "lost"])
    with DealflowClient(server_url, BOOTSTRAP, retry=FAST, transport=transport) as client:
        state = client.send_event("r-1", _opened("r-1"))
        assert state["version"] == 1
        assert state["replayed"] is True  # the lost attempt had recorded it
        assert len(transport.sent) == 2 and transport.sent[0] == transport.sent[1]
        assert [e["event_id"] for e in client.history("r-1")] == [
            __import__("json").loads(transport.sent[0])["event_id"]
        ]

        # A batch whose answer is lost is sent again as is: every item comes back duplicate.
        transport.plan = ["lost"]
        batch = [{"deal_id": f"rb-{n}", **_opened(f"rb-{n}")} for n in range(20)]
        result = client.send_events(batch)
        assert [r["status"] for r in result.results] == ["duplicate"] * 20
        assert len(list(client.feed(types=["opened"]))) == 21

    # Out of attempts: the last error surfaces.
    transport = FlakyTransport(["503"] * 10)
    with (
        DealflowClient(
            server_url, BOOTSTRAP, retry=RetryPolicy(3, 0.01, 0.02), transport=transport
        ) as client,
        pytest.raises(ApiError) as busy,
    ):
        client.send_event("r-2", _opened("r-2"))
    assert busy.value.status == 503 and transport.sent == []

    # The server down altogether: network errors are retried, then raised.
    with (
        DealflowClient(
            f"http://127.0.0.1:{free_port()}", BOOTSTRAP, retry=RetryPolicy(2, 0.01, 0.02)
        ) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.get_deal("r-1")


SECRET = "whsec_" + base64.b64encode(b"a-secret-of-thirty-two-bytes-ok!").decode()
OTHER = "whsec_" + base64.b64encode(b"another-secret-thirty-two-bytes!").decode()


def _signed(body: str, secrets: list[str], at: datetime | None = None) -> dict[str, str]:
    moment = at or datetime.now(UTC)
    signatures = " ".join(Webhook(s).sign("dlv_1", moment, body) for s in secrets)
    return {
        "webhook-id": "dlv_1",
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signatures,
    }


def test_webhook_verification_refuses_tampering() -> None:
    body = '{"type": "opened", "data": {"deal_id": "x"}}'
    headers = _signed(body, [SECRET])
    assert verify_webhook(body.encode(), headers, SECRET)["data"] == {"deal_id": "x"}
    # Header names are case-insensitive.
    assert verify_webhook(body, {k.title(): v for k, v in headers.items()}, SECRET)

    with pytest.raises(WebhookVerificationError):
        verify_webhook(body.replace("x", "y").encode(), headers, SECRET)  # body changed
    tampered = dict(headers)
    signature = tampered["webhook-signature"]
    tampered["webhook-signature"] = (
        signature[:-5] + ("A" if signature[-5] != "A" else "B") + signature[-4:]
    )
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body.encode(), tampered, SECRET)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body.encode(), {**headers, "webhook-id": "dlv_2"}, SECRET)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body.encode(), {**headers, "webhook-signature": "garbage"}, SECRET)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body.encode(), headers, OTHER)  # wrong secret
    stale = _signed(body, [SECRET], datetime.now(UTC) - timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body.encode(), stale, SECRET)
    missing = {k: v for k, v in headers.items() if k != "webhook-timestamp"}
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body.encode(), missing, SECRET)

    # During a rotation the sender signs with both secrets; a receiver on either accepts.
    rotating = _signed(body, [OTHER, SECRET])
    assert verify_webhook(body.encode(), rotating, SECRET)
    assert verify_webhook(body.encode(), rotating, OTHER)
    assert verify_webhook(body.encode(), headers, [OTHER, SECRET])


def test_client_package_builds_and_stands_alone(tmp_path: Path) -> None:
    source = ROOT / "clients" / "python"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("dealflow_client-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "dealflow_client/client.py" in names and "dealflow_client/py.typed" in names
    assert not any(n.startswith(("engine/", "workflows/", "projections/")) for n in names)
    # It needs nothing from the server's packages.
    for path in (source / "src" / "dealflow_client").glob("*.py"):
        text = path.read_text()
        for package in ("engine", "workflows", "projections"):
            assert f"from {package}" not in text and f"import {package}" not in text, path
