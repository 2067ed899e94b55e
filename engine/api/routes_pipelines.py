"""Pipeline definitions: versioned, with their history kept."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from engine.api.bodies import json_schema_body, read_json_object
from engine.api.deps import Principal, get_services, require
from engine.api.errors import ApiError, validation_error
from engine.domain.definitions import PIPELINE
from engine.domain.pipeline import SLUG, PipelineDefinition

router = APIRouter(tags=["pipelines"])


def check_slug(value: str, what: str) -> None:
    if not re.fullmatch(SLUG, value):
        raise ApiError(
            422,
            "validation_error",
            f"{what} must be a lowercase slug (a-z, 0-9, - and _)",
            details=[{"field": what, "message": "invalid slug"}],
        )


@router.put(
    "/v1/pipelines/{pipeline_id}",
    summary="Create or replace a pipeline definition (a new version)",
    openapi_extra=json_schema_body(
        PipelineDefinition.model_json_schema(ref_template="#/components/schemas/{model}")
    ),
)
async def put_pipeline(
    pipeline_id: str, request: Request, principal: Principal = require("admin")
) -> dict[str, Any]:
    check_slug(pipeline_id, "pipeline_id")
    body = await read_json_object(request)
    try:
        definition = PipelineDefinition.model_validate(body)
    except ValidationError as error:
        raise validation_error(error) from error
    app = get_services(request).app
    version = await run_in_threadpool(app.put_pipeline, pipeline_id, definition, principal.name)
    return {
        "pipeline_id": pipeline_id,
        "version": version,
        **definition.model_dump(mode="json", exclude_none=True),
    }


@router.get(
    "/v1/pipelines/{pipeline_id}", summary="The current pipeline definition with its version"
)
async def get_pipeline(
    pipeline_id: str, request: Request, _: Principal = require("read")
) -> dict[str, Any]:
    app = get_services(request).app
    version, body = await run_in_threadpool(app.get_definition, PIPELINE, pipeline_id)
    return {"pipeline_id": pipeline_id, "version": version, **body}


@router.get(
    "/v1/pipelines/{pipeline_id}/versions", summary="Every version of a pipeline definition"
)
async def get_pipeline_versions(
    pipeline_id: str, request: Request, _: Principal = require("audit")
) -> dict[str, Any]:
    app = get_services(request).app
    await run_in_threadpool(app.get_definition, PIPELINE, pipeline_id)  # 404 when unknown
    versions = await run_in_threadpool(app.definition_history, PIPELINE, pipeline_id)
    return {"pipeline_id": pipeline_id, "versions": versions}
