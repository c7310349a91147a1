"""The shapes the library writes: a memory row, an update of one, a history row, and the item
callers get back. Pure functions: the one place each shape is built."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .lifecycle import EXPIRED_SOURCE, expiration_day
from .storage import Row
from .types import Event, MemoryItem, Scope

SEARCH_TEXT = "search_text"  # what is embedded and full-text indexed (text after its context)


def content_hash(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def with_context(text: str, context: str | None) -> str:
    """What is embedded and full-text indexed for a memory said after ``context``."""
    return f"{context}\n{text}" if context else text


def memory_row(
    scope: Scope,
    text: str,
    vector: np.ndarray[Any, Any],
    metadata: Mapping[str, Any],
    *,
    created_at: str,
    updated_at: str | None = None,
    memory_id: str | None = None,
    categories: Sequence[str] = (),
    context: str | None = None,
    expires_at: str | None = None,
    immutable: bool = False,
) -> Row:
    """A new memory; ``vector`` was made from ``with_context(text, context)``; ``expires_at``
    and ``immutable`` as ``lifecycle.py`` defines them."""
    return {
        "id": memory_id or str(uuid.uuid4()),
        **scope.as_dict(),
        "memory": text,
        "hash": content_hash(text),
        "vector": vector,
        "metadata": dict(metadata),
        "categories": list(categories),
        "created_at": created_at,
        "updated_at": updated_at or created_at,
        SEARCH_TEXT: with_context(text, context),
        "expires_at": expires_at,
        "immutable": immutable,
        "feedback": None,
        "feedback_reason": None,
    }


def updated_values(
    text: str,
    vector: np.ndarray[Any, Any],
    old_metadata: Mapping[str, Any],
    metadata: Mapping[str, Any],
    updated_at: str,
) -> dict[str, Any]:
    """The columns an UPDATE changes: text, hash, vector, metadata merged over the old."""
    return {
        "memory": text,
        "hash": content_hash(text),
        "vector": vector,
        "metadata": {**old_metadata, **metadata},
        "updated_at": updated_at,
    }


def history_row(
    memory_id: str,
    scope: Scope,
    old: str | None,
    new: str | None,
    event: Event,
    stamp: str,
    job_id: str | None,
    source: str | None = None,
) -> Row:
    """One append-only history entry; a DELETE marks the memory as deleted. ``source``: which
    way in made the change (e.g. ``"mcp"``), None when the caller did not say."""
    return {
        "id": str(uuid.uuid4()),
        "memory_id": memory_id,
        **scope.as_dict(),
        "old_memory": old,
        "new_memory": new,
        "event": event,
        "job_id": job_id,
        "created_at": stamp,
        "updated_at": stamp,
        "is_deleted": event == "DELETE",
        "source": source,
    }


def scope_of(row: Mapping[str, Any]) -> Scope:
    return Scope.of(row)


def to_item(row: Mapping[str, Any], score: float | None = None) -> MemoryItem:
    item = MemoryItem(
        id=row["id"],
        memory=row["memory"],
        hash=row["hash"],
        metadata=row.get("metadata") or {},
        categories=list(row.get("categories") or []),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        user_id=row.get("user_id"),
        agent_id=row.get("agent_id"),
        run_id=row.get("run_id"),
        app_id=row.get("app_id"),
        expires_at=row.get("expires_at"),
        expiration_date=expiration_day(row.get("expires_at")),
        immutable=bool(row.get("immutable")),
        feedback=row.get("feedback"),
        feedback_reason=row.get("feedback_reason"),
    )
    if score is not None:
        item["score"] = round(score, 6)
    return item


def expiry_history(rows: Sequence[Mapping[str, Any]], stamp: str) -> list[Row]:
    """The DELETE history rows of expired memories a purge removed (source ``expired``)."""
    return [
        history_row(r["id"], scope_of(r), r["memory"], None, "DELETE", stamp, None, EXPIRED_SOURCE)
        for r in rows
    ]


__all__ = [
    "SEARCH_TEXT",
    "content_hash",
    "expiry_history",
    "history_row",
    "memory_row",
    "scope_of",
    "to_item",
    "updated_values",
    "with_context",
]
