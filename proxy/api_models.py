"""Pydantic models of the memory REST API (Mem0 server shapes) and its OpenAPI document."""

from __future__ import annotations

import re
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

from memory_core.checks import check_metadata
from memory_core.config import MAX_TTL_S
from memory_core.errors import InvalidInput
from memory_core.graph_prompts import entity_name, relation_name
from memory_core.lifecycle import MAX_CATEGORIES, MAX_CATEGORY_CHARS, MAX_FEEDBACK_REASON_CHARS
from memory_core.timestamps import normalize_timestamp
from memory_core.types import ID_PATTERN, ID_REGEX, IDENTITY_FIELDS

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
