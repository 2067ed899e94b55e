"""Cross-checks against the idempotency records written with every ingested event.

``DealflowApp.ingest`` stores each event's idempotency record (event id, deal id, version) in
the very transaction that stores the event, so the two tables vouch for each other: an event
without its record was inserted by hand, and a record without its event names an event that
was deleted, even one recorded after the last checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any
from uuid import UUID

from engine.application import DealflowApp
from engine.audit.breaks import TRUNCATED, VERSION_GAP, Break, BreakLog, missing_range
from engine.audit.chain import KeyRecord
from engine.audit.store import PAGE_SIZE, existing_versions, max_version
from engine.domain.deal import deal_uuid
from engine.persistence.recorders import IDEMPOTENCY_TABLE


def keys_for(app: DealflowApp, event_ids: Iterable[str]) -> dict[str, KeyRecord]:
    unique = list(dict.fromkeys(event_ids))
    found: dict[str, KeyRecord] = {}
    for start in range(0, len(unique), 900):
        chunk = unique[start : start + 900]
        marks = ",".join(["%s"] * len(chunk))
        for raw in app.db.fetchall(
            f"SELECT event_id, deal_id, version FROM {IDEMPOTENCY_TABLE} WHERE event_id IN ({marks})",
            chunk,
        ):
            found[raw["event_id"]] = KeyRecord(raw["event_id"], raw["deal_id"], int(raw["version"]))
    return found


def _pages(app: DealflowApp, deal_id: str | None, page: int) -> Iterator[list[KeyRecord]]:
    last = ""
    where = " AND deal_id = %s" if deal_id is not None else ""
    while True:
        params: tuple[Any, ...] = (last, deal_id, page) if deal_id is not None else (last, page)
        rows = app.db.fetchall(
            f"SELECT event_id, deal_id, version FROM {IDEMPOTENCY_TABLE}"
            f" WHERE event_id > %s{where} ORDER BY event_id LIMIT %s",
            params,
        )
        if rows:
            last = rows[-1]["event_id"]
            yield [KeyRecord(r["event_id"], r["deal_id"], int(r["version"])) for r in rows]
        if len(rows) < page:
            return


def check_keys(
    app: DealflowApp, log: BreakLog, *, deal_id: str | None = None, page: int = PAGE_SIZE
) -> int:
    """Report every idempotency record whose event is not stored; returns how many were read."""
    read = 0
    for records in _pages(app, deal_id, page):
        read += len(records)
        pairs = [(deal_uuid(r.deal_id), r.version) for r in records]
        stored = existing_versions(app, pairs)
        for record, pair in zip(records, pairs, strict=True):
            if pair in stored or log.reported_missing(*pair):
                continue
            _report_missing(app, log, record, pair[0])
    return read


def _report_missing(
    app: DealflowApp, log: BreakLog, record: KeyRecord, originator_id: UUID
) -> None:
    last = max_version(app, originator_id)
    if record.version > last:
        # Report the whole missing tail once: every record past the end names part of it.
        tail_end = max(
            (r.version for batch in _pages(app, record.deal_id, PAGE_SIZE) for r in batch),
            default=record.version,
        )
        log.add(
            Break(
                TRUNCATED,
                f"event {record.event_id!r} was recorded as version {record.version} but the store"
                f" ends at version {last}: the deal's last events were deleted",
                record.deal_id,
                originator_id,
                last + 1,
                details={**missing_range(last + 1, tail_end), "event_id": record.event_id},
            )
        )
    else:
        log.add(
            Break(
                VERSION_GAP,
                f"event {record.event_id!r} was recorded as version {record.version} and is not stored:"
                " it was deleted",
                record.deal_id,
                originator_id,
                record.version,
                details={
                    **missing_range(record.version, record.version),
                    "event_id": record.event_id,
                },
            )
        )
