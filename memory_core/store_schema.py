"""The LanceDB tables' schemas: memories (one row per memory, its vector and full-text column)
and their history (one row per change), and how a stored row reads back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from .records import SEARCH_TEXT

MEMORIES = "memories"
HISTORY = "memory_history"


def memories_schema(dimension: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("user_id", pa.string()),
            pa.field("agent_id", pa.string()),
            pa.field("run_id", pa.string()),
            pa.field("memory", pa.string(), nullable=False),
            pa.field("hash", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dimension)),
            pa.field("metadata", pa.string()),
            pa.field("categories", pa.list_(pa.string())),
            pa.field("created_at", pa.string(), nullable=False),
            pa.field("updated_at", pa.string(), nullable=False),
            # What the full-text index sees: the memory, after the conversation context it was
            # said in when ``add(context=...)`` gave one (the vector is made from the same text).
            pa.field(SEARCH_TEXT, pa.string()),
            # Columns added since are appended (``store_tables`` migrates older tables).
            pa.field("app_id", pa.string()),
            *LIFECYCLE_FIELDS,
        ]
    )


# Appended after the first release (``store_tables`` adds them to older tables as NULLs):
# when the memory expires, whether extraction may change it, and the feedback on it
# (``lifecycle.py``).
LIFECYCLE_FIELDS = (
    pa.field("expires_at", pa.string()),
    pa.field("immutable", pa.bool_()),
    pa.field("feedback", pa.string()),
    pa.field("feedback_reason", pa.string()),
)


HISTORY_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("memory_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string()),
        pa.field("agent_id", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("old_memory", pa.string()),
        pa.field("new_memory", pa.string()),
        pa.field("event", pa.string(), nullable=False),
        pa.field("job_id", pa.string()),
        pa.field("created_at", pa.string(), nullable=False),
        pa.field("updated_at", pa.string(), nullable=False),
        pa.field("is_deleted", pa.bool_(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("app_id", pa.string()),
    ]
)

ROW_COLUMNS = [f.name for f in memories_schema(1) if f.name not in ("vector", SEARCH_TEXT)]


def decode_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row as a plain dict with metadata parsed (vector dropped)."""
    item = {key: row.get(key) for key in ROW_COLUMNS}
    raw = row.get("metadata")
    item["metadata"] = orjson.loads(raw) if raw else {}
    item["categories"] = list(row.get("categories") or [])
    item["immutable"] = bool(row.get("immutable"))
    return item


def encode_metadata(metadata: Mapping[str, Any] | None) -> str | None:
    """JSON text, or NULL when empty. Not ``"{}"``: a column of one repeated tiny value packs
    ~1M rows per page, and fetching a search hit's row then decodes the whole page (+2-5 ms
    per search at 1M rows, measured); NULLs cost nothing. ``decode_row`` reads NULL as {}."""
    return orjson.dumps(metadata).decode() if metadata else None


def encode_row(row: Mapping[str, Any]) -> dict[str, Any]:
    encoded = dict(row)
    if not encoded.get(SEARCH_TEXT):
        encoded[SEARCH_TEXT] = row["memory"]
    encoded["metadata"] = encode_metadata(row.get("metadata"))
    encoded["vector"] = np.asarray(row["vector"], dtype=np.float32)
    return encoded


__all__ = [
    "HISTORY",
    "HISTORY_SCHEMA",
    "LIFECYCLE_FIELDS",
    "MEMORIES",
    "ROW_COLUMNS",
    "decode_row",
    "encode_metadata",
    "encode_row",
    "memories_schema",
]
