"""The memory API's OpenAPI document: every operation (method, path, summary, body and answer
models, query model), built once from the pydantic models in ``api_models`` and friends."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .api_models import (
    AddRequest,
    AddResponse,
    CallerResponse,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    HistoryItemModel,
    ImportRecord,
    ImportResponse,
    ListQuery,
    ListRequest,
    ListResponse,
    MemoryFeedbackRequest,
    MemoryItemModel,
    MessageResponse,
    ProfileQuery,
    ProfileResponse,
    ScopeQuery,
    SearchRequest,
    SearchResponse,
    UpdateRequest,
)
from .export_models import ExportCreated, ExportRecord, ExportRequest
from .learning_models import LearningPage, LearningQuery, RetryResponse

# ---- OpenAPI -----------------------------------------------------------------------------

Operation = tuple[str, str, str, type[BaseModel] | None, type[BaseModel] | None, str]
# (method, path, summary, request body model, response model, query model name or "")
OPERATIONS: list[Operation] = [
    ("post", "/memories", "Add memories", AddRequest, AddResponse, ""),
    ("get", "/memories", "List a scope's memories, newest first", None, ListResponse, "ListQuery"),
    ("post", "/memories/list", "List with filters", ListRequest, ListResponse, ""),
    ("delete", "/memories", "Delete all memories of a scope", None, MessageResponse, "ScopeQuery"),
    ("get", "/memories/export", "Export a scope as JSONL (streamed)", None, None, "ScopeQuery"),
    ("post", "/memories/import", "Import JSONL (idempotent by id)", None, ImportResponse, ""),
    ("get", "/memories/{memory_id}", "Get one memory", None, MemoryItemModel, ""),
    ("put", "/memories/{memory_id}", "Update a memory", UpdateRequest, MemoryItemModel, ""),
    ("delete", "/memories/{memory_id}", "Delete a memory", None, MessageResponse, ""),
    ("get", "/memories/{memory_id}/history", "A memory's history", None, HistoryItemModel, ""),
    (
        "post",
        "/memories/{memory_id}/feedback",
        "Feedback on a memory",
        FeedbackRequest,
        FeedbackResponse,
        "",
    ),
    ("post", "/feedback", "Feedback (Mem0's route)", MemoryFeedbackRequest, FeedbackResponse, ""),
    ("post", "/search", "Search memories", SearchRequest, SearchResponse, ""),
    ("post", "/reset", "Delete every memory of every user (admin)", None, MessageResponse, ""),
    ("get", "/auth/me", "The calling key's rights", None, CallerResponse, ""),
    ("post", "/exports", "Queue a structured export", ExportRequest, ExportCreated, ""),
    ("get", "/exports/{export_id}", "A structured export", None, ExportRecord, ""),
    (
        "get",
        "/learning",
        "The learning log: what a user's jobs did",
        None,
        LearningPage,
        "LearningQuery",
    ),
    ("post", "/learning/{job_id}/retry", "Requeue a dead learning job", None, RetryResponse, ""),
    ("get", "/users/{user_id}/profile", "A user's profile", None, ProfileResponse, "ProfileQuery"),
]
QUERY_MODELS: dict[str, type[BaseModel]] = {
    "ListQuery": ListQuery,
    "ScopeQuery": ScopeQuery,
    "LearningQuery": LearningQuery,
    "ProfileQuery": ProfileQuery,
}
ERROR_STATUSES = (
    (400, "invalid request"),
    (401, "missing or wrong API key"),
    (403, "the key may not act for that user, or a web page's origin is not allowed"),
    (404, "no such memory visible to this key"),
    (409, "a new text for an immutable memory (send immutable: false with it)"),
    (408, "the request body did not arrive in time"),
    (409, "the feature is off in this proxy's config (graph routes: memory.graph.enabled)"),
    (413, "the request body is larger than the configured limit"),
    (415, "the body is not sent as application/json (application/x-ndjson for import)"),
)


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI query parameters with their JSON schemas, from a pydantic model."""
    properties = model.model_json_schema(mode="validation")["properties"]
    params = []
    for name, schema in properties.items():
        schema = dict(schema)
        options = [o for o in schema.pop("anyOf", []) if o.get("type") != "null"]
        if options:  # an absent parameter is the None; a query cannot carry null
            schema.update(options[0] if len(options) == 1 else {"anyOf": options})
        if schema.get("default") is None:
            schema.pop("default", None)
        description = schema.pop("description", None)
        schema.pop("title", None)
        param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
        if description:
            param["description"] = description
        params.append(param)
    return params


