"""Lists of definitions (pipelines, sequences): id, name and current version, by id.

Definition aggregates have derived ids (uuid5 of kind and key), so the store cannot list them
by key. This small index follows the log for definition events only: each call first catches
up from the position it last reached (a topic-filtered scan of the new tail), then answers
from its table. Catching up is idempotent (upserts keep the highest version), so concurrent
callers and crashed catch-ups are harmless.
"""

from __future__ import annotations

import threading
from typing import Any

from engine.application import DealflowApp
from engine.domain.defaults import BUILT_IN_PIPELINES
from engine.domain.definitions import DEFINITION_TOPIC, PIPELINE, DefinitionApplied

TABLE = "dealflow_definition_list"
TRACKING = "dealflow_definition_list_tracking"
_DDL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (kind TEXT NOT NULL, key TEXT NOT NULL,"
    " name TEXT, version BIGINT NOT NULL, PRIMARY KEY (kind, key))",
    f"CREATE TABLE IF NOT EXISTS {TRACKING} (name TEXT PRIMARY KEY, position BIGINT NOT NULL)",
)
PAGE = 1000
MAX_LIMIT = 1000


class DefinitionList:
    def __init__(self, app: DealflowApp) -> None:
        self.app = app
        self._lock = threading.Lock()
        # Built-in pipelines come into the log on their first read, and definitions are never
        # deleted: once this list has seen them exist, it need not read them on every page.
        self._built_ins_present = False
        app.db.execute_script(_DDL)

    def catch_up(self) -> int:
        """Read definition events up to the current head; returns the position reached."""
        with self._lock:
            db = self.app.db
            row = db.fetchone(f"SELECT position FROM {TRACKING} WHERE name = %s", ("list",))
            position = int(row["position"]) if row else 0
            head = self.app.max_position()
            while position < head:
                notes = self.app.recorder.select_notifications(
                    position,
                    PAGE,
                    stop=head,
                    topics=[DEFINITION_TOPIC],
                    inclusive_of_start=False,
                )
                latest: dict[tuple[str, str], tuple[str | None, int]] = {}
                for note in notes:
                    event = self.app.mapper.to_domain_event(note)
                    if isinstance(event, DefinitionApplied):
                        name = event.body.get("name")
                        latest[(event.kind, event.key)] = (
                            str(name) if name is not None else None,
                            event.originator_version,
                        )
                reached = notes[-1].id if len(notes) == PAGE else head
                self._store(latest, reached)
                position = reached
            return position

    def _store(self, latest: dict[tuple[str, str], tuple[str | None, int]], reached: int) -> None:
        db = self.app.db
        with db.transaction() as cur:
            for (kind, key), (name, version) in latest.items():
                cur.execute(
                    f"INSERT INTO {TABLE} (kind, key, name, version) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (kind, key) DO UPDATE SET name = excluded.name,"
                    f" version = excluded.version WHERE excluded.version > {TABLE}.version",
                    (kind, key, name, version),
                )
            cur.execute(
                f"INSERT INTO {TRACKING} (name, position) VALUES (%s, %s)"
                " ON CONFLICT (name) DO UPDATE SET position = excluded.position"
                f" WHERE excluded.position > {TRACKING}.position",
                ("list", reached),
            )

    def page(self, kind: str, *, after: str | None = None, limit: int = 100) -> dict[str, Any]:
        """Definitions of one kind ordered by id, after the id ``after`` (the cursor)."""
        if kind == PIPELINE and not self._built_ins_present:
            # Built-in pipelines exist from the first read; make them visible to the list too.
            for key in BUILT_IN_PIPELINES:
                self.app.get_definition(PIPELINE, key)
            self._built_ins_present = True
        self.catch_up()
        limit = max(1, min(limit, MAX_LIMIT))
        rows = self.app.db.fetchall(
            f"SELECT key, name, version FROM {TABLE} WHERE kind = %s AND key > %s"
            " ORDER BY key LIMIT %s",
            (kind, after or "", limit + 1),
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "items": [
                {"id": r["key"], "name": r["name"], "version": int(r["version"])} for r in rows
            ],
            "next_cursor": rows[-1]["key"] if more else None,
        }
