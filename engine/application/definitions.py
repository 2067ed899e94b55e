"""Versioned definitions (pipelines, sequences, the team directory) on the application.

Each definition is an aggregate of its own in the event log; every PUT that changes the body is
a new version, and old versions stay readable (a deal is judged under the version its events
were recorded with).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from engine.application.messages import MAX_SAVE_ATTEMPTS, SYSTEM_ACTOR
from engine.domain.deal import PipelineRef
from engine.domain.defaults import BUILT_IN_PIPELINES
from engine.domain.definitions import (
    DIRECTORY,
    PIPELINE,
    Definition,
    DefinitionApplied,
    definition_uuid,
)
from engine.domain.errors import NotFound, PipelineInUse, VersionConflict
from engine.domain.events import iso, utcnow
from engine.domain.pipeline import PipelineDefinition

DEFINITION_CACHE = 4_096  # definition versions kept per process


class DefinitionStore(Application[UUID]):
    """Reading and writing versioned definitions. Part of :class:`DealflowApp`."""

    # Called with (pipeline_id) -> {stage: open deal count}; wired up by the projections.
    stage_occupancy: Callable[[str], dict[str, int]] | None
    _builtin_lock: threading.Lock
    # (aggregate id, version) -> (version, body): every definition version read, per store.
    _definition_cache: dict[tuple[UUID, int], tuple[int, dict[str, Any]]]

    def _definition(self, kind: str, key: str) -> Definition | None:
        """The aggregate, to apply a new version to (reads take one event: read_definition)."""
        try:
            return self.repository.get(definition_uuid(kind, key))  # type: ignore[no-any-return]
        except AggregateNotFoundError:
            return None

    def put_definition(self, kind: str, key: str, body: dict[str, Any], actor: str) -> int:
        for _ in range(MAX_SAVE_ATTEMPTS):
            definition = self._definition(kind, key) or Definition.create(kind, key)
            if not definition.apply_body(body, actor, utcnow()):
                return definition.version
            try:
                self.save(definition)
            except IntegrityError:
                continue
            return definition.version
        raise VersionConflict(f"{kind} {key!r} is being changed concurrently", current_version=0)

    def get_definition(
        self, kind: str, key: str, version: int | None = None
    ) -> tuple[int, dict[str, Any]]:
        found, body = self.read_definition(kind, key, version)
        return found, copy.deepcopy(body)  # the caller's to change; the cached one stays

    def read_definition(
        self, kind: str, key: str, version: int | None = None
    ) -> tuple[int, dict[str, Any]]:
        """``(version, body)`` of the newest version at or below ``version`` (the newest of
        all without one), shared with the cache: not to be changed by the caller.

        Every event of a definition holds the whole body of its version, so a version is one
        indexed read of one event, never a rebuild of the aggregate; a version never changes
        once applied, so each is decoded once per process (a single event over HTTP rebuilt its
        pipeline twice, a third of the request's CPU). Without ``version`` the log is asked
        every time, so a definition changed by another process is seen at once."""
        uuid = definition_uuid(kind, key)
        cache = self._definition_cache
        if version is not None and (uuid, version) in cache:
            return cache[(uuid, version)]
        stored = self.recorder.select_events(uuid, lte=version, desc=True, limit=1)
        if not stored and kind == PIPELINE and key in BUILT_IN_PIPELINES:
            self._install_builtin(key)
            stored = self.recorder.select_events(uuid, lte=version, desc=True, limit=1)
        if not stored:
            raise NotFound(f"{kind} {key!r} does not exist", **{f"{kind}_id": key})
        found_version = int(stored[0].originator_version)
        found = cache.get((uuid, found_version))
        if found is None:
            event = self.mapper.to_domain_event(stored[0])
            assert isinstance(event, DefinitionApplied)
            found = (found_version, event.body)
            if len(cache) >= DEFINITION_CACHE:
                cache.clear()  # rare (thousands of versions): simpler than an LRU, and correct
            cache[(uuid, found_version)] = found
        return found

    def definition_history(self, kind: str, key: str) -> list[dict[str, Any]]:
        return [
            {
                "version": e.originator_version,
                "applied_at": iso(e.timestamp),
                "actor": e.actor,
                "body": e.body,
            }
            for e in cast(
                list[DefinitionApplied], list(self.events.get(definition_uuid(kind, key)))
            )
        ]

    def _install_builtin(self, pipeline_id: str) -> None:
        with self._builtin_lock:
            if self._definition(PIPELINE, pipeline_id) is None:
                body = PipelineDefinition.model_validate(
                    BUILT_IN_PIPELINES[pipeline_id]
                ).model_dump(mode="json", exclude_none=True)
                self.put_definition(PIPELINE, pipeline_id, body, f"{SYSTEM_ACTOR}:built-in")

    def put_pipeline(self, pipeline_id: str, definition: PipelineDefinition, actor: str) -> int:
        if self.stage_occupancy is not None:
            occupied = self.stage_occupancy(pipeline_id)
            dropped = sorted(
                s for s, n in occupied.items() if n > 0 and not definition.has_stage(s)
            )
            if dropped:
                raise PipelineInUse(
                    f"open deals sit in stages the new definition drops: {', '.join(dropped)}",
                    stages=dropped,
                )
        body = definition.model_dump(mode="json", exclude_none=True)
        return self.put_definition(PIPELINE, pipeline_id, body, actor)

    def pipeline_ref(self, pipeline_id: str, version: int | None = None) -> PipelineRef:
        found_version, body = self.read_definition(PIPELINE, pipeline_id, version)
        return PipelineRef(
            pipeline_id, found_version, _parse_pipeline(pipeline_id, found_version, body)
        )

    def put_directory(self, body: dict[str, Any], actor: str) -> int:
        return self.put_definition(DIRECTORY, "team", body, actor)


# (pipeline id, version) -> (the body parsed, its parse). Keyed without the store (tests run many
# stores in one process): a body that differs is parsed again.
_parsed_pipelines: dict[tuple[str, int], tuple[dict[str, Any], PipelineDefinition]] = {}


def _parse_pipeline(pipeline_id: str, version: int, body: dict[str, Any]) -> PipelineDefinition:
    """Definitions never change once applied, so each (id, version) is parsed once per process."""
    key = (pipeline_id, version)
    known = _parsed_pipelines.get(key)
    if known is not None and known[0] is body:
        return known[1]  # the same cached body as last time
    if known is None or known[1].model_dump(mode="json", exclude_none=True) != body:
        parsed = PipelineDefinition.model_validate(body)
    else:
        parsed = known[1]
    _parsed_pipelines[key] = (body, parsed)
    return parsed
