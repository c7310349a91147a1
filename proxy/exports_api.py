"""Structured exports: ``POST /v1/exports`` queues a durable job that fills the caller's JSON
Schema from a user's memories (the extraction model, validated, one corrected retry);
``GET /v1/exports/{export_id}`` returns its status and the validated JSON. The job runs on
the learning queue, after the user's pending learning jobs (per-user order)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from memory_core.errors import NotFound
from memory_core.export_store import ExportStore
from memory_core.exports import json_schema_of
from memory_core.types import IDENTITY_FIELDS

from .errors import BadRequest, MemoryDisabled
from .export_jobs import EXPORT_JOB
from .export_models import ExportRequest
from .memories_api import caller_of, json_response, memory_of, read_json
from .memory_access import authorize_scope, may_see
from .state import state_of


def exports_of(request: Request) -> ExportStore:
    exports = state_of(request).exports
    if exports is None:
        raise MemoryDisabled("memory is disabled in this proxy's config (memory.enabled)")
    return exports


async def create_export(request: Request) -> Response:
    caller = caller_of(request)
    body = await read_json(request, ExportRequest)
    scope = authorize_scope(caller, body.model_dump(include=set(IDENTITY_FIELDS)))
    memory = memory_of(request)
    state = state_of(request)
    if state.queue is None or state.extraction.configured() is None:
        raise BadRequest(
            "exports need a model to fill the schema: set memory.extraction_model or memory.llm"
        )
    schema = json_schema_of(body.json_schema)
    # A bad filter fails here, with a 400, not later in the job.
    await memory.get_all(
        user_id=scope.user_id,
        agent_id=scope.agent_id,
        run_id=scope.run_id,
        app_id=scope.app_id,
        limit=1,
        filters=body.filters,
    )
    request_data = {"schema": schema, "instructions": body.instructions, "filters": body.filters}
    export_id = await exports_of(request).create(scope.as_dict(), request_data)
    job = {"kind": EXPORT_JOB, "export_id": export_id, "scope": scope.as_dict()}
    await state.queue.enqueue(scope.user_id or "", job)
    return json_response({"id": export_id, "status": "queued"}, status=202)


async def get_export(request: Request) -> Response:
    caller = caller_of(request)
    export_id = request.path_params["export_id"]
    record = await exports_of(request).get(export_id)
    if not may_see(caller, record):
        raise NotFound(f"export {export_id} not found")
    return json_response(record)


def export_routes() -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for prefix in ("", "/v1"):
        routes += [
            Route(prefix + "/exports", create_export, methods=["POST"]),
            Route(prefix + "/exports/", create_export, methods=["POST"]),
            Route(prefix + "/exports/{export_id}", get_export, methods=["GET"]),
        ]
    return routes


__all__ = ["export_routes"]
