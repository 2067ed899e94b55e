"""The export: every deal event with its envelope, filtered, as JSON lines or CSV, on both stores."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import orjson

from dealflow.bench.audit_sample import populate
from engine.application import DealflowApp
from engine.audit.export import COLUMNS, ExportFilter, export_chunks, export_records
from tests.helpers import HISTORY_FIELDS


def _jsonl(app: DealflowApp, filters: ExportFilter) -> list[dict]:  # type: ignore[type-arg]
    text = b"".join(export_chunks(app, filters, "jsonl"))
    return [orjson.loads(line) for line in text.splitlines()]


def test_export_has_every_deal_event_with_its_envelope(app: DealflowApp) -> None:
    populate(app, 100)
    records = _jsonl(app, ExportFilter())
    stored_deal_events = sum(1 for r in records)
    history = app.history("d-0")["events"]
    # Whole deals d-0..d-6 (103 events); the five won ones opened a follow-up deal each.
    assert stored_deal_events == 103 + 5
    positions = [r["position"] for r in records]
    assert positions == sorted(positions)
    d0 = [r for r in records if r["deal_id"] == "d-0"]
    assert [r["version"] for r in d0] == list(range(1, 18))
    for record, item in zip(d0, history, strict=True):
        assert record["pipeline_id"] == "default"
        for key in HISTORY_FIELDS:
            assert record[key] == item[key], key
    followups = [r for r in records if r["pipeline_id"] == "post-purchase"]
    assert {r["deal_id"] for r in followups} == {f"d-{i}:post-purchase" for i in (0, 1, 3, 4, 6)}


def test_export_filters(app: DealflowApp) -> None:
    populate(app, 100)
    one = _jsonl(app, ExportFilter(deal_id="d-2"))
    assert [r["version"] for r in one] == list(range(1, 10))
    assert {r["deal_id"] for r in one} == {"d-2"}
    assert all(
        r["pipeline_id"] == "post-purchase"
        for r in _jsonl(app, ExportFilter(pipeline_id="post-purchase"))
    )
    # Business time: d-0 starts 2017-03-01T00:00, one event an hour; d-1 a minute later.
    window = _jsonl(
        app,
        ExportFilter(
            occurred_from=datetime(2017, 3, 1, 2, tzinfo=UTC),
            occurred_to=datetime(2017, 3, 1, 3, tzinfo=UTC),
        ),
    )
    assert window and all("2017-03-01T02:" in r["occurred_at"] for r in window)
    assert _jsonl(app, ExportFilter(deal_id="nobody")) == []


def test_export_csv(app: DealflowApp) -> None:
    populate(app, 40)
    text = b"".join(export_chunks(app, ExportFilter(deal_id="d-1"), "csv")).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == COLUMNS
    assert [int(r["version"]) for r in rows] == list(range(1, 18))
    assert orjson.loads(rows[10]["data"]) == {"changes": {"amount": "12500.00"}}
    assert rows[0]["deal_id"] == "d-1" and rows[0]["pipeline_id"] == "default" and rows[0]["hash"]


def test_export_pages_and_forgets(app: DealflowApp) -> None:
    """Small pages and a tiny name cache give the same export (memory does not hold the log)."""
    populate(app, 150)
    whole = [r for page in export_records(app, ExportFilter()) for r in page]
    paged = [r for page in export_records(app, ExportFilter(), page=7, cache_size=2) for r in page]
    assert paged == whole
