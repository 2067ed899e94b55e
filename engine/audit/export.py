"""`dealflow audit export` and `GET /v1/audit/export`: every deal event, streamed.

Rows are read page by page (keyset on position, or on version for one deal) and written out
a page at a time, so memory does not grow with the log. Only ``opened`` names its deal and
pipeline; other events are resolved through their deal's first row, fetched once per page for
the deals the page has not met recently (a bounded cache keeps that flat too).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any

import orjson

from engine.application import DealflowApp
from engine.audit.chain import decode_row
from engine.audit.deal_names import CACHE_SIZE, DealNames
from engine.audit.store import (
    PAGE_SIZE,
    StoredRow,
    rows_by_originator,
    rows_by_position,
)
from engine.domain.deal import DealEvent, Opened, deal_uuid
from engine.domain.events import iso

FORMATS = ("jsonl", "csv")
COLUMNS = (
    "position",
    "deal_id",
    "pipeline_id",
    "pipeline_version",
    "version",
    "type",
    "occurred_at",
    "recorded_at",
    "actor",
    "event_id",
    "hash",
    "data",
)


@dataclass(frozen=True)
class ExportFilter:
    deal_id: str | None = None
    pipeline_id: str | None = None
    occurred_from: datetime | None = None  # business time, inclusive
    occurred_to: datetime | None = None  # business time, exclusive


def export_records(
    app: DealflowApp,
    filters: ExportFilter,
    *,
    page: int = PAGE_SIZE,
    cache_size: int = CACHE_SIZE,
) -> Iterator[list[dict[str, Any]]]:
    """Pages of export records, in log order (or version order for one deal); ``cache_size``
    deals' names are kept between pages."""
    if filters.deal_id is not None:
        rows: Iterator[StoredRow] = rows_by_originator(
            app, originator_id=deal_uuid(filters.deal_id), page=page
        )
    else:
        rows = rows_by_position(app, page=page)
    names = DealNames(app, cache_size)
    while True:
        chunk = list(islice(rows, page))
        if not chunk:
            return
        events = [decode_row(row)[0] if row.is_deal_event else None for row in chunk]
        opened = {
            row.originator_id: (event.deal_id, event.pipeline_id)
            for row, event in zip(chunk, events, strict=True)
            if isinstance(event, Opened)
        }
        for originator_id, named in opened.items():
            names.put(originator_id, named)
        page_names = opened | names.names_of(
            row.originator_id
            for row in chunk
            if row.is_deal_event and row.originator_id not in opened
        )
        records = []
        for row, event in zip(chunk, events, strict=True):
            if not row.is_deal_event:
                continue
            deal_id, pipeline_id = page_names[row.originator_id]
            if filters.deal_id is not None:
                deal_id = deal_id or filters.deal_id
            record = _record(row, event, deal_id, pipeline_id)
            if _wanted(record, event, filters):
                records.append(record)
        if records:
            yield records


def _record(
    row: StoredRow, event: Any, deal_id: str | None, pipeline_id: str | None
) -> dict[str, Any]:
    if not isinstance(event, DealEvent):
        # Exported as found rather than dropped: the export must account for every row.
        return {
            "position": row.position,
            "deal_id": deal_id,
            "pipeline_id": pipeline_id,
            "pipeline_version": None,
            "version": row.version,
            "type": None,
            "occurred_at": None,
            "recorded_at": None,
            "actor": None,
            "event_id": None,
            "hash": None,
            "data": {"error": "undecodable", "topic": row.topic},
        }
    return {
        "position": row.position,
        "deal_id": deal_id,
        "pipeline_id": pipeline_id,
        "pipeline_version": event.pipeline_version,
        "version": row.version,
        "type": event.TYPE,
        "occurred_at": iso(event.occurred_at),
        "recorded_at": iso(event.timestamp),
        "actor": event.actor,
        "event_id": event.event_id,
        "hash": event.hash,
        "data": event.data(),
    }


def _wanted(record: dict[str, Any], event: Any, filters: ExportFilter) -> bool:
    if filters.pipeline_id is not None and record["pipeline_id"] != filters.pipeline_id:
        return False
    if filters.occurred_from is None and filters.occurred_to is None:
        return True
    if not isinstance(event, DealEvent):
        return False
    if filters.occurred_from is not None and event.occurred_at < filters.occurred_from:
        return False
    return not (filters.occurred_to is not None and event.occurred_at >= filters.occurred_to)


def export_chunks(app: DealflowApp, filters: ExportFilter, fmt: str = "jsonl") -> Iterator[bytes]:
    """The export as encoded chunks (one per page), ready to write or stream."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    if fmt == "csv":
        yield _csv_lines([list(COLUMNS)])
    for records in export_records(app, filters):
        if fmt == "jsonl":
            yield b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in records)
        else:
            yield _csv_lines(
                [
                    [_cell(r[c]) for c in COLUMNS[:-1]]
                    + [orjson.dumps(r["data"], option=orjson.OPT_SORT_KEYS).decode()]
                    for r in records
                ]
            )


def _cell(value: Any) -> Any:
    return "" if value is None else value


def _csv_lines(rows: list[list[Any]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode("utf-8")
