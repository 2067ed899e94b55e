"""Pipeline definitions: versioned, with their history kept."""

from __future__ import annotations

from typing import Any

from engine.api.definitions import DefinitionKind, definition_router
from engine.application import DealflowApp
from engine.domain.definitions import PIPELINE
from engine.domain.pipeline import PipelineDefinition


def _save(app: DealflowApp, pipeline_id: str, definition: Any, actor: str) -> int:
    # Not a plain put: a new version may not drop a stage that open deals sit in.
    return app.put_pipeline(pipeline_id, definition, actor)


router = definition_router(
    DefinitionKind(
        kind=PIPELINE,
        path="/v1/pipelines/{pipeline_id}",
        model=PipelineDefinition,
        noun="pipeline definition",
        id_field="pipeline_id",
        save=_save,
        tag="pipelines",
    )
)
