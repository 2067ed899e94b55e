"""Versioned definitions: pipelines, nurture sequences and the team directory.

Each definition is an aggregate whose events are the successive bodies applied to it, so its
version is the number of times it was applied and its whole history is kept.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.utils import get_topic

from engine.domain.events import DomainEvent

DEFINITION_NAMESPACE = UUID("0b0e5a3c-1d2f-4f6a-8c7b-93e1d2a4b5c6")

PIPELINE, SEQUENCE, DIRECTORY = "pipeline", "sequence", "directory"


def definition_uuid(kind: str, key: str) -> UUID:
    return uuid5(DEFINITION_NAMESPACE, f"{kind}:{key}")


class DefinitionApplied(DomainEvent):
    kind: str
    key: str
    body: dict[str, Any]
    actor: str

    def mutate(self, definition: Definition | None) -> Definition:
        if definition is None:
            definition = Definition(self.originator_id, self.kind, self.key)
        elif self.originator_version != definition.version + 1:
            raise ValueError("definition events out of order")
        definition.version = self.originator_version
        definition.body = self.body
        definition.applied_at = self.timestamp
        return definition


# How the store names every definition event (readers filter the log by it).
DEFINITION_TOPIC = get_topic(DefinitionApplied)


class Definition:
    def __init__(self, id: UUID, kind: str, key: str) -> None:  # noqa: A002
        self.id = id
        self.kind = kind
        self.key = key
        self.version = 0
        self.body: dict[str, Any] = {}
        self.applied_at: datetime | None = None
        self.pending: list[DefinitionApplied] = []

    @classmethod
    def create(cls, kind: str, key: str) -> Definition:
        return cls(definition_uuid(kind, key), kind, key)

    def apply_body(self, body: dict[str, Any], actor: str, at: datetime) -> bool:
        """Record a new version, unless the body is the same as the current one."""
        if self.version and body == self.body:
            return False
        event = DefinitionApplied(
            originator_id=self.id,
            originator_version=self.version + 1,
            timestamp=at,
            kind=self.kind,
            key=self.key,
            body=body,
            actor=actor,
        )
        event.mutate(self)
        self.pending.append(event)
        return True

    def collect_events(self) -> list[DefinitionApplied]:
        events, self.pending = self.pending, []
        return events
