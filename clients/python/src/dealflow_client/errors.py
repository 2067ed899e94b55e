"""Errors the client raises: the API's JSON errors, and webhook verification failures."""

from __future__ import annotations

from typing import Any

import httpx


class ApiError(Exception):
    """A 4xx/5xx answer: ``code`` is the contract's error code (``version_conflict``, ...)."""

    def __init__(self, status: int, code: str, message: str, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {"detail": body}
        return cls(
            response.status_code,
            str(body.get("error") or "http_error"),
            str(body.get("message") or response.text[:200]),
            body,
        )


class WebhookVerificationError(Exception):
    """A webhook whose signature, timestamp or headers do not check out: refuse it."""
