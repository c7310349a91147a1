"""Pydantic models of the structured-export routes (``exports_api.py``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from memory_core.types import ID_REGEX


class ExportRequest(BaseModel):
    """``POST /v1/exports``: whose memories, into which JSON Schema."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    user_id: str | None = Field(default=None, pattern=ID_REGEX)
    agent_id: str | None = Field(default=None, pattern=ID_REGEX)
    run_id: str | None = Field(default=None, pattern=ID_REGEX)
    app_id: str | None = Field(default=None, pattern=ID_REGEX)
    json_schema: dict[str, Any] = Field(
        alias="schema", description="a JSON Schema of an object, as a Pydantic model emits it"
    )
    instructions: str | None = Field(default=None, max_length=4000)
    filters: dict[str, Any] | None = None


class ExportCreated(BaseModel):
    id: str
    status: str


class ExportRecord(BaseModel):
    id: str
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    app_id: str | None = None
    status: str = Field(description="queued, running, retrying, completed or failed")
    json_schema: dict[str, Any] | None = Field(alias="schema")
    instructions: str | None
    filters: dict[str, Any] | None
    result: dict[str, Any] | None = Field(description="the validated object, once completed")
    error: str | None
    attempts: int
    created_at: str
    updated_at: str


__all__ = ["ExportCreated", "ExportRecord", "ExportRequest"]
