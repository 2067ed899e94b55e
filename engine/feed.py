"""The event feed: the whole log, in log order, for systems downstream (``GET /v1/feed``).

The reader walks the log with the recorder's ``select_notifications`` a bounded page at a
time, so reading from position 0 keeps a flat memory profile on both stores. Each page is
bounded twice: by the number of items returned and by the span of positions scanned, so a
filter that matches little still answers promptly with a cursor that moved on.

Only ``opened`` names its deal and pipeline; other deal events are resolved through their
deal's first event, fetched once per page for the deals not met recently (a bounded cache
keeps memory flat). Definition events (pipelines, sequences, the directory) share the log and
come out marked ``"kind": "definition"``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import Notification

from engine.application import DealflowApp, history_item
from engine.audit.deal_names import CACHE_SIZE, DealNames, Names
from engine.audit.store import oid_param, oid_value, position_column
from engine.domain.deal import EVENT_TYPES, DealEvent, Opened, deal_uuid
from engine.domain.deal_events import DEAL_TOPIC_PREFIXES, topics_of
from engine.domain.definitions import (
    DEFINITION_TOPIC,
    DIRECTORY,
    PIPELINE,
    SEQUENCE,
    DefinitionApplied,
)
from engine.domain.events import META_FIELDS, iso
from engine.persistence.mapper import decode_event

DEFINITION_KINDS = (PIPELINE, SEQUENCE, DIRECTORY)
# A definition event's feed type: "<kind>_applied" (pipeline_applied, sequence_applied, ...).
DEFINITION_TYPES = {f"{kind}_applied": kind for kind in DEFINITION_KINDS}
FEED_TYPES = (*EVENT_TYPES, *DEFINITION_TYPES)
# Deal events may carry either spelling of their topic (engine.domain.deal_events).
_TOPICS_OF_TYPE: dict[str, tuple[str, ...]] = {
    t: topics_of(cls) for t, cls in EVENT_TYPES.items()
} | {t: (DEFINITION_TOPIC,) for t in DEFINITION_TYPES}
MAX_LIMIT = 5000
DEFAULT_LIMIT = 500
# At most this many positions are scanned for one page: a narrow filter over a long log
# answers with few (or no) items and a cursor that moved on, instead of scanning it all.
SCAN_SPAN = 20_000


class UnknownType(ValueError):
    """A ``types`` filter named something that is not a feed type."""

    def __init__(self, unknown: Sequence[str]) -> None:
        super().__init__(", ".join(unknown))
        self.unknown = list(unknown)


@dataclass(frozen=True)
class FeedFilter:
    """Which events a reader wants; an empty filter wants every event."""

    pipeline_ids: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    deal_id: str | None = None

    @classmethod
    def build(
        cls,
        *,
        pipeline_ids: Sequence[str] = (),
        types: Sequence[str] = (),
        deal_id: str | None = None,
    ) -> FeedFilter:
        unknown = [t for t in types if t not in _TOPICS_OF_TYPE]
        if unknown:
            raise UnknownType(unknown)
        return cls(frozenset(pipeline_ids), frozenset(types), deal_id or None)

    def topics(self) -> list[str]:
        return sorted({topic for t in self.types for topic in _TOPICS_OF_TYPE[t]})

    def wants(self, item: dict[str, Any]) -> bool:
        if self.types and item["type"] not in self.types:
            return False
        if self.deal_id is not None and item["deal_id"] != self.deal_id:
            return False
        return not (self.pipeline_ids and item["pipeline_id"] not in self.pipeline_ids)


@dataclass
class FeedPage:
    events: list[dict[str, Any]]
    next_after: int  # the position scanned up to: the `after` of the next page
    head: int  # the log's last position when the page was read

    @property
    def has_more(self) -> bool:
        return self.next_after < self.head


class FeedReader:
    """Reads feed pages from one application's log; safe to share between threads."""

    def __init__(self, app: DealflowApp, *, cache_size: int = CACHE_SIZE) -> None:
        self.app = app
        self._names = DealNames(app, cache_size)
        mapper = app.mapper
        # Stored state is plain JSON unless the store is configured to compress or encrypt.
        self._plain = not (mapper.cipher or mapper.compressor)

    def head(self) -> int:
        return self.app.max_position()

    def page(
        self,
        after: int = 0,
        limit: int = DEFAULT_LIMIT,
        filters: FeedFilter | None = None,
        *,
        span: int = SCAN_SPAN,
    ) -> FeedPage:
        """Events after a position, in log order: at most ``limit`` of them, scanning at most
        ``span`` positions (so ``next_after`` may move on with fewer, or no, events)."""
        filters = filters or FeedFilter()
        limit = max(1, min(limit, MAX_LIMIT))
        head = self.head()
        if filters.deal_id is not None:
            return self._deal_page(after, limit, filters, head)
        topics = filters.topics()
        stop = min(head, after + max(span, limit))
        events: list[dict[str, Any]] = []
        cursor = after
        while cursor < stop and len(events) < limit:
            want = limit - len(events)
            notifications = self.app.recorder.select_notifications(
                cursor, want, stop=stop, topics=topics, inclusive_of_start=False
            )
            names = self._page_names(notifications)
            for notification in notifications:
                item = self._item(notification, names)
                if item is not None and filters.wants(item):
                    events.append(item)
            cursor = stop if len(notifications) < want else notifications[-1].id
        return FeedPage(events, cursor, head)

    def _deal_page(self, after: int, limit: int, filters: FeedFilter, head: int) -> FeedPage:
        """One deal's events: read by its id (not by scanning the log), in log order."""
        db = self.app.db
        column = position_column(db)
        originator = deal_uuid(filters.deal_id or "")
        rows = db.fetchall(
            f"SELECT {column} AS position, originator_version, topic, state"
            f" FROM {db.events_table} WHERE originator_id = %s AND {column} > %s"
            f" ORDER BY {column} LIMIT %s",
            (oid_param(db, originator), after, limit),
        )
        notifications = [
            Notification(
                id=int(row["position"]),
                originator_id=originator,
                originator_version=int(row["originator_version"]),
                topic=str(row["topic"]),
                state=bytes(row["state"]),
            )
            for row in rows
        ]
        # Named like any page: read after its `opened`, the deal is named by its first event.
        names = self._page_names(notifications)
        events: list[dict[str, Any]] = []
        for notification in notifications:
            item = self._item(notification, names)
            if item is not None and item["deal_id"] is None:
                item["deal_id"] = filters.deal_id
            if item is not None and filters.wants(item):
                events.append(item)
        last = notifications[-1].id if notifications else after
        # Fewer rows than asked: this deal has nothing more up to the head read before.
        next_after = last if len(rows) == limit else max(last, head)
        return FeedPage(events, next_after, max(head, last))

    def iterate(
        self, after: int = 0, filters: FeedFilter | None = None, *, page: int = DEFAULT_LIMIT
    ) -> Iterator[dict[str, Any]]:
        """Every event after a position up to the head at the time each page is read."""
        while True:
            result = self.page(after, page, filters)
            yield from result.events
            if result.next_after <= after or not result.has_more:
                return
            after = result.next_after

    # -- decoding ------------------------------------------------------------------------------
    def _page_names(self, notifications: Sequence[Any]) -> dict[UUID, Names]:
        """The names of the page's deals, but those opened in it (named as it is decoded)."""
        deal_events = [
            (oid_value(n.originator_id), n.originator_version)
            for n in notifications
            if n.topic.startswith(DEAL_TOPIC_PREFIXES)
        ]
        # Deals opened in this very page are named by their `opened` as the page is decoded.
        opened_here = {originator for originator, version in deal_events if version == 1}
        return self._names.names_of(
            originator for originator, _ in deal_events if originator not in opened_here
        )

    def _item(self, notification: Any, names: dict[UUID, Names]) -> dict[str, Any] | None:
        topic = notification.topic
        if topic.startswith(DEAL_TOPIC_PREFIXES):
            return self._deal_item(notification, names)
        if topic == DEFINITION_TOPIC:
            event = decode_event(
                topic,
                notification.state,
                oid_value(notification.originator_id),
                notification.originator_version,
                self.app.mapper,
            )
            return definition_item(notification.id, event)
        return None  # snapshots and anything else that is not an event of the feed

    def _deal_item(self, notification: Any, names: dict[UUID, Names]) -> dict[str, Any]:
        """A deal event as the feed shows it: its history item, with position and names."""
        originator = oid_value(notification.originator_id)
        version: int = notification.originator_version
        type_ = _TYPE_OF_TOPIC.get(notification.topic)
        raw: dict[str, Any] | None = (
            orjson.loads(notification.state) if self._plain and type_ is not None else None
        )
        if raw is None or "class_version" in raw:
            # Encrypted, compressed, an older shape or an unknown topic: through the mapper.
            event: DealEvent = decode_event(
                notification.topic, notification.state, originator, version, self.app.mapper
            )
            past = history_item(event)
        else:
            # Plain JSON as the write path stored it: read without building the model.
            past = {
                "version": version,
                "type": type_,
                "occurred_at": _time(raw["occurred_at"]),
                "recorded_at": _time(raw["timestamp"]),
                "event_id": raw["event_id"],
                "actor": raw["actor"],
                "pipeline_version": raw.get("pipeline_version"),
                "hash": raw["hash"],
                "data": {k: v for k, v in raw.items() if k not in META_FIELDS},
            }
        deal_id, pipeline_id = self._names_of(originator, past["type"], past["data"], names)
        return {
            "position": notification.id,
            "kind": "deal",
            "deal_id": deal_id,
            "pipeline_id": pipeline_id,
            **past,
        }

    def _names_of(
        self, originator: UUID, type_: str, data: dict[str, Any], page: dict[UUID, Names]
    ) -> Names:
        """A deal opened in this page is named by its ``opened``, for the rest of the page
        and (through the cache) for later pages."""
        if type_ == Opened.TYPE:
            names = (data.get("deal_id"), data.get("pipeline_id"))
            page[originator] = names
            self._names.put(originator, names)
            return names
        return page.get(originator, (None, None))


def definition_item(position: int, event: DefinitionApplied) -> dict[str, Any]:
    """A definition event as the feed shows it: marked, with the body as its data."""
    recorded_at = iso(event.timestamp)
    return {
        "position": position,
        "kind": "definition",
        "deal_id": None,
        "pipeline_id": event.key if event.kind == PIPELINE else None,
        "type": f"{event.kind}_applied",
        "version": event.originator_version,
        "occurred_at": recorded_at,
        "recorded_at": recorded_at,
        "actor": event.actor,
        "event_id": None,
        "pipeline_version": event.originator_version if event.kind == PIPELINE else None,
        "hash": None,
        "definition": {"kind": event.kind, "id": event.key, "version": event.originator_version},
        "data": event.body,
    }


_TYPE_OF_TOPIC = {topic: t for t, cls in EVENT_TYPES.items() for topic in topics_of(cls)}


def _time(value: str) -> str:
    """Stored times in the one spelling the API uses everywhere (UTC with a Z)."""
    if value.endswith("Z"):
        return value
    return iso(datetime.fromisoformat(value))
