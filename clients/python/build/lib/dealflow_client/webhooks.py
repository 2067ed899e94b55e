"""Verify the webhooks dealflow sends (Standard Webhooks: https://www.standardwebhooks.com).

Each delivery carries ``webhook-id`` (the delivery id: the same on every retry of one
delivery, so receivers can de-duplicate), ``webhook-timestamp`` (Unix seconds) and
``webhook-signature``: space-separated ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, one
per secret in force (two during a secret rotation's overlap).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from standardwebhooks.webhooks import Webhook

from dealflow_client.errors import WebhookVerificationError


def verify_webhook(
    body: bytes | str, headers: Mapping[str, str], secret: str | Sequence[str]
) -> dict[str, Any]:
    """The delivery's JSON payload, once its signature checks out against one of the secrets
    (``whsec_...``) and its timestamp is within five minutes of now; else
    :class:`WebhookVerificationError`. Pass the raw body bytes, before any JSON parsing."""
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise WebhookVerificationError("no secret to verify with")
    lowered = {k.lower(): v for k, v in headers.items()}
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    last: Exception | None = None
    for candidate in secrets:
        try:
            Webhook(candidate).verify(text, lowered, json_parse=False)
        except Exception as error:  # malformed headers raise ValueError/binascii.Error too
            last = error
            continue
        payload = json.loads(text)
        if not isinstance(payload, dict):
            raise WebhookVerificationError("payload is not a JSON object")
        return payload
    raise WebhookVerificationError(str(last) if last else "no matching signature")
