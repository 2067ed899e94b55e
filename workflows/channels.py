"""Senders behind the activities: the outbox (default), SMTP and a webhook.

A sender raises on failure; the activity records the failure on the outbox row (visible at
``GET /v1/outbox``) and lets Temporal retry with backoff. SMTP messages carry a deterministic
``Message-ID`` and webhook calls an ``Idempotency-Key`` so a receiver can drop the rare duplicate
left by a crash between delivery and bookkeeping.
"""

from __future__ import annotations

import hashlib
import json
import logging
import smtplib
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlparse

from eventsourcing.persistence import InterfaceError, OperationalError

from engine.persistence.outage import StoreUnavailable
from engine.settings import Settings
from workflows.outbox import PENDING, SENT, Entry, Message, Outbox

# Messages of one batch in flight at once (deliver_many).
SEND_CONCURRENCY = 8

log = logging.getLogger("dealflow.channels")


class Sender(Protocol):
    name: str

    def send(self, message: Message) -> None: ...


class OutboxSender:
    """No channel configured: the outbox row is the delivery."""

    name = "outbox"

    def send(self, message: Message) -> None:
        return None


@dataclass
class SmtpSender:
    host: str
    port: int = 25
    sender: str = "dealflow@localhost"
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout: float = 10.0
    name: str = "smtp"

    @classmethod
    def from_url(cls, url: str, sender: str | None = None) -> SmtpSender:
        """``smtp://user:pass@host:port?starttls=1``."""
        parsed = urlparse(url)
        query = parse_qs(parsed.query)
        return cls(
            host=parsed.hostname or "localhost",
            port=parsed.port or 25,
            sender=sender or "dealflow@localhost",
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            starttls=query.get("starttls", ["0"])[0] in ("1", "true", "yes"),
        )

    def send(self, message: Message) -> None:
        if not message.to or "@" not in message.to:
            raise ValueError(f"no e-mail address to send {message.id!r} to")
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Message-ID"] = f"<{hashlib.sha256(message.id.encode()).hexdigest()[:40]}@dealflow>"
        mail["X-Dealflow-Message"] = message.id
        mail.set_content(message.body or "")
        if message.html:
            mail.add_alternative(message.html, subtype="html")
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(mail)


@dataclass
class WebhookSender:
    url: str
    timeout: float = 10.0
    headers: dict[str, str] = field(default_factory=dict)
    name: str = "webhook"

    def send(self, message: Message) -> None:
        payload = {
            "id": message.id,
            "deal_id": message.deal_id,
            "kind": message.kind,
            "channel": message.channel,
            "to": message.to,
            "subject": message.subject,
            "body": message.body,
            **({"html": message.html} if message.html else {}),
        }
        request = urllib.request.Request(
            self.url,
            data=json.dumps(payload).encode(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": message.id,
                **self.headers,
            },
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            if not 200 <= response.status < 300:
                raise RuntimeError(f"webhook answered {response.status}")


@dataclass
class Channels:
    """Which sender each channel goes through; anything unrouted lands in the outbox."""

    smtp: SmtpSender | None = None
    webhook: WebhookSender | None = None
    webhook_channels: frozenset[str] = frozenset({"webhook"})
    outbox_sender: OutboxSender = field(default_factory=OutboxSender)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Channels:
        settings = Settings.load(environ)
        smtp_url = settings.smtp_url
        webhook_url = settings.webhook_url
        routed = settings.webhook_channels
        return cls(
            smtp=SmtpSender.from_url(smtp_url, settings.smtp_from) if smtp_url else None,
            webhook=WebhookSender(webhook_url) if webhook_url else None,
            webhook_channels=frozenset(c.strip() for c in routed.split(",") if c.strip()),
        )

    def route(self, message: Message) -> Sender:
        if (
            message.channel == "email"
            and self.smtp is not None
            and message.to
            and "@" in message.to
        ):
            return self.smtp
        if message.channel in self.webhook_channels and self.webhook is not None:
            return self.webhook
        return self.outbox_sender

    def named(self, name: str) -> Sender:
        found = {"smtp": self.smtp, "webhook": self.webhook}.get(name)
        return found if found is not None else self.outbox_sender


def deliver(
    outbox: Outbox,
    channels: Channels,
    message: Message,
    claim: Callable[[tuple[Message, str, str]], Entry] | None = None,
) -> Entry:
    """Send a message at most once per id: claim its row, skip if already sent, else send and mark.

    ``claim`` may batch the claim with other activities' (group commit).
    """
    route = channels.route(message)
    request = (message, route.name, SENT if isinstance(route, OutboxSender) else PENDING)
    entry = claim(request) if claim is not None else outbox.claim(*request)
    if entry.status == SENT:
        return entry
    sender = channels.named(entry.delivery)
    try:
        sender.send(entry.message)
    except Exception as error:
        outbox.mark_failed(message.id, f"{type(error).__name__}: {error}")
        raise
    _record_sent(outbox, message.id)
    return Entry(entry.message, entry.delivery, SENT, entry.attempts + 1)


def deliver_many(outbox: Outbox, channels: Channels, messages: Sequence[Message]) -> list[Entry]:
    """:func:`deliver` for many messages: one transaction claims them all, then each one not
    already sent goes out through its channel (several at a time: a real channel is a network
    round trip per message, and a burst of escalations must not queue behind them)."""
    if not messages:
        return []
    requests = []
    for message in messages:
        route = channels.route(message)
        requests.append((message, route.name, SENT if isinstance(route, OutboxSender) else PENDING))
    claimed = {entry.message.id: entry for entry in outbox.claim_many(requests)}

    def one(message: Message) -> Entry:
        return deliver(outbox, channels, message, lambda _: claimed[message.id])

    if all(entry.status == SENT for entry in claimed.values()):
        return [claimed[message.id] for message in messages]
    unique = list({message.id: message for message in messages}.values())  # each id sent once
    with ThreadPoolExecutor(max_workers=SEND_CONCURRENCY) as pool:
        delivered = {entry.message.id: entry for entry in pool.map(one, unique)}
    return [delivered[message.id] for message in messages]


# How long a sent message's "sent" mark is retried while the store is away.
MARK_SENT_PATIENCE_S = 20.0  # inside the 30 s start-to-close timeout of the send activities
# What a store that is away raises: the gate's fail-fast refusal, or a failed connection or
# statement. Any other error (a bug, a constraint) is not waited on: it fails at once.
STORE_AWAY = (StoreUnavailable, OperationalError, InterfaceError)


def _record_sent(outbox: Outbox, message_id: str) -> None:
    """The message is out: record it, waiting out a store outage rather than failing the
    activity, whose retry would claim the still-pending row and send the message again.
    Only an outage longer than the patience falls back to at-least-once (same message id)."""
    deadline = time.monotonic() + MARK_SENT_PATIENCE_S
    pause = 0.2
    while True:
        try:
            outbox.mark_sent(message_id)
            return
        except STORE_AWAY:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("message %s sent; recording it waits for the store", message_id)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
