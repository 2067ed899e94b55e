"""What verification reports: broken links, each with its kind, deal and version."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

# The kinds of break, with what each most likely means (the message says more).
HASH_MISMATCH = "hash_mismatch"  # the event's content does not hash to its stored hash: edited
VERSION_GAP = "version_gap"  # versions missing inside a deal's history: deleted events
OUT_OF_ORDER = "out_of_order"  # versions stored in another order than written: swapped
INSERTED = "inserted"  # an event no ingest recorded (no idempotency record for it)
TRUNCATED = "truncated"  # a deal's last events are gone (checkpoint or idempotency record says so)
LOG_ALTERED = "log_altered"  # the log between two checkpoints is not what the checkpoint sealed
LOG_TRUNCATED = "log_truncated"  # the log ends before the last checkpoint's position
UNDECODABLE = "undecodable"  # a stored row that is not a valid event at all

MAX_REPORTED = 10_000


@dataclass(frozen=True, slots=True)
class Break:
    kind: str
    message: str
    deal_id: str | None = None
    originator_id: UUID | None = None
    version: int | None = None
    position: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "deal_id": self.deal_id,
            "originator_id": str(self.originator_id) if self.originator_id else None,
            "version": self.version,
            "position": self.position,
            "message": self.message,
            **self.details,
        }


class BreakLog:
    """Collects breaks once each: several checks can find the same damage (a deleted tail is
    seen by the checkpoint and by the idempotency records)."""

    def __init__(self, limit: int = MAX_REPORTED) -> None:
        self.limit = limit
        self.total = 0
        self._seen: set[tuple[Any, ...]] = set()
        self._breaks: list[Break] = []
        self._missing: dict[UUID, set[int]] = {}

    def add(self, item: Break) -> None:
        key = (
            item.kind,
            item.originator_id,
            item.version,
            item.position if item.originator_id is None else None,
        )
        if key in self._seen:
            return
        self._seen.add(key)
        if item.originator_id is not None and item.kind in (VERSION_GAP, TRUNCATED):
            self._missing.setdefault(item.originator_id, set()).update(
                item.details.get("missing_versions", ())
            )
        self.total += 1
        if len(self._breaks) < self.limit:
            self._breaks.append(item)

    def reported_missing(self, originator_id: UUID, version: int) -> bool:
        """Whether a gap or truncation already reported covers this version."""
        return version in self._missing.get(originator_id, ())

    @property
    def breaks(self) -> list[Break]:
        return sorted(
            self._breaks,
            key=lambda b: (
                b.deal_id or "",
                str(b.originator_id or ""),
                b.version or 0,
                b.position or 0,
                b.kind,
            ),
        )

    @property
    def truncated(self) -> bool:
        return self.total > len(self._breaks)


def missing_range(first: int, last: int) -> dict[str, Any]:
    """Details naming the versions first..last; long runs are listed by their ends only."""
    versions = list(range(first, last + 1)) if last - first < 1000 else [first, last]
    return {"missing_versions": versions, "missing_from": first, "missing_to": last}
