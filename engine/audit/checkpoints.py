"""Checkpoints of the whole application log, so a deleted or re-ordered tail is caught too.

A deal's hash chain proves each event follows the one before it, but not that nothing came
after: delete a deal's last events (or the end of the whole log) and what remains is still a
valid chain. A checkpoint seals the log up to a position:

- ``event_count`` and ``rolling_hash``: a sha256 chain over (position, originator, version,
  event hash) of every row up to the position, definitions included (their rows have no hash
  of their own, so the sha256 of their stored state stands in);
- ``dealflow_audit_checkpoint_heads``: for each deal that changed since the previous
  checkpoint, its version and hash at this one. A deal's head at any checkpoint is its latest
  row at or before it, so storage grows with activity, not with deals times checkpoints.

``write_checkpoint(app)`` seals everything recorded since the last checkpoint; the projections
runner or the worker can call ``maybe_write_checkpoint(app)`` on every loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from engine.application import DealflowApp
from engine.audit.breaks import (
    LOG_ALTERED,
    LOG_TRUNCATED,
    TRUNCATED,
    Break,
    BreakLog,
    missing_range,
)
from engine.audit.chain import Head
from engine.audit.store import StoredRow, oid_param, oid_value, rows_by_position
from engine.domain.events import GENESIS_HASH, iso, utcnow
from engine.persistence.db import Database

CHECKPOINTS_TABLE = "dealflow_audit_checkpoints"
HEADS_TABLE = "dealflow_audit_checkpoint_heads"
# A checkpoint covers at most this many rows, so catching up on a large log keeps the heads of
# one checkpoint (held in memory until written) bounded.
MAX_SPAN = 50_000
EVERY_EVENTS = 10_000
EVERY_SECONDS = 900.0


@dataclass(frozen=True, slots=True)
class Checkpoint:
    position: int
    event_count: int
    rolling_hash: str
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "event_count": self.event_count,
            "rolling_hash": self.rolling_hash,
            "created_at": self.created_at,
        }


# Taken by every creator of the checkpoint tables on PostgreSQL, for its transaction:
# ``CREATE TABLE IF NOT EXISTS`` run twice at once collides in the catalog (the checkpoint
# thread and an audit request on a new store). Not the startup schema lock's key: a process
# holding that one must never wait on this.
AUDIT_SCHEMA_LOCK_KEY = 33253570


def ensure_schema(db: Database) -> None:
    oid_type = "uuid" if db.is_postgres else "TEXT"
    lock = [f"SELECT pg_advisory_xact_lock({AUDIT_SCHEMA_LOCK_KEY})"] if db.is_postgres else []
    db.execute_script(
        [
            *lock,
            f"CREATE TABLE IF NOT EXISTS {CHECKPOINTS_TABLE} ("
            " position bigint PRIMARY KEY,"
            " event_count bigint NOT NULL,"
            " rolling_hash text NOT NULL,"
            " created_at text NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {HEADS_TABLE} ("
            f" originator_id {oid_type} NOT NULL,"
            " checkpoint bigint NOT NULL,"
            " version bigint NOT NULL,"
            " hash text NOT NULL,"
            " PRIMARY KEY (originator_id, checkpoint))",
        ]
    )


# -- the rolling hash ---------------------------------------------------------------------------


def row_digest(row: StoredRow) -> str:
    """A deal event's own chain hash; for any other row, the sha256 of what is stored."""
    if row.is_deal_event:
        try:
            stored = orjson.loads(row.state).get("hash")
        except (orjson.JSONDecodeError, AttributeError):
            stored = None
        if isinstance(stored, str):
            return stored
    return hashlib.sha256(row.state).hexdigest()


def roll(previous: str, row: StoredRow, digest: str) -> str:
    link = f"{previous}|{row.position}|{row.originator_id.hex}|{row.version}|{digest}"
    return hashlib.sha256(link.encode("ascii")).hexdigest()


# -- reading ------------------------------------------------------------------------------------


def _checkpoint(raw: Any) -> Checkpoint:
    return Checkpoint(
        int(raw["position"]),
        int(raw["event_count"]),
        str(raw["rolling_hash"]),
        str(raw["created_at"]),
    )


