"""The LanceDB tables' schemas: memories (one row per memory, its vector and full-text column)
and their history (one row per change), how a stored row reads back, and its packed record."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from .bm25 import ANALYSER_VERSION, tokenize
from .records import SEARCH_TEXT
from .storage import ScopeRows

MEMORIES = "memories"
HISTORY = "memory_history"
# The whole row in one binary value, so a scope loads in one column read (``pack_record``),
# and the row's revision, which every update of the row checks and moves on.
RECORD = "record"
REVISION = "revision"


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
            pa.field(RECORD, pa.binary()),
            pa.field(REVISION, pa.int64()),
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

ROW_COLUMNS = [
    f.name for f in memories_schema(1) if f.name not in ("vector", SEARCH_TEXT, RECORD, REVISION)
]
_PACKED_COLUMNS = (*ROW_COLUMNS, SEARCH_TEXT)
_ROW_KEYS = frozenset(ROW_COLUMNS)
RECORD_FORMAT = 1  # the first byte of every record
# The full-text input's index terms, packed too (one string, ``TERM_SEPARATOR`` between
# them: split in C, checked with one isinstance): unpacking 1,000 records took 12.5 ms with
# their terms, 20.5 analysing their texts (the analyser alone 7.6). Kept with the analyser
# version that made them (``bm25.ANALYSER_VERSION``); a record of another version, or of
# none, is analysed at load.
_TERMS = "terms"
_ANALYSER = "analyser"
# Never in a term (tests/test_row_records.py checks every code point; a space or comma can be:
# U+FDFA folds to four words), and JSON keeps it as one byte (a control character: six).
TERM_SEPARATOR = "|"


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
    """A new row as the memories table stores it: its first revision, with its record."""
    encoded = dict(row)
    if not encoded.get(SEARCH_TEXT):
        encoded[SEARCH_TEXT] = row["memory"]
    encoded["metadata"] = encode_metadata(row.get("metadata"))
    encoded["vector"] = np.asarray(row["vector"], dtype=np.float32)
    encoded[RECORD] = pack_record(encoded)
    encoded[REVISION] = 0
    return encoded


def pack_record(stored: Mapping[str, Any]) -> bytes:
    """A stored row (columns as the table holds them, its vector) as one value: the format
    byte, the vector's little-endian float32s, then the other columns and the full-text
    input's index terms as JSON."""
    vector = np.asarray(stored["vector"], dtype="<f4").reshape(-1)
    fields: dict[str, Any] = {name: stored.get(name) for name in _PACKED_COLUMNS}
    fields[_TERMS] = TERM_SEPARATOR.join(tokenize(fields[SEARCH_TEXT] or ""))
    fields[_ANALYSER] = ANALYSER_VERSION
    return bytes((RECORD_FORMAT,)) + vector.tobytes() + orjson.dumps(fields)


def unpack_records(records: Sequence[bytes], dimension: int) -> ScopeRows:
    """``pack_record``'s values back as rows (as ``decode_row`` reads them), one vector
    matrix, their full-text input and its terms; a record of another format or size is
    refused."""
    width = 4 * dimension
    vectors = np.empty((len(records), dimension), dtype=np.float32)
    rows: list[dict[str, Any]] = []
    texts: list[str] = []
    analysed: list[list[str]] = []
    for i, record in enumerate(records):
        if len(record) <= width or record[0] != RECORD_FORMAT:
            raise ValueError(f"not a {dimension}-dim memory record of format {RECORD_FORMAT}")
        vectors[i] = np.frombuffer(record, dtype="<f4", count=dimension, offset=1)
        fields = orjson.loads(memoryview(record)[1 + width :])
        text = fields.pop(SEARCH_TEXT, None) or ""
        terms = fields.pop(_TERMS, None)
        if fields.pop(_ANALYSER, None) == ANALYSER_VERSION and isinstance(terms, str):
            analysed.append(terms.split(TERM_SEPARATOR) if terms else [])
        else:
            analysed.append(tokenize(text))
        texts.append(text)
        rows.append(_decoded_in_place(fields) if fields.keys() == _ROW_KEYS else decode_row(fields))
    return ScopeRows(rows, vectors, texts, analysed)


def _decoded_in_place(fields: dict[str, Any]) -> dict[str, Any]:
    """``decode_row`` of a record's fields that hold exactly ``ROW_COLUMNS`` (every record of
    this format does), reusing their dict instead of building another."""
    raw = fields["metadata"]
    fields["metadata"] = orjson.loads(raw) if raw else {}
    fields["categories"] = fields["categories"] or []
    fields["immutable"] = bool(fields["immutable"])
    return fields


__all__ = [
    "HISTORY",
    "HISTORY_SCHEMA",
    "LIFECYCLE_FIELDS",
    "MEMORIES",
    "RECORD",
    "REVISION",
    "ROW_COLUMNS",
    "TERM_SEPARATOR",
    "decode_row",
    "encode_metadata",
    "encode_row",
    "memories_schema",
    "pack_record",
    "unpack_records",
]
