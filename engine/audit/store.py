"""Raw access to the stored event rows, straight from the table, bypassing the application.

Audit reads rows as they are on disk (not through eventsourcing's repository, which trusts
them) and pages through them with keyset queries, so a walk over millions of rows keeps a flat
memory profile and never holds one long transaction open on a live store.

The two backends differ in spelling only: PostgreSQL keeps ``originator_id`` as ``uuid`` and
the position in ``notification_id``; SQLite keeps the id as hex text and the position in the
implicit ``rowid``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from uuid import NAMESPACE_OID, UUID, uuid5

from engine.application import DealflowApp
from engine.domain.deal_events import DEAL_TOPIC_PREFIXES
from engine.persistence.db import Database

PAGE_SIZE = 5000


@dataclass(frozen=True, slots=True)
class StoredRow:
    position: int
    originator_id: UUID
    version: int
    topic: str
    state: bytes

    @property
    def is_deal_event(self) -> bool:
        return self.topic.startswith(DEAL_TOPIC_PREFIXES)


def position_column(db: Database) -> str:
    return "notification_id" if db.is_postgres else "rowid"


def oid_param(db: Database, originator_id: UUID) -> Any:
    """An originator id as the backend stores it (uuid on PostgreSQL, hex text on SQLite)."""
    return originator_id if db.is_postgres else originator_id.hex


def oid_value(raw: Any) -> UUID:
    return raw if isinstance(raw, UUID) else _parse_oid(str(raw))


@lru_cache(maxsize=65536)
def _parse_oid(text: str) -> UUID:
    # Cached: a walk meets each deal's id once per event, and parsing one is not free.
    try:
        return UUID(text)
    except ValueError:
        # Not an id dealflow wrote (SQLite keeps any text): name it stably so it is reported.
        return uuid5(NAMESPACE_OID, text)


def _select(db: Database) -> str:
    return (
        f"SELECT {position_column(db)} AS position, originator_id, originator_version, topic, state"
        f" FROM {db.events_table}"
    )


def _to_row(raw: Any) -> StoredRow:
    state = raw["state"]
    if isinstance(state, str):
        # SQLite lets a tamperer's string functions turn the BLOB into TEXT; read it anyway.
        state = state.encode("utf-8", "surrogateescape")
    return StoredRow(
        position=int(raw["position"]),
        originator_id=oid_value(raw["originator_id"]),
        version=int(raw["originator_version"]),
        topic=str(raw["topic"] or ""),
        state=bytes(state or b""),
    )


def rows_by_position(
    app: DealflowApp, *, after: int = 0, until: int | None = None, page: int = PAGE_SIZE
) -> Iterator[StoredRow]:
    """Every stored row in log order (position > ``after``, up to ``until``), page by page."""
    db = app.db
    column = position_column(db)
    last = after
    while True:
        sql = f"{_select(db)} WHERE {column} > %s"
        params: list[Any] = [last]
        if until is not None:
            sql += f" AND {column} <= %s"
            params.append(until)
        rows = db.fetchall(f"{sql} ORDER BY {column} LIMIT %s", [*params, page])
        for raw in rows:
            row = _to_row(raw)
            last = row.position
            yield row
        if len(rows) < page:
            return


def rows_by_originator(
    app: DealflowApp, *, originator_id: UUID | None = None, page: int = PAGE_SIZE
) -> Iterator[StoredRow]:
    """Every stored row ordered by (originator, version): one aggregate's rows come together."""
    db = app.db
    order = " ORDER BY originator_id, originator_version LIMIT %s"
    if originator_id is not None:
        sql = f"{_select(db)} WHERE originator_id = %s AND originator_version > %s"
        version = 0
        while True:
            rows = db.fetchall(sql + order, (oid_param(db, originator_id), version, page))
            for raw in rows:
                row = _to_row(raw)
                version = row.version
                yield row
            if len(rows) < page:
                return
    cursor: tuple[Any, int] | None = None
    while True:
        if cursor is None:
            rows = db.fetchall(_select(db) + order, (page,))
        else:
            rows = db.fetchall(
                f"{_select(db)} WHERE (originator_id, originator_version) > (%s, %s)" + order,
                (*cursor, page),
            )
        for raw in rows:
            row = _to_row(raw)
            cursor = (raw["originator_id"], row.version)
            yield row
        if len(rows) < page:
            return


def first_rows(app: DealflowApp, originator_ids: Sequence[UUID]) -> dict[UUID, StoredRow]:
    """Version 1 of many aggregates in one query per chunk."""
    db = app.db
    found: dict[UUID, StoredRow] = {}
    for start in range(0, len(originator_ids), 500):
        chunk = [oid_param(db, i) for i in originator_ids[start : start + 500]]
        marks = ",".join(["%s"] * len(chunk))
        for raw in db.fetchall(
            f"{_select(db)} WHERE originator_version = 1 AND originator_id IN ({marks})", chunk
        ):
            row = _to_row(raw)
            found[row.originator_id] = row
    return found


def max_version(app: DealflowApp, originator_id: UUID) -> int:
    db = app.db
    row = db.fetchone(
        f"SELECT max(originator_version) AS v FROM {db.events_table} WHERE originator_id = %s",
        (oid_param(db, originator_id),),
    )
    return int(row["v"]) if row and row["v"] is not None else 0


def existing_versions(app: DealflowApp, pairs: Sequence[tuple[UUID, int]]) -> set[tuple[UUID, int]]:
    """Which (originator, version) pairs are stored."""
    db = app.db
    found: set[tuple[UUID, int]] = set()
    for start in range(0, len(pairs), 400):
        chunk = pairs[start : start + 400]
        if db.is_postgres:
            rows = db.fetchall(
                f"SELECT e.originator_id, e.originator_version FROM {db.events_table} e"
                " JOIN unnest(%s::uuid[], %s::bigint[]) AS w(id, v)"
                " ON e.originator_id = w.id AND e.originator_version = w.v",
                ([p[0] for p in chunk], [p[1] for p in chunk]),
            )
        else:
            values = ",".join(["(%s, %s)"] * len(chunk))
            params: list[Any] = []
            for originator_id, version in chunk:
                params += [originator_id.hex, version]
            rows = db.fetchall(
                f"SELECT originator_id, originator_version FROM {db.events_table}"
                f" WHERE (originator_id, originator_version) IN (VALUES {values})",
                params,
            )
        found.update((oid_value(r["originator_id"]), int(r["originator_version"])) for r in rows)
    return found
