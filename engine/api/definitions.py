"""One router factory for every versioned definition: pipelines, sequences, the directory.

Each kind gets the same three routes: ``PUT`` (admin) validates the body with the kind's model
and stores it as a new version (an unchanged body keeps its version), ``GET`` (read) returns the
current version, and ``GET .../versions`` (audit) every version with who applied it and when.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError

from engine.api.bodies import json_schema_body, read_json_object
from engine.api.deps import get_services, require
from engine.api.errors import validation_error
from engine.api.helpers import check_slug
from engine.application import DealflowApp
from engine.domain.errors import NotFound
from engine.tokens import Principal

# (app, key, validated definition, actor) -> the version now current
Save = Callable[[DealflowApp, str, Any, str], int]


@dataclass(frozen=True)
class DefinitionKind:
    kind: str  # engine.domain.definitions: PIPELINE, SEQUENCE or DIRECTORY
    path: str  # "/v1/pipelines/{pipeline_id}", or "/v1/directory" for a singleton
    model: type[BaseModel]
    noun: str  # "pipeline definition"
    id_field: str | None = None  # "pipeline_id"; None for a singleton
    singleton_key: str = "team"
    exclude_none: bool = True
    save: Save | None = None  # default: store the dumped body as the next version
    empty: dict[str, Any] | None = None  # GET's answer when nothing is stored (else 404)
    tag: str = "definitions"


def definition_router(spec: DefinitionKind) -> APIRouter:
    router = APIRouter(tags=[spec.tag])
    id_field = spec.id_field
    schema = spec.model.model_json_schema(ref_template="#/components/schemas/{model}")

    def ident(key: str) -> dict[str, Any]:
        return {id_field: key} if id_field else {}

    def store(app: DealflowApp, key: str, definition: BaseModel, actor: str) -> int:
        if spec.save is not None:
            return spec.save(app, key, definition, actor)
        body = definition.model_dump(mode="json", exclude_none=spec.exclude_none)
        return app.put_definition(spec.kind, key, body, actor)

    async def put(key: str, request: Request, principal: Principal) -> dict[str, Any]:
        if id_field:
            check_slug(key, id_field)
        body = await read_json_object(request)
        try:
            definition = spec.model.model_validate(body)
        except ValidationError as error:
            raise validation_error(error) from error
        app = get_services(request).app
        version = await run_in_threadpool(store, app, key, definition, principal.name)
        stored = definition.model_dump(mode="json", exclude_none=spec.exclude_none)
        return {**ident(key), "version": version, **stored}

    async def get(key: str, request: Request) -> dict[str, Any]:
        app = get_services(request).app
        try:
            version, body = await run_in_threadpool(app.get_definition, spec.kind, key)
        except NotFound:
            if spec.empty is None:
                raise
            return {**ident(key), **spec.empty}
        return {**ident(key), "version": version, **body}

    async def versions(key: str, request: Request) -> dict[str, Any]:
        app = get_services(request).app
        try:
            await run_in_threadpool(app.get_definition, spec.kind, key)
        except NotFound:
            if spec.empty is None:
                raise
            return {**ident(key), "versions": []}  # a singleton that was never set
        history = await run_in_threadpool(app.definition_history, spec.kind, key)
        return {**ident(key), "versions": history}

    put_doc: dict[str, Any] = {
        "summary": f"Create or replace the {spec.noun} (a new version)",
        "openapi_extra": json_schema_body(schema),
    }
    get_doc: dict[str, Any] = {"summary": f"The current {spec.noun} with its version"}
    versions_doc: dict[str, Any] = {"summary": f"Every version of the {spec.noun}"}

    if id_field:

        @router.put(spec.path, **put_doc)
        async def put_keyed(
            request: Request,
            key: str = Path(alias=id_field),
            principal: Principal = require("admin"),
        ) -> dict[str, Any]:
            return await put(key, request, principal)

        @router.get(spec.path, **get_doc)
        async def get_keyed(
            request: Request, key: str = Path(alias=id_field), _: Principal = require("read")
        ) -> dict[str, Any]:
            return await get(key, request)

        @router.get(spec.path + "/versions", **versions_doc)
        async def versions_keyed(
            request: Request, key: str = Path(alias=id_field), _: Principal = require("audit")
        ) -> dict[str, Any]:
            return await versions(key, request)

    else:
        singleton = spec.singleton_key

        @router.put(spec.path, **put_doc)
        async def put_singleton(
            request: Request, principal: Principal = require("admin")
        ) -> dict[str, Any]:
            return await put(singleton, request, principal)

        @router.get(spec.path, **get_doc)
        async def get_singleton(request: Request, _: Principal = require("read")) -> dict[str, Any]:
            return await get(singleton, request)

        @router.get(spec.path + "/versions", **versions_doc)
        async def versions_singleton(
            request: Request, _: Principal = require("audit")
        ) -> dict[str, Any]:
            return await versions(singleton, request)

    return router
