"""Base classes for domain events, and the hash chain that makes each deal's history tamper-evident.

Events are immutable pydantic models. Besides the eventsourcing essentials (originator id and
version, and ``timestamp``, the moment the event was recorded) every deal event carries:

- ``occurred_at``: business time, supplied by the sender (defaults to now);
- ``event_id``: the sender's idempotency key;
- ``actor``: who sent it (the API token's name, or ``dealflow:<automation>``);
- ``pipeline_version``: the pipeline definition version in force when it was recorded;
- ``hash``: sha256 over the previous event's hash and this event's canonical content.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID

import orjson
from pydantic import BaseModel, ConfigDict

GENESIS_HASH = "0" * 64

# Fields that are the event's envelope, not its data.
META_FIELDS = frozenset(
    {
        "originator_id",
        "originator_version",
        "timestamp",
        "occurred_at",
        "event_id",
        "actor",
        "pipeline_version",
        "hash",
    }
)


def utcnow() -> datetime:
    return datetime.now(UTC)


class DomainEvent(BaseModel):
    """An immutable fact about one aggregate, stored by eventsourcing via :mod:`engine.persistence.mapper`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Bump in a subclass and add ``upcast_v<n>_v<n+1>(state: dict) -> None`` static methods to
    # evolve a stored event's shape; the mapper upcasts old records on the way in.
    class_version: ClassVar[int] = 1

    originator_id: UUID
    originator_version: int
    timestamp: datetime


def canonical_json(content: dict[str, Any]) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, Decimals and times as strings."""
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS, default=str)


def chain_hash(previous_hash: str, content: dict[str, Any]) -> str:
    digest = hashlib.sha256(previous_hash.encode("ascii"))
    digest.update(canonical_json(content))
    return digest.hexdigest()


def hash_content(
    *,
    type_: str,
    version: int,
    occurred_at: str,
    recorded_at: str,
    actor: str,
    event_id: str,
    pipeline_version: int | None,
    data: dict[str, Any],
) -> dict[str, Any]:
    """The canonical content an event's hash covers (times as ISO strings, data JSON-ready)."""
    return {
        "type": type_,
        "version": version,
        "occurred_at": occurred_at,
        "recorded_at": recorded_at,
        "actor": actor,
        "event_id": event_id,
        "pipeline_version": pipeline_version,
        "data": data,
    }


def hash_content_json(
    *,
    type_: str,
    version: int,
    occurred_at: str,
    recorded_at: str,
    actor: str,
    event_id: str,
    pipeline_version: int | None,
    data_json: bytes,
) -> bytes:
    """``canonical_json(hash_content(...))``, byte for byte, around a ``data_json`` that is
    already canonical (``canonical_json(data)``): the write path encodes an event's data once
    and stores those very bytes, so the hash is taken over them instead of a second encoding.
    Sorted keys put ``actor`` before ``data`` and every other field after it."""
    rest = orjson.dumps(
        {
            "event_id": event_id,
            "occurred_at": occurred_at,
            "pipeline_version": pipeline_version,
            "recorded_at": recorded_at,
            "type": type_,
            "version": version,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return b"".join((b'{"actor":', orjson.dumps(actor), b',"data":', data_json, b",", rest[1:]))


def chain_hash_json(previous_hash: str, content_json: bytes) -> str:
    """:func:`chain_hash` over content that is already canonical JSON."""
    digest = hashlib.sha256(previous_hash.encode("ascii"))
    digest.update(content_json)
    return digest.hexdigest()


def iso(moment: datetime) -> str:
    """One spelling of a time everywhere (hash, history, export): UTC with a Z."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
