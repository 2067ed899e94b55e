"""Where the deal read models live: tracking recorders that also hold the view tables.

Each subclass of eventsourcing's ``PostgresTrackingRecorder`` / ``SQLiteTrackingRecorder`` writes
a whole batch of view changes and the batch's tracking record (its last position) in one
transaction, so a batch is either entirely applied and tracked or not at all (exactly once).
Both share the application's datastore: one database, one connection pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteDatastore, SQLiteTrackingRecorder
from psycopg.sql import SQL

from projections.readmodel.copying import (
    VERSIONS_UPSERT,
    cols,
    copy_new_rows,
    summary_rows,
    upsert_sql,
    zero_test,
)
from projections.readmodel.fold import DealFold
from projections.readmodel.records import EventRecord
from projections.readmodel.rows import (
    CURRENT_COLUMNS,
    HISTORY_COLUMNS,
    STAY_COLUMNS,
    ChangeSet,
    DealRow,
)
from projections.readmodel.schema import (
    CURRENT_TABLE,
    HISTORY_TABLE,
    META_TABLE,
    PIPELINES_TABLE,
    POSTGRES_DDL,
    RETIRED_INDEXES,
    SCHEMA_VERSION,
    SQLITE_DDL,
    STAYS_TABLE,
    VIEW_TABLES,
    secondary_indexes,
)

POSTGRES_TRACKING_TABLE = "dealflow_projection_tracking"
SQLITE_TRACKING_TABLE = "tracking"  # fixed by eventsourcing's SQLiteTrackingRecorder


class PositionMoved(Exception):
    """The tracked position is not where the runner thought (a rebuild or a second runner)."""

    def __init__(self, position: int) -> None:
        super().__init__(f"the tracked position moved to {position}")
        self.position = position


class DealsViewMixin:
    """The transaction shape both backends share: lock, load, fold, write, track."""

    tracking_name = "deals"
    datastore: Any

    def position(self) -> int:
        return int(self.max_tracking_id(self.tracking_name) or 0)  # type: ignore[attr-defined]

    def process(
        self, records: Sequence[EventRecord], tracking: Tracking, expected: int | None = None
    ) -> ChangeSet | None:
        """Apply one batch and record ``tracking`` in the same transaction.

        ``expected`` is the position the caller believes is tracked; if the database says
        otherwise nothing is written and :class:`PositionMoved` tells the caller where to resume.
        Returns None when the batch was already applied."""
        with self.datastore.transaction(commit=True) as curs:
            stored = self._lock_position(curs)
            if expected is not None and stored != expected:
                raise PositionMoved(stored)
            if tracking.notification_id <= stored:
                return None
            deals = list({r.deal for r in records})
            fold = DealFold(self._load(curs, deals) if deals else {})
            changes = fold.apply_all(records)
            if not changes.empty:
                self._write(curs, changes)
            self._insert_tracking(curs, tracking)  # type: ignore[attr-defined]
            return changes

    def analyze(self) -> None:
        """Refresh the planner's statistics after a bulk change (a rebuild)."""

    def create_views(self) -> None:
        """Create the tables; tables of an older shape are dropped first (with the tracked
        position, so the runner rebuilds them from the log)."""
        with self.datastore.transaction(commit=True) as curs:
            if self._table_exists(curs, CURRENT_TABLE):
                version = None
                if self._table_exists(curs, META_TABLE):
                    curs.execute(f"SELECT MAX(version) AS v FROM {META_TABLE}")
                    row = curs.fetchone()
                    version = row["v"] if row else None
                if version != SCHEMA_VERSION:
                    for table in (*VIEW_TABLES, META_TABLE):
                        curs.execute(f"DROP TABLE IF EXISTS {table}")
                    self._forget_position(curs)
                for index in RETIRED_INDEXES:
                    curs.execute(f"DROP INDEX IF EXISTS {index}")
        try:
            self.create_table()  # type: ignore[attr-defined]
        except IntegrityError:
            # eventsourcing looks for the tracking table outside the transaction that creates
            # it. Two processes opening one new store (the runner and a `projections status`)
            # can both find none, both create it, and the second one's migration row (or, on
            # PostgreSQL, its type) collides. The tables exist by then: a second look finds
            # them and inserts nothing.
            self.create_table()  # type: ignore[attr-defined]
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(f"DELETE FROM {META_TABLE}")
            curs.execute(f"INSERT INTO {META_TABLE} (version) VALUES ({SCHEMA_VERSION})")

    def _table_exists(self, curs: Any, table: str) -> bool:
        raise NotImplementedError

    def _forget_position(self, curs: Any) -> None:
        raise NotImplementedError

    def reset(self, bulk: bool = False) -> None:
        """Forget every row and the tracked position (the start of a rebuild). ``bulk`` also
        drops the secondary indexes until :meth:`finish_rebuild` builds them again."""
        with self.datastore.transaction(commit=True) as curs:
            self._clear(curs)
            if bulk:
                for name, _ in secondary_indexes(self.ddl):
                    curs.execute(f"DROP INDEX IF EXISTS {name}")

    def finish_rebuild(self) -> None:
        """Build any secondary index a bulk rebuild dropped (a no-op when they all exist)."""
        with self.datastore.transaction(commit=True) as curs:
            self._index_settings(curs)
            for _, statement in secondary_indexes(self.ddl):
                curs.execute(statement)

    ddl: list[str] = []

    def _index_settings(self, curs: Any) -> None:
        """Settings for building indexes in bulk."""

    # -- backend specifics --------------------------------------------------------------------
    def _lock_position(self, curs: Any) -> int:
        raise NotImplementedError

    def _load(self, curs: Any, deals: list[UUID]) -> dict[UUID, DealRow]:
        raise NotImplementedError

    def _write(self, curs: Any, changes: ChangeSet) -> None:
        raise NotImplementedError

    def _clear(self, curs: Any) -> None:
        raise NotImplementedError


