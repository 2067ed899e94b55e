"""`dealflow audit verify` and `GET /v1/audit/verify`: every check, one report.

Three walks over what is stored, each paged so memory stays flat:

1. deal by deal (rows ordered by originator and version): recompute each hash chain, find
   gaps and re-ordered versions, compare each event with its idempotency record and each
   deal's last version with the latest checkpoint's head;
2. the idempotency records: each must name a stored event (catches deletions after the last
   checkpoint);
3. the whole log in position order against the checkpoints (catches a deleted log tail and
   anything re-ordered, inserted or removed between two checkpoints).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.application import DealflowApp
from engine.audit.breaks import UNDECODABLE, Break, BreakLog
from engine.audit.chain import check_deal, decode_row
from engine.audit.checkpoints import (
    ensure_schema,
    heads_for,
    latest_checkpoint,
    report_vanished,
    verify_log,
)
from engine.audit.keys import check_keys, keys_for
from engine.audit.store import PAGE_SIZE, StoredRow, rows_by_originator
from engine.domain.deal import DealEvent, deal_uuid
from engine.domain.errors import NotFound


@dataclass
class VerifyReport:
    deal_id: str | None
    breaks: BreakLog
    counts: dict[str, int] = field(default_factory=dict)
    latest_checkpoint: dict[str, Any] | None = None
    log_checked: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.breaks.total == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "deal_id": self.deal_id,
            "checked": self.counts,
            "log_checked": self.log_checked,
            "latest_checkpoint": self.latest_checkpoint,
            "break_count": self.breaks.total,
            "breaks_truncated": self.breaks.truncated,
            "breaks": [b.to_dict() for b in self.breaks.breaks],
            "seconds": round(self.seconds, 3),
        }


def _groups(rows: Iterator[StoredRow]) -> Iterator[list[StoredRow]]:
    """Consecutive rows of one originator, grouped."""
    group: list[StoredRow] = []
    for row in rows:
        if group and row.originator_id != group[0].originator_id:
            yield group
            group = []
        group.append(row)
    if group:
        yield group


def _batches(groups: Iterator[list[StoredRow]], max_rows: int) -> Iterator[list[list[StoredRow]]]:
    batch: list[list[StoredRow]] = []
    size = 0
    for group in groups:
        batch.append(group)
        size += len(group)
        if size >= max_rows:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def verify(app: DealflowApp, deal_id: str | None = None, *, page: int = PAGE_SIZE) -> VerifyReport:
    started = time.perf_counter()
    ensure_schema(app.db)
    log = BreakLog()
    report = VerifyReport(deal_id, log)
    originator = deal_uuid(deal_id) if deal_id is not None else None
    counts = {
        "events": 0,
        "deals": 0,
        "definition_events": 0,
        "idempotency_records": 0,
        "log_rows": 0,
        "checkpoints": 0,
    }

    for batch in _batches(
        _groups(rows_by_originator(app, originator_id=originator, page=page)), page
    ):
        decoded = [[decode_row(row)[0] for row in group] for group in batch]
        event_ids: list[str] = []
        for events in decoded:
            for event in events:
                if isinstance(event, DealEvent):
                    event_ids.append(event.event_id)
        keys = keys_for(app, event_ids)
        deal_groups = [g for g in batch if any(row.is_deal_event for row in g)]
        heads = heads_for(app, [group[0].originator_id for group in deal_groups])
        for group, events in zip(batch, decoded, strict=True):
            if not any(row.is_deal_event for row in group):
                counts["definition_events"] += len(group)
                _check_definitions(group, events, log)
                continue
            check_deal(group, events, keys=keys, head=heads.get(group[0].originator_id), log=log)
            counts["deals"] += 1
            counts["events"] += len(group)

    if deal_id is not None and counts["deals"] == 0:
        report_vanished(app, log, originator)
        if log.total == 0 and not keys_for_deal(app, deal_id):
            raise NotFound(f"deal {deal_id!r} does not exist", deal_id=deal_id)
    elif deal_id is None:
        report_vanished(app, log)

    counts["idempotency_records"] = check_keys(app, log, deal_id=deal_id, page=page)
    if deal_id is None:
        stats = verify_log(app, log)
        counts["log_rows"] = stats["rows"]
        counts["checkpoints"] = stats["checkpoints"]
        report.log_checked = True
    checkpoint = latest_checkpoint(app)
    report.latest_checkpoint = checkpoint.to_dict() if checkpoint else None
    report.counts = counts
    report.seconds = time.perf_counter() - started
    return report


def _check_definitions(group: list[StoredRow], events: list[Any], log: BreakLog) -> None:
    """Definition events carry no chain (the checkpoints cover them); they must still read."""
    for row, event in zip(group, events, strict=True):
        if event is None:
            log.add(
                Break(
                    UNDECODABLE,
                    "the stored row is not a readable event",
                    None,
                    row.originator_id,
                    row.version,
                    row.position,
                    {"topic": row.topic},
                )
            )


def keys_for_deal(app: DealflowApp, deal_id: str) -> bool:
    from engine.persistence.recorders import IDEMPOTENCY_TABLE

    return (
        app.db.fetchone(
            f"SELECT 1 AS one FROM {IDEMPOTENCY_TABLE} WHERE deal_id = %s LIMIT 1", (deal_id,)
        )
        is not None
    )
