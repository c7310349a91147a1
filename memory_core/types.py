"""Records exchanged by the memory library (internal shapes and Mem0-compatible results)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from .errors import InvalidIdentity

ID_PATTERN = re.compile(r"[A-Za-z0-9._:@+\-]{1,128}")
ID_REGEX = f"^{ID_PATTERN.pattern}$"  # for validators that search (pydantic): match whole
IDENTITY_FIELDS = ("user_id", "agent_id", "run_id", "app_id")

MISSING_IDENTITY = "at least one of user_id, agent_id, run_id or app_id is required"

Event = Literal["ADD", "UPDATE", "DELETE", "NONE"]


def validate_id(value: str, field: str) -> str:
    """Return ``value`` if it is a well-formed id (1-128 chars of ``[A-Za-z0-9._:@+-]``)."""
    if not isinstance(value, str) or ID_PATTERN.fullmatch(value) is None:
        raise InvalidIdentity(
            f"{field} must be 1-128 characters of letters, digits and . _ : @ + -"
        )
    return value


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose memories an operation touches: any combination of user, agent, run and app
    (Mem0's entities). Every id set must match; an id not set does not narrow."""

    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    app_id: str | None = None

    def __post_init__(self) -> None:
        for field in IDENTITY_FIELDS:
            value = getattr(self, field)
            if value is not None:
                validate_id(value, field)

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Scope:
        """The scope named by the identity fields of ``values`` (a row, a payload, a body)."""
        return cls(**{field: values.get(field) or None for field in IDENTITY_FIELDS})

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, field) is None for field in IDENTITY_FIELDS)

    def require(self) -> Scope:
        """Return self, or raise when no id at all is set."""
        if self.is_empty:
            raise InvalidIdentity(MISSING_IDENTITY)
        return self

    def as_dict(self) -> dict[str, str | None]:
        return {field: getattr(self, field) for field in IDENTITY_FIELDS}


class MemoryItem(TypedDict, total=False):
    """A memory as returned by get/get_all/search (Mem0's item shape)."""

    id: str
    memory: str
    hash: str
    metadata: dict[str, Any]
    categories: list[str]
    score: float
    created_at: str
    updated_at: str
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    app_id: str | None
    expires_at: str | None  # the instant it expires from (``lifecycle.py``); None: never
    expiration_date: str | None  # Mem0's: the last UTC day it is visible
    immutable: bool
    feedback: str | None  # POSITIVE / NEGATIVE / VERY_NEGATIVE
    feedback_reason: str | None


class SearchResult(TypedDict, total=False):
    """``search()``'s answer: ``results``, and with graph memory the ``relations`` walked
    (Mem0's ``{"source", "relationship", "destination"}``, plus ``id``)."""

    results: list[MemoryItem]
    relations: list[dict[str, Any]]


class AddResult(TypedDict, total=False):
    """One entry of ``add()``'s results."""

    id: str
    memory: str
    event: Event
    previous_memory: str
    reason: str  # why a decision was not applied as asked (e.g. NONE for an immutable memory)


class HistoryItem(TypedDict):
    """One change to a memory, append-only."""

    id: str
    memory_id: str
    old_memory: str | None
    new_memory: str | None
    event: Event
    created_at: str
    updated_at: str
    is_deleted: bool
    source: str | None  # which way in made the change ("mcp"...); None when unsaid


Message = dict[str, Any]
