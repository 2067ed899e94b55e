"""Channels behind the touch activity: SMTP (a local aiosmtpd server) and a webhook (a local
HTTP server that fails first), each message delivered once, failures visible in the outbox."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.workflows.conftest import TICK_DAYS, Stack, pipeline_body, sequence_body, wait_for
from workflows.channels import Channels, SmtpSender, WebhookSender
from workflows.devserver import free_port

pytestmark = pytest.mark.temporal


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[_Inbox, int]]:
    inbox = _Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, Any], str]] = []
    failures_left = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        if cls.failures_left > 0:
            cls.failures_left -= 1
            self.send_response(503)
            self.end_headers()
            return
        cls.received.append((body, self.headers["Idempotency-Key"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        return None


@pytest.fixture
def webhook_server() -> Iterator[tuple[type[_Hook], str]]:
    handler = type("Hook", (_Hook,), {"received": [], "failures_left": 2})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def _open(stack: Stack, deal_id: str) -> None:
    stack.send(
        deal_id,
        {
            "type": "opened",
            "pipeline_id": "test",
            "name": "Globex",
            "account": "Globex",
            "owner": "Moses",
            "stage": "qualification",
            "attributes": {"contact_email": "cfo@globex.test"},
        },
    )


async def test_smtp_channel_sends_each_touch_once(
    stack: Stack, smtp_server: tuple[_Inbox, int]
) -> None:
    inbox, port = smtp_server
    stack.channels = Channels(
        smtp=SmtpSender(host="127.0.0.1", port=port, sender="sales@dealflow.test")
    )
    stack.put_pipeline("test", pipeline_body())
    stack.put_sequence("mail", sequence_body([0, TICK_DAYS / 4]))
    await stack.start()
    _open(stack, "d1")
    await wait_for(lambda: "nurture_stopped" in stack.types("d1"))
    assert len(inbox.messages) == 2
    first = inbox.messages[0]
    assert first.mail_from == "sales@dealflow.test" and first.rcpt_tos == ["cfo@globex.test"]
    content = first.content.decode()
    assert "Subject: Step 0 for Globex at Globex" in content and "Hello Globex, touch 0." in content
    assert "Message-ID: <" in content
    messages = stack.services.automation.outbox.list(deal_id="d1")
    assert [(m["delivery"], m["status"], m["attempts"]) for m in messages] == [
        ("smtp", "sent", 1)
    ] * 2


async def test_smtp_failure_is_visible_and_retried(stack: Stack) -> None:
    port = free_port()  # nothing listens here
    stack.channels = Channels(smtp=SmtpSender(host="127.0.0.1", port=port, timeout=1))
    stack.put_pipeline("test", pipeline_body())
    stack.put_sequence("mail", sequence_body([0]))
    await stack.start()
    _open(stack, "d1")

    def failed() -> list[dict[str, Any]]:
        return [
            m
            for m in stack.services.automation.outbox.list(deal_id="d1")
            if m["status"] == "failed"
        ]

    message = (await wait_for(failed))[0]
    assert message["delivery"] == "smtp" and "ConnectionRefusedError" in message["last_error"]
    assert "nurture_touch_sent" not in stack.types("d1")
    # The server comes up: the next retry delivers, exactly once.
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        await wait_for(lambda: "nurture_stopped" in stack.types("d1"), timeout=20)
    finally:
        controller.stop()
    assert len(inbox.messages) == 1
    [message] = stack.services.automation.outbox.list(deal_id="d1")
    assert (
        message["status"] == "sent" and message["attempts"] >= 2 and message["last_error"] is None
    )


async def test_webhook_channel_retries_with_backoff_and_delivers_once(
    stack: Stack, webhook_server: tuple[type[_Hook], str]
) -> None:
    hook, url = webhook_server
    stack.channels = Channels(
        webhook=WebhookSender(url), webhook_channels=frozenset({"webhook", "task"})
    )
    stack.put_pipeline("test", pipeline_body())
    stack.put_sequence("hooks", sequence_body([0], channel="task"))
    await stack.start()
    _open(stack, "d1")
    await wait_for(lambda: "nurture_stopped" in stack.types("d1"), timeout=20)
    assert len(hook.received) == 1
    body, key = hook.received[0]
    assert body["deal_id"] == "d1" and body["channel"] == "task" and body["to"] == "Moses"
    assert key == body["id"]
    [message] = stack.services.automation.outbox.list(deal_id="d1")
    assert (message["delivery"], message["status"], message["attempts"]) == ("webhook", "sent", 3)
    touches = [d for t, d in stack.automation("d1") if t == "nurture_touch_sent"]
    assert touches == [
        {
            "sequence_id": "hooks",
            "step": 0,
            "channel": "task",
            "to": "Moses",
            "subject": "Step 0 for Globex at Globex",
        }
    ]