def operation_id(method: str, path: str) -> str:
    """``post /memories/{memory_id}`` → ``post_memories_memory_id``."""
    words = [w.strip("{}") for w in path.split("/") if w]
    return "_".join([method, *words])


def build_openapi(
    operations: Sequence[Operation] = OPERATIONS,
    query_models: Mapping[str, type[BaseModel]] = QUERY_MODELS,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document, schemas generated from the pydantic models."""
    models = {m for op in operations for m in (op[3], op[4]) if m is not None}
    models |= {ErrorResponse, ImportRecord}
    _, defs = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    schemas = defs.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for method, path, summary, body, response, query in operations:
        op: dict[str, Any] = {"summary": summary, "security": [{"bearer": []}, {"apiKey": []}]}
        params: list[dict[str, Any]] = []
        for name in re.findall(r"{(\w+)}", path):
            params.append(
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            )
        if query:
            params.extend(query_parameters(query_models[query]))
        if params:
            op["parameters"] = params
        if body is not None:
            ref = {"$ref": f"#/components/schemas/{body.__name__}"}
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
        if path == "/memories/import":
            lines = {"type": "array", "items": {"$ref": "#/components/schemas/ImportRecord"}}
            op["requestBody"] = {
                "required": True,
                "description": "JSON Lines: one ImportRecord per line",
                "content": {"application/x-ndjson": {"schema": lines}},
            }
        ok: dict[str, Any] = {"description": "OK"}
        if response is not None:
            schema: dict[str, Any] = {"$ref": f"#/components/schemas/{response.__name__}"}
            if response is HistoryItemModel:
                schema = {"type": "array", "items": schema}
            ok["content"] = {"application/json": {"schema": schema}}
        elif path == "/memories/export":
            ok["content"] = {"application/x-ndjson": {"schema": {"type": "string"}}}
        errors = {
            str(code): {"description": text, "content": {"application/json": {"schema": error_ref}}}
            for code, text in ERROR_STATUSES
        }
        accepted = {("post", "/exports"), ("post", "/learning/{job_id}/retry")}
        ok_status = "202" if (method, path) in accepted else "200"
        op["responses"] = {ok_status: ok, **errors}
        op["operationId"] = operation_id(method, path)
        paths.setdefault(path, {})[method] = op
    # The ids an add returns feed the per-memory operations (schemathesis' stateful phase).
    by_id = {"memory_id": "$response.body#/results/0/id"}
    paths["/memories"]["post"]["responses"]["200"]["links"] = {
        target: {"operationId": operation_id(method, path), "parameters": by_id}
        for target, method, path in (
            ("GetMemory", "get", "/memories/{memory_id}"),
            ("UpdateMemory", "put", "/memories/{memory_id}"),
            ("DeleteMemory", "delete", "/memories/{memory_id}"),
            ("MemoryHistory", "get", "/memories/{memory_id}/history"),
        )
    }
    paths["/users/{user_id}/profile"]["get"]["responses"]["409"] = {
        "description": "profiles are off, or no extraction model is configured",
        "content": {"application/json": {"schema": error_ref}},
    }
    paths["/exports"]["post"]["responses"]["202"]["links"] = {
        "GetExport": {
            "operationId": operation_id("get", "/exports/{export_id}"),
            "parameters": {"export_id": "$response.body#/id"},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "memproxy memory API",
            "version": "1",
            "description": "Mem0-compatible memory REST API. Every path is also served under /v1.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
