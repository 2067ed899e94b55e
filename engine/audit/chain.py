"""Recompute one deal's hash chain from its stored rows and name every broken link.

A row is checked against two predecessors: the row one version below (the order the history
claims) and the row stored just before it (the order it was written in). On a clean store they
are the same row. Trusting the stored hash of the predecessor (rather than the recomputed one)
keeps one edit from cascading into a break at every later version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from engine.audit.breaks import (
    HASH_MISMATCH,
    INSERTED,
    OUT_OF_ORDER,
    TRUNCATED,
    UNDECODABLE,
    VERSION_GAP,
    Break,
    BreakLog,
    missing_range,
)
from engine.audit.store import StoredRow
from engine.domain.deal import DealEvent, Opened, deal_uuid
from engine.domain.events import GENESIS_HASH
from engine.persistence.mapper import decode_event


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An idempotency record: written in the same transaction as the event it names."""

    event_id: str
    deal_id: str
    version: int


@dataclass(frozen=True, slots=True)
class Head:
    """A deal's last version and hash as sealed by a checkpoint."""

    version: int
    hash: str
    checkpoint: int


def decode_row(row: StoredRow) -> tuple[Any, str | None]:
    """The row's event, or None and why it could not be read."""
    try:
        return decode_event(row.topic, row.state, row.originator_id, row.version), None
    except Exception as error:  # any failure to read a row is itself the finding
        return None, f"{type(error).__name__}: {str(error)[:200]}"


def deal_id_of(originator_id: UUID, events: list[Any], keys: Mapping[str, KeyRecord]) -> str | None:
    for event in events:
        if isinstance(event, Opened):
            return event.deal_id
    for event in events:
        key = keys.get(event.event_id) if isinstance(event, DealEvent) else None
        if key is not None and deal_uuid(key.deal_id) == originator_id:
            return key.deal_id
    return None


def check_deal(
    rows: list[StoredRow],
    events: list[Any],
    *,
    keys: Mapping[str, KeyRecord] | None,
    head: Head | None,
    log: BreakLog,
) -> str | None:
    """Check one deal's rows (sorted by version, ``events`` decoded alongside); returns its id."""
    originator_id = rows[0].originator_id
    deal_id = deal_id_of(originator_id, events, keys or {})

    def report(
        kind: str, version: int | None, message: str, position: int | None = None, **details: Any
    ) -> None:
        log.add(Break(kind, message, deal_id, originator_id, version, position, details))

    # Rows written in another order than their versions: a swap or an insertion in between.
    by_position = sorted(range(len(rows)), key=lambda i: rows[i].position)
    written_before: dict[int, int | None] = {}
    for rank, index in enumerate(by_position):
        written_before[index] = by_position[rank - 1] if rank else None
    disordered: set[int] = set()
    for index in range(1, len(rows)):
        if rows[index].position < rows[index - 1].position:
            disordered.update((index - 1, index))
            report(
                OUT_OF_ORDER,
                rows[index - 1].version,
                f"version {rows[index].version} was stored before version {rows[index - 1].version}"
                f" (positions {rows[index].position} < {rows[index - 1].position}): versions swapped or re-numbered",
                rows[index - 1].position,
                versions=[rows[index - 1].version, rows[index].version],
            )

    expected = 1
    for index, (row, event) in enumerate(zip(rows, events, strict=True)):
        after_gap = row.version > expected
        if after_gap:
            report(
                VERSION_GAP,
                expected,
                f"versions {expected}..{row.version - 1} are missing: events deleted",
                row.position,
                **missing_range(expected, row.version - 1),
            )
        expected = row.version + 1
        if event is None or not isinstance(event, DealEvent):
            report(
                UNDECODABLE,
                row.version,
                "the stored row is not a readable deal event",
                row.position,
                topic=row.topic,
            )
            continue
        if not after_gap and index not in disordered:
            _check_link(rows, events, index, written_before.get(index), report)
        if keys is not None:
            _check_key(event, row, keys, disordered_version=index in disordered, report=report)

    if head is not None:
        last = rows[-1].version
        if head.version > last:
            report(
                TRUNCATED,
                last + 1,
                f"the checkpoint at position {head.checkpoint} saw this deal at version {head.version};"
                f" the store ends at version {last}: its last events were deleted",
                **missing_range(last + 1, head.version),
            )
        else:
            sealed = next(
                ((r, e) for r, e in zip(rows, events, strict=True) if r.version == head.version),
                None,
            )
            if sealed is not None and getattr(sealed[1], "hash", None) != head.hash:
                report(
                    HASH_MISMATCH,
                    head.version,
                    f"differs from the hash sealed by the checkpoint at position {head.checkpoint}:"
                    " the event was rewritten (with a recomputed hash) after it was sealed",
                    sealed[0].position,
                )
    return deal_id


def _check_link(
    rows: list[StoredRow], events: list[Any], index: int, written_before: int | None, report: Any
) -> None:
    event: DealEvent = events[index]
    row = rows[index]
    candidates: list[str | None] = (
        [GENESIS_HASH] if index == 0 else [getattr(events[index - 1], "hash", None)]
    )
    if written_before is not None and written_before != index - 1:
        candidates.append(getattr(events[written_before], "hash", None))
    for previous in candidates:
        if previous is not None and event.content_hash(previous) == event.hash:
            return
    if row.version == 1 or index == 0:
        why = "the content does not match its stored hash: the payload or envelope was edited"
    else:
        why = (
            "the content does not match its stored hash given version "
            f"{rows[index - 1].version}'s hash: this event was edited, or the one before it was"
            " rewritten with a recomputed hash"
        )
    report(HASH_MISMATCH, row.version, why, row.position, stored_hash=event.hash)


def _check_key(
    event: DealEvent,
    row: StoredRow,
    keys: Mapping[str, KeyRecord],
    *,
    disordered_version: bool,
    report: Any,
) -> None:
    key = keys.get(event.event_id)
    if key is None:
        report(
            INSERTED,
            row.version,
            f"no ingest recorded event {event.event_id!r}: every recorded event has an idempotency"
            " record written in its own transaction; this one was inserted into the table",
            row.position,
            event_id=event.event_id,
        )
        return
    if deal_uuid(key.deal_id) != row.originator_id:
        report(
            INSERTED,
            row.version,
            f"event {event.event_id!r} was recorded for deal {key.deal_id!r}, not this one:"
            " it was copied into this history",
            row.position,
            event_id=event.event_id,
        )
    elif key.version != row.version and not disordered_version:
        report(
            OUT_OF_ORDER,
            min(key.version, row.version),
            f"event {event.event_id!r} was recorded as version {key.version} but is stored as"
            f" version {row.version}: versions re-numbered",
            row.position,
            versions=sorted((key.version, row.version)),
        )