def latest_checkpoint(app: DealflowApp) -> Checkpoint | None:
    ensure_schema(app.db)
    raw = app.db.fetchone(
        f"SELECT position, event_count, rolling_hash, created_at FROM {CHECKPOINTS_TABLE}"
        " ORDER BY position DESC LIMIT 1"
    )
    return _checkpoint(raw) if raw else None


def iter_checkpoints(app: DealflowApp, page: int = 1000) -> Iterator[Checkpoint]:
    ensure_schema(app.db)
    last = -1
    while True:
        rows = app.db.fetchall(
            f"SELECT position, event_count, rolling_hash, created_at FROM {CHECKPOINTS_TABLE}"
            " WHERE position > %s ORDER BY position LIMIT %s",
            (last, page),
        )
        for raw in rows:
            item = _checkpoint(raw)
            last = item.position
            yield item
        if len(rows) < page:
            return


def heads_for(app: DealflowApp, originator_ids: Sequence[UUID]) -> dict[UUID, Head]:
    """Each deal's head at the latest checkpoint that saw it."""
    db = app.db
    heads: dict[UUID, Head] = {}
    for start in range(0, len(originator_ids), 500):
        chunk = [oid_param(db, i) for i in originator_ids[start : start + 500]]
        marks = ",".join(["%s"] * len(chunk))
        if db.is_postgres:
            sql = (
                f"SELECT DISTINCT ON (originator_id) originator_id, version, hash, checkpoint"
                f" FROM {HEADS_TABLE} WHERE originator_id IN ({marks})"
                " ORDER BY originator_id, checkpoint DESC"
            )
        else:
            # SQLite fills the bare columns from the row that has the max().
            sql = (
                f"SELECT originator_id, version, hash, max(checkpoint) AS checkpoint"
                f" FROM {HEADS_TABLE} WHERE originator_id IN ({marks}) GROUP BY originator_id"
            )
        for raw in db.fetchall(sql, chunk):
            heads[oid_value(raw["originator_id"])] = Head(
                int(raw["version"]), str(raw["hash"]), int(raw["checkpoint"])
            )
    return heads


def vanished_heads(
    app: DealflowApp, originator_id: UUID | None = None
) -> Iterator[tuple[UUID, Head]]:
    """Deals a checkpoint saw that have no stored event left at all."""
    db = app.db
    where = ""
    params: tuple[Any, ...] = ()
    if originator_id is not None:
        where = " AND h.originator_id = %s"
        params = (oid_param(db, originator_id),)
    rows = db.fetchall(
        f"SELECT h.originator_id, max(h.version) AS version, max(h.checkpoint) AS checkpoint"
        f" FROM {HEADS_TABLE} h WHERE NOT EXISTS"
        f" (SELECT 1 FROM {db.events_table} e WHERE e.originator_id = h.originator_id){where}"
        " GROUP BY h.originator_id",
        params,
    )
    for raw in rows:
        yield oid_value(raw["originator_id"]), Head(int(raw["version"]), "", int(raw["checkpoint"]))


# -- writing ------------------------------------------------------------------------------------


def write_checkpoint(app: DealflowApp, *, max_span: int = MAX_SPAN) -> Checkpoint | None:
    """Seal every row recorded since the last checkpoint; returns the newest checkpoint.

    Safe to call from several processes at once: checkpoints are a pure function of the log,
    so two writers sealing the same position write the same thing and one insert is ignored.
    """
    db = app.db
    last = latest_checkpoint(app)
    end = app.max_position()
    while last is None or last.position < end:
        position = last.position if last else 0
        rolling = last.rolling_hash if last else GENESIS_HASH
        count = last.event_count if last else 0
        heads: dict[UUID, tuple[int, str]] = {}
        sealed_to = position
        for row in rows_by_position(app, after=position, until=end):
            digest = row_digest(row)
            rolling = roll(rolling, row, digest)
            count += 1
            sealed_to = row.position
            if row.is_deal_event:
                heads[row.originator_id] = (row.version, digest)
            if count - (last.event_count if last else 0) >= max_span:
                break
        if sealed_to == position:
            break
        checkpoint = Checkpoint(sealed_to, count, rolling, iso(utcnow()))
        with db.transaction() as cur:
            exists = cur.execute(
                f"SELECT 1 AS one FROM {CHECKPOINTS_TABLE} WHERE position = %s",
                (checkpoint.position,),
            ).fetchone()
            if exists is None:
                cur.execute(
                    f"INSERT INTO {CHECKPOINTS_TABLE} (position, event_count, rolling_hash, created_at)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (
                        checkpoint.position,
                        checkpoint.event_count,
                        checkpoint.rolling_hash,
                        checkpoint.created_at,
                    ),
                )
                cur.executemany(
                    f"INSERT INTO {HEADS_TABLE} (originator_id, checkpoint, version, hash)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    [
                        (oid_param(db, oid), checkpoint.position, v, h)
                        for oid, (v, h) in heads.items()
                    ],
                )
        last = checkpoint
    return last


