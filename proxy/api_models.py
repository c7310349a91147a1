"""Pydantic models of the memory REST API (Mem0 server shapes) and its OpenAPI document."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)
from pydantic.json_schema import models_json_schema

from memory_core.checks import check_metadata
from memory_core.config import MAX_TTL_S
from memory_core.errors import InvalidInput
from memory_core.graph_prompts import entity_name, relation_name
from memory_core.lifecycle import MAX_CATEGORIES, MAX_CATEGORY_CHARS, MAX_FEEDBACK_REASON_CHARS
from memory_core.timestamps import normalize_timestamp
from memory_core.types import ID_PATTERN, ID_REGEX, IDENTITY_FIELDS

from .export_models import ExportCreated, ExportRecord, ExportRequest
from .learning_models import LearningPage, LearningQuery, RetryResponse

IdField = Field(default=None, pattern=ID_REGEX, description="user/agent/run/app id")
MessageIn = str | dict[str, Any]
ExpirationDate = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")]
TtlSeconds = Annotated[StrictInt, Field(ge=1, le=MAX_TTL_S)]
Category = Annotated[StrictStr, Field(min_length=1, max_length=MAX_CATEGORY_CHARS)]
EXPIRATION_HELP = "YYYY-MM-DD (UTC): the last day the memory is searched and recalled"


class _Request(BaseModel):
    # Mem0 clients send a few fields we do not use (e.g. "version", "output_format").
    model_config = ConfigDict(extra="ignore")


class ScopeQuery(_Request):
    """Whose memories (Mem0's entities; every id given must match): ``DELETE /memories``,
    ``GET /memories/export``, ``POST .../import``, and part of every scoped request."""

    user_id: str | None = IdField
    agent_id: str | None = IdField
    run_id: str | None = IdField
    app_id: str | None = IdField

    def ids(self) -> dict[str, str | None]:
        return {field: getattr(self, field) for field in IDENTITY_FIELDS}


class AddRequest(ScopeQuery):
    """``POST /memories``: learn from messages (``infer``) or store them verbatim."""

    messages: str | list[MessageIn] | dict[str, Any]
    metadata: dict[str, Any] | None = None
    infer: bool = True
    timestamp: StrictStr | StrictInt | StrictFloat | None = Field(
        default=None,
        description="when the messages were said (ISO-8601 or Unix seconds; default: now); "
        "stored as created_at and used to resolve relative dates",
    )
    prompt: str | None = Field(
        default=None, description="accepted for Mem0 compatibility; the configured prompts apply"
    )
    categories: list[Category] | None = Field(
        default=None,
        max_length=MAX_CATEGORIES,
        description="labels of the memories stored (they pick memory.expiration.by_category)",
    )
    expiration_date: ExpirationDate | None = Field(default=None, description=EXPIRATION_HELP)
    ttl_s: TtlSeconds | None = Field(
        default=None, description="or: expire this many seconds after timestamp (default now)"
    )
    immutable: StrictBool = Field(
        default=False, description="extraction may never update or delete these memories"
    )


class SearchRequest(ScopeQuery):
    """``POST /search``: the scope's memories most relevant to ``query``."""

    query: str = Field(min_length=1, max_length=10_000)
    filters: dict[str, Any] | None = None
    top_k: int = Field(
        default=10,
        ge=1,
        le=1000,
        validation_alias=AliasChoices("top_k", "limit"),
        description="alias: limit",
    )
    threshold: float | None = Field(default=None, ge=-1, le=1)
    enable_graph: bool | None = Field(
        default=None,
        validation_alias=AliasChoices("enable_graph", "graph"),
        description="walk the graph memory too (default: when memory.graph.enabled); "
        "the answer then has ``relations``",
    )
    include_expired: StrictBool = Field(default=False, description="also expired memories")


class ListQuery(ScopeQuery):
    """``GET /memories`` query parameters."""

    top_k: int = Field(
        default=100,
        ge=1,
        le=10_000,
        validation_alias=AliasChoices("top_k", "limit"),
        description="alias: limit",
    )
    cursor: str | None = Field(default=None, max_length=512)
    include_expired: bool = Field(default=False, description="also expired memories")


class ListRequest(ListQuery):
    """``POST /memories/list``: like ``GET /memories`` with Mem0 filters in the body."""

    filters: dict[str, Any] | None = None


class UpdateRequest(_Request):
    """``PUT /memories/{id}``: new text, metadata merged into the old, when it expires
    (``expiration_date: null`` never), whether it is immutable; at least one of them."""

    text: str | None = Field(
        default=None,
        min_length=1,
        max_length=10_000,
        validation_alias=AliasChoices("text", "memory", "data"),
    )
    metadata: dict[str, Any] | None = None
    expiration_date: ExpirationDate | None = Field(
        default=None, description=EXPIRATION_HELP + "; null: never expires"
    )
    ttl_s: TtlSeconds | None = Field(default=None, description="or: expire in this many seconds")
    immutable: StrictBool | None = Field(
        default=None, description="a new text for an immutable memory needs immutable: false"
    )

    @property
    def clears_expiration(self) -> bool:
        return "expiration_date" in self.model_fields_set and self.expiration_date is None


class FeedbackRequest(_Request):
    """``POST /memories/{id}/feedback`` (``POST /feedback`` names the memory in the body, as
    Mem0's platform): null feedback takes it back."""

    feedback: Literal["POSITIVE", "NEGATIVE", "VERY_NEGATIVE"] | None = Field(
        default=None, description="negative lowers it in search; very negative hides it"
    )
    feedback_reason: str | None = Field(default=None, max_length=MAX_FEEDBACK_REASON_CHARS)

    @field_validator("feedback", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class MemoryFeedbackRequest(FeedbackRequest):
    memory_id: str = Field(pattern=ID_REGEX)


class ImportRecord(BaseModel):
    """One line of an export/import JSONL file (an exported item; unknown keys ignored)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(pattern=ID_REGEX)
    memory: str = Field(min_length=1, max_length=10_000)
    user_id: str | None = IdField
    agent_id: str | None = IdField
    run_id: str | None = IdField
    app_id: str | None = IdField
    metadata: dict[str, Any] = Field(default_factory=dict)
    categories: list[str] = Field(default_factory=list)
    created_at: str | None = None
    updated_at: str | None = None
    expires_at: str | None = None
    immutable: StrictBool = False
    feedback: Literal["POSITIVE", "NEGATIVE", "VERY_NEGATIVE"] | None = None
    feedback_reason: str | None = Field(default=None, max_length=MAX_FEEDBACK_REASON_CHARS)

    def checked(self) -> dict[str, Any]:
        """The record for ``AsyncMemory.import_memories``; raises ValueError when unusable."""
        if not self.memory.strip():
            raise ValueError("memory is empty")
        try:
            check_metadata(self.metadata)
        except InvalidInput as exc:
            raise ValueError(str(exc)) from exc
        record = self.model_dump()
        for field in ("created_at", "updated_at", "expires_at"):
            if record[field] is not None:
                record[field] = normalize_timestamp(record[field])
        return record


class RelationRecord(BaseModel):
    """A graph relation line of an export/import file (``"type": "relation"``)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["relation"]
    id: str = Field(pattern=ID_REGEX)
    source: str = Field(min_length=1, max_length=200)
    relation: str = Field(min_length=1, max_length=200)
    target: str = Field(min_length=1, max_length=200)
    source_type: str = Field(default="thing", max_length=60)
    target_type: str = Field(default="thing", max_length=60)
    memory_ids: list[str] = Field(default_factory=list, max_length=1000)
    valid_from: str
    invalid_at: str | None = None
    created_at: str | None = None
    user_id: str | None = IdField
    agent_id: str | None = IdField
    run_id: str | None = IdField
    app_id: str | None = IdField

    def checked(self) -> dict[str, Any]:
        """The record for ``GraphMemory.import_records``, names and relation normalised the
        way learned ones are; raises ValueError when unusable."""
        source, target = entity_name(self.source), entity_name(self.target)
        relation = relation_name(self.relation)
        if source is None or target is None or relation is None:
            raise ValueError("a relation needs a source, a relation and a target")
        if any(not re.fullmatch(ID_PATTERN.pattern, m) for m in self.memory_ids):
            raise ValueError("memory_ids must be memory ids")
        record = self.model_dump()
        record.update(source=source, target=target, relation=relation)
        record["source_type"] = relation_name(self.source_type) or "thing"
        record["target_type"] = relation_name(self.target_type) or "thing"
        for field in ("valid_from", "invalid_at", "created_at"):
            if record[field] is not None:
                record[field] = normalize_timestamp(record[field])
        return record


# ---- responses (documentation and clients; handlers return plain dicts) ----------------


class MemoryItemModel(BaseModel):
    id: str
    memory: str
    hash: str
    metadata: dict[str, Any]
    categories: list[str] = Field(default_factory=list)
    score: float | None = Field(default=None, description="search only")
    created_at: str
    updated_at: str
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    app_id: str | None = None
    expires_at: str | None = Field(default=None, description="the instant it expires from")
    expiration_date: str | None = Field(default=None, description="the last day it is visible")
    immutable: bool = False
    feedback: Literal["POSITIVE", "NEGATIVE", "VERY_NEGATIVE"] | None = None
    feedback_reason: str | None = None


class AddResultModel(BaseModel):
    id: str
    memory: str
    event: Literal["ADD", "UPDATE", "DELETE", "NONE"]
    previous_memory: str | None = None
    reason: str | None = Field(default=None, description="why a decision was not applied")


class FeedbackResponse(BaseModel):
    id: str = Field(description="the memory's id")
    feedback: Literal["POSITIVE", "NEGATIVE", "VERY_NEGATIVE"] | None
    feedback_reason: str | None


class AddResponse(BaseModel):
    results: list[AddResultModel]


class ListResponse(BaseModel):
    results: list[MemoryItemModel]
    next_cursor: str | None = Field(
        default=None, description="pass as ?cursor= for the next page; null on the last page"
    )


class SearchResponse(BaseModel):
    results: list[MemoryItemModel]


class HistoryItemModel(BaseModel):
    id: str
    memory_id: str
    old_memory: str | None
    new_memory: str | None
    event: Literal["ADD", "UPDATE", "DELETE", "NONE"]
    created_at: str
    updated_at: str
    is_deleted: bool
    source: str | None = Field(
        default=None, description='which way in made the change ("mcp"); null when unsaid'
    )


class MessageResponse(BaseModel):
    message: str
    deleted: int | None = None


class ImportLineError(BaseModel):
    line: int
    message: str


class ImportResponse(BaseModel):
    imported: int
    exists: int = Field(description="lines whose id is already stored (left unchanged)")
    duplicate: int = Field(description="lines whose exact text the scope already holds")
    errors: list[ImportLineError]


class CallerResponse(BaseModel):
    name: str
    users: list[str] = Field(description='users this key may act for ("*": any)')
    admin: bool
    open_mode: bool


class ProfileQuery(_Request):
    """``GET /users/{user_id}/profile``."""

    refresh: bool = Field(default=False, description="rebuild the profile now")


class ProfileResponse(BaseModel):
    """A user's profile (docs/api.md, "User profiles")."""

    user_id: str
    profile: str
    memories: int = Field(description="how many memories it was built from")
    created_at: str
    updated_at: str


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def validation_message(exc: ValidationError) -> str:
    """One readable line: ``field: problem; field: problem``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


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
