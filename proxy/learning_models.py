"""Pydantic models of the learning-log routes (``learning_api.py``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from memory_core.types import ID_REGEX

MAX_PAGE = 200


class LearningQuery(BaseModel):
    """``GET /v1/learning`` query parameters."""

    model_config = ConfigDict(extra="ignore")

    user_id: str | None = Field(
        default=None,
        pattern=ID_REGEX,
        description="whose jobs (a key bound to one user: its user; admin keys: all if absent)",
    )
    limit: int = Field(default=20, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(
        default=None, max_length=64, description="next_cursor of the previous page"
    )


class LearningDecision(BaseModel):
    event: str = Field(description="ADD, UPDATE, DELETE or NONE")
    memory_id: str | None = Field(description="the memory it touched (null: a fact not stored)")
    text: str | None = Field(description="the text stored, or the fact it was about")
    old_memory: str | None = Field(description="the memory's text before")
    reason: str | None = Field(description="why, when the model (or memproxy) said so")
    origin: str = Field(description="update_answer, extraction, known or near_duplicate")


class LearningEntry(BaseModel):
    id: str = Field(description="the job id")
    user_id: str
    kind: str = Field(description="learn, or another job kind of the queue (export...)")
    status: str = Field(description="applied, nothing_learned or dead")
    attempts: int
    enqueued_at: str
    finished_at: str
    error: str | None = Field(
        description="a dead job's last error, or the error of a retried job's last failed attempt"
    )
    facts: list[str] = Field(description="the facts extracted (cut to 300 characters)")
    decisions: list[LearningDecision]
    result: dict[str, Any] | None = Field(
        description="the job's other counts (docs/learning.md), null for a dead job"
    )


class LearningPage(BaseModel):
    results: list[LearningEntry]
    next_cursor: str | None


class RetryResponse(BaseModel):
    id: str
    status: str = Field(description="pending: queued again, its attempts start anew")


__all__ = ["MAX_PAGE", "LearningEntry", "LearningPage", "LearningQuery", "RetryResponse"]