def maybe_write_checkpoint(
    app: DealflowApp, *, every_events: int = EVERY_EVENTS, every_seconds: float = EVERY_SECONDS
) -> Checkpoint | None:
    """Write a checkpoint when ``every_events`` rows or ``every_seconds`` have passed since the
    last one (and something was recorded). Cheap when not due: two indexed lookups."""
    last = latest_checkpoint(app)
    end = app.max_position()
    if last is not None and end <= last.position:
        return None
    if last is not None and end - last.position < every_events:
        age = (
            utcnow() - datetime.fromisoformat(last.created_at.replace("Z", "+00:00"))
        ).total_seconds()
        if age < every_seconds:
            return None
    return write_checkpoint(app)


# -- verifying ----------------------------------------------------------------------------------


def verify_log(app: DealflowApp, log: BreakLog) -> dict[str, Any]:
    """Walk the whole log in position order and compare it with every checkpoint."""
    checkpoints = iter_checkpoints(app)
    current = next(checkpoints, None)
    previous_position, rolling, count = 0, GENESIS_HASH, 0
    last_seen = 0
    rows = checked = 0

    def seal(checkpoint: Checkpoint) -> None:
        nonlocal previous_position, rolling, count, checked
        checked += 1
        if rolling != checkpoint.rolling_hash or count != checkpoint.event_count:
            log.add(
                Break(
                    LOG_ALTERED,
                    f"the log between positions {previous_position} and {checkpoint.position} is not what"
                    f" the checkpoint sealed ({checkpoint.event_count - count:+d} rows against it):"
                    " events were deleted, inserted, re-ordered or rewritten there",
                    position=checkpoint.position,
                    details={
                        "from_position": previous_position,
                        "to_position": checkpoint.position,
                        "expected_count": checkpoint.event_count,
                        "found_count": count,
                    },
                )
            )
        # Carry on from what the checkpoint sealed, so one damage is reported in one interval.
        previous_position, rolling, count = (
            checkpoint.position,
            checkpoint.rolling_hash,
            checkpoint.event_count,
        )

    for row in rows_by_position(app):
        while current is not None and row.position > current.position:
            seal(current)
            current = next(checkpoints, None)
        rolling = roll(rolling, row, row_digest(row))
        count += 1
        rows += 1
        last_seen = row.position
    if current is not None and current.position <= last_seen:
        seal(current)
        current = next(checkpoints, None)
    if current is not None:
        final = current
        for final in checkpoints:  # noqa: B007 - only the last one matters
            pass
        log.add(
            Break(
                LOG_TRUNCATED,
                f"the log ends at position {last_seen} but a checkpoint sealed it up to position"
                f" {final.position} ({final.event_count} rows): the tail of the log was deleted",
                position=final.position,
                details={
                    "last_position": last_seen,
                    "sealed_position": final.position,
                    "sealed_count": final.event_count,
                },
            )
        )
    return {"rows": rows, "checkpoints": checked, "last_position": last_seen}


def report_vanished(app: DealflowApp, log: BreakLog, originator_id: UUID | None = None) -> None:
    for vanished, head in vanished_heads(app, originator_id):
        log.add(
            Break(
                TRUNCATED,
                f"the checkpoint at position {head.checkpoint} saw this deal at version {head.version};"
                " none of its events is stored any more",
                originator_id=vanished,
                version=1,
                details=missing_range(1, head.version),
            )
        )