_PG_TYPES = {
    "pipeline_id": "text",
    "stage": "text",
    "dim": "text",
    "key_null": "smallint",
    "key": "text",
    "visited": "text",
    "ever_won": "smallint",
    "lvl": "smallint",
    "status": "text",
}


class PostgresDealsView(DealsViewMixin, PostgresTrackingRecorder):
    ddl = POSTGRES_DDL

    def _index_settings(self, curs: Any) -> None:
        curs.execute("SET LOCAL maintenance_work_mem TO '256MB'")

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, tracking_table_name=POSTGRES_TRACKING_TABLE, **kwargs)
        self.sql_create_statements.extend(SQL(s) for s in POSTGRES_DDL)  # type: ignore[misc]

    def _lock_position(self, curs: Any) -> int:
        # A read model can always be re-derived and its tracking record commits with it, so a
        # crash that loses the last commits only means re-processing them: no need to wait
        # for the WAL flush on every batch.
        curs.execute("SET LOCAL synchronous_commit TO OFF")
        # FOR UPDATE serialises two runners of the same projection on the tracking row.
        curs.execute(
            f"SELECT notification_id FROM {POSTGRES_TRACKING_TABLE} WHERE application_name = %s FOR UPDATE",
            (self.tracking_name,),
        )
        row = curs.fetchone()
        return int(row["notification_id"] or 0) if row else 0

    def _load(self, curs: Any, deals: list[UUID]) -> dict[UUID, DealRow]:
        curs.execute(
            f"SELECT {cols(CURRENT_COLUMNS)} FROM {CURRENT_TABLE} WHERE deal_uuid = ANY(%s)",
            (deals,),
        )
        return {row["deal_uuid"]: DealRow.from_row(row) for row in curs.fetchall()}

    def _write(self, curs: Any, changes: ChangeSet) -> None:
        # The current rows: replace every touched deal (delete + COPY beats an upsert here).
        touched = list(changes.current)
        curs.execute(f"DELETE FROM {CURRENT_TABLE} WHERE deal_uuid = ANY(%s)", (touched,))
        # Closing the stored history rows and stays touches none of the batch's new ones (their
        # versions and stay numbers are higher), so those are copied after, all three at once.
        if changes.history_closes:
            ids, versions, ends = zip(*changes.history_closes, strict=True)
            curs.execute(
                f"UPDATE {HISTORY_TABLE} h SET valid_to = c.t"
                " FROM unnest(%s::uuid[], %s::int[], %s::bigint[]) AS c(d, v, t)"
                " WHERE h.deal_uuid = c.d AND h.version = c.v",
                (list(ids), list(versions), list(ends)),
            )
        if changes.stay_closes:
            ids, seqs, lefts, exits, firsts = zip(*changes.stay_closes, strict=True)
            curs.execute(
                f"UPDATE {STAYS_TABLE} s SET left_at = c.l, exit = c.x, first_advance = c.f"
                " FROM unnest(%s::uuid[], %s::int[], %s::bigint[], %s::text[], %s::smallint[])"
                " AS c(d, q, l, x, f) WHERE s.deal_uuid = c.d AND s.seq = c.q",
                (list(ids), list(seqs), list(lefts), list(exits), list(firsts)),
            )
        copy_new_rows(curs, changes)
        if changes.pipeline_times:
            names = sorted(changes.pipeline_times)
            curs.execute(
                f"INSERT INTO {PIPELINES_TABLE} (pipeline_id, last_event_at)"
                " SELECT * FROM unnest(%s::text[], %s::bigint[])"
                " ON CONFLICT (pipeline_id) DO UPDATE"
                f" SET last_event_at = GREATEST({PIPELINES_TABLE}.last_event_at, excluded.last_event_at)",
                (names, [changes.pipeline_times[n] for n in names]),
            )
        if changes.versions:
            items = sorted(changes.versions.items())
            curs.execute(
                VERSIONS_UPSERT.format(
                    values="SELECT * FROM unnest(%s::text[], %s::int[], %s::bigint[])",
                    least="LEAST",
                ),
                ([k[0] for k, _ in items], [k[1] for k, _ in items], [v for _, v in items]),
            )
        for table, keys, counters, rows in summary_rows(changes):
            if not rows:
                continue
            columns = [*keys, *counters]
            casts = ", ".join(f"%s::{_PG_TYPES.get(c, 'bigint')}[]" for c in columns)
            curs.execute(
                upsert_sql(table, keys, counters, f"SELECT * FROM unnest({casts})")
                + f" RETURNING {cols(keys)}, {zero_test(table, counters)} AS zero",
                [list(column) for column in zip(*rows, strict=True)],
            )
            # A key whose counters came back to zero is deleted: the table then holds the same
            # rows as a rebuild, which never writes a zero key.
            zeros = [[r[k] for k in keys] for r in curs.fetchall() if r["zero"]]
            if zeros:
                key_casts = ", ".join(f"%s::{_PG_TYPES.get(k, 'bigint')}[]" for k in keys)
                curs.execute(
                    f"DELETE FROM {table} WHERE ({cols(keys)}) IN"
                    f" (SELECT * FROM unnest({key_casts}))",
                    [list(column) for column in zip(*zeros, strict=True)],
                )

    def analyze(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            for table in VIEW_TABLES:
                curs.execute(f"ANALYZE {table}")

    def _clear(self, curs: Any) -> None:
        curs.execute(f"TRUNCATE {', '.join(VIEW_TABLES)}")
        self._forget_position(curs)

    def _table_exists(self, curs: Any, table: str) -> bool:
        curs.execute("SELECT to_regclass(%s) AS t", (table,))
        row = curs.fetchone()
        return row is not None and row["t"] is not None

    def _forget_position(self, curs: Any) -> None:
        curs.execute(
            f"DELETE FROM {POSTGRES_TRACKING_TABLE} WHERE application_name = %s",
            (self.tracking_name,),
        )


def _hex(values: Sequence[Any]) -> tuple[Any, ...]:
    return (values[0].hex, *values[1:])


class SQLiteDealsView(DealsViewMixin, SQLiteTrackingRecorder):
    ddl = SQLITE_DDL

    def __init__(self, datastore: SQLiteDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), *SQLITE_DDL]

    def _lock_position(self, curs: Any) -> int:
        # A write first, so the transaction holds SQLite's write lock before it reads anything
        # (a read-then-write transaction could fail to upgrade under WAL).
        curs.execute(
            f"UPDATE {SQLITE_TRACKING_TABLE} SET notification_id = notification_id WHERE application_name = ?",
            (self.tracking_name,),
        )
        curs.execute(
            f"SELECT notification_id FROM {SQLITE_TRACKING_TABLE} WHERE application_name = ?",
            (self.tracking_name,),
        )
        row = curs.fetchone()
        return int(row[0] or 0) if row else 0

    def _load(self, curs: Any, deals: list[UUID]) -> dict[UUID, DealRow]:
        found: dict[UUID, DealRow] = {}
        for start in range(0, len(deals), 500):
            chunk = [d.hex for d in deals[start : start + 500]]
            curs.execute(
                f"SELECT {cols(CURRENT_COLUMNS)} FROM {CURRENT_TABLE}"
                f" WHERE deal_uuid IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for row in curs.fetchall():
                deal = DealRow.from_row(row)
                found[deal.deal_uuid] = deal
        return found

    def _write(self, curs: Any, changes: ChangeSet) -> None:
        marks = lambda n: ",".join("?" * n)  # noqa: E731
        curs.executemany(
            f"INSERT OR REPLACE INTO {CURRENT_TABLE} ({cols(CURRENT_COLUMNS)}) VALUES ({marks(len(CURRENT_COLUMNS))})",
            [_hex(r.current_values()) for r in changes.current.values()],
        )
        if changes.history_closes:
            curs.executemany(
                f"UPDATE {HISTORY_TABLE} SET valid_to = ? WHERE deal_uuid = ? AND version = ?",
                [(t, d.hex, v) for d, v, t in changes.history_closes],
            )
        curs.executemany(
            f"INSERT INTO {HISTORY_TABLE} ({cols(HISTORY_COLUMNS)}) VALUES ({marks(len(HISTORY_COLUMNS))})",
            [_hex(v) for v in changes.history],
        )
        if changes.stay_closes:
            curs.executemany(
                f"UPDATE {STAYS_TABLE} SET left_at = ?, exit = ?, first_advance = ? WHERE deal_uuid = ? AND seq = ?",
                [(lft, x, f, d.hex, q) for d, q, lft, x, f in changes.stay_closes],
            )
        if changes.stays:
            curs.executemany(
                f"INSERT INTO {STAYS_TABLE} ({cols(STAY_COLUMNS)}) VALUES ({marks(len(STAY_COLUMNS))})",
                [_hex(s.values()) for s in changes.stays.values()],
            )
        if changes.pipeline_times:
            curs.executemany(
                f"INSERT INTO {PIPELINES_TABLE} (pipeline_id, last_event_at) VALUES (?, ?)"
                " ON CONFLICT (pipeline_id) DO UPDATE"
                f" SET last_event_at = MAX({PIPELINES_TABLE}.last_event_at, excluded.last_event_at)",
                sorted(changes.pipeline_times.items()),
            )
        if changes.versions:
            curs.executemany(
                VERSIONS_UPSERT.format(values="VALUES (?, ?, ?)", least="MIN"),
                [(*k, v) for k, v in sorted(changes.versions.items())],
            )
        for table, keys, counters, rows in summary_rows(changes):
            if rows:
                values = f"VALUES ({marks(len(keys) + len(counters))})"
                curs.executemany(upsert_sql(table, keys, counters, values), rows)
                # Keys back to zero are deleted, as on PostgreSQL (the rebuild never writes one).
                match = " AND ".join(f"{k} = ?" for k in keys)
                curs.executemany(
                    f"DELETE FROM {table} WHERE {match} AND {zero_test(table, counters)}",
                    [r[: len(keys)] for r in rows],
                )

    def _clear(self, curs: Any) -> None:
        for table in VIEW_TABLES:
            curs.execute(f"DELETE FROM {table}")
        self._forget_position(curs)

    def _table_exists(self, curs: Any, table: str) -> bool:
        curs.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        return curs.fetchone() is not None

    def _forget_position(self, curs: Any) -> None:
        curs.execute(
            f"DELETE FROM {SQLITE_TRACKING_TABLE} WHERE application_name = ?", (self.tracking_name,)
        )


def build_view(app: Any) -> DealsViewMixin:
    """The deals view for the application's backend, sharing its datastore; tables created."""
    datastore = app.recorder.datastore
    view: DealsViewMixin
    if isinstance(datastore, PostgresDatastore):
        view = PostgresDealsView(datastore)
    else:
        view = SQLiteDealsView(datastore)
    view.create_views()
    return view


__all__ = ["IntegrityError", "PositionMoved", "build_view"]
