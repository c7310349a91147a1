"""The row operations built on the memories table's packed record (``store_schema``): reading
a whole scope in one column read; updating one row so its record stays equal to its columns,
also when several processes update it at once (the update is applied only at the revision it
was computed from, else recomputed); giving rows of older stores their record; and a
full-text query's result as rows with their vectors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .bm25 import tokenize
from .errors import StoreError
from .filters import ids_sql
from .records import SEARCH_TEXT
from .storage import ScopeRows, TextHit
from .store_schema import (
    RECORD,
    REVISION,
    ROW_COLUMNS,
    decode_row,
    encode_metadata,
    pack_record,
    unpack_records,
)
from .store_tables import query_arrow

UPDATE_ATTEMPTS = 8  # another process changing the same row this many times in a row: refused
BACKFILL_BATCH = 2_000  # rows given their record per merge
_STORED_COLUMNS = [*ROW_COLUMNS, "vector", SEARCH_TEXT]


async def scan_scope(table: Any, where: str, *, limit: int, dimension: int) -> ScopeRows:
    """Up to ``limit`` rows under ``where`` with their vectors and full-text input, from their
    records; rows written before the record column are read column by column."""
    query = table.query().select([RECORD]).limit(limit)
    if where:
        query = query.where(where)
    records = (await query_arrow(query)).column(RECORD).to_pylist()
    packed = [r for r in records if r is not None]
    try:
        scanned = unpack_records(packed, dimension)
    except ValueError as exc:
        raise StoreError(f"a memory record does not read back: {exc}") from exc
    if len(packed) == len(records):
        return scanned
    older = await scan_columns(table, _and(where, f"{RECORD} IS NULL"), limit, dimension)
    vectors = np.vstack([scanned.vectors, older.vectors])
    return ScopeRows(
        scanned.rows + older.rows,
        vectors,
        scanned.texts + older.texts,
        scanned.terms + older.terms,
    )


async def scan_columns(table: Any, where: str, limit: int, dimension: int) -> ScopeRows:
    query = table.query().select(_STORED_COLUMNS).where(where).limit(limit)
    stored = await query_arrow(query)
    if stored.num_rows and stored.column("vector").null_count:
        stored = stored.filter(pc.is_valid(stored.column("vector")))
    flat = stored.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    vectors = flat.astype(np.float32, copy=False).reshape(stored.num_rows, dimension)
    texts = [t or "" for t in stored.column(SEARCH_TEXT).to_pylist()]
    rows = [decode_row(r) for r in stored.drop_columns(["vector", SEARCH_TEXT]).to_pylist()]
    return ScopeRows(rows, vectors, texts, [tokenize(text) for text in texts])


def text_hits(table: pa.Table) -> list[TextHit]:
    """A full-text query's result (``vector`` and ``_score`` among its columns) as (row, its
    vector, BM25 score), in its order; a row without a vector is left out."""
    if table.num_rows == 0:
        return []
    column = table.column("vector")
    if column.null_count:
        return [
            (decode_row(r), np.asarray(r["vector"], np.float32), float(r["_score"]))
            for r in table.to_pylist()
            if r["vector"] is not None
        ]
    flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    matrix = flat.astype(np.float32, copy=False).reshape(table.num_rows, -1)
    scores = table.column("_score").to_pylist()
    rows = table.drop_columns(["vector", "_score"]).to_pylist()
    return [
        (decode_row(r), matrix[i], float(score))
        for i, (r, score) in enumerate(zip(rows, scores, strict=True))
    ]


def updated_columns(stored: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The columns an update of the row ``stored`` (as the table holds it) with ``values``
    writes: those values encoded, the full-text input a new text brings, the new record and
    the next revision."""
    encoded = dict(values)
    if "memory" in encoded:  # a new text drops the old context from the full-text index
        encoded.setdefault(SEARCH_TEXT, encoded["memory"])
    if "metadata" in encoded:
        encoded["metadata"] = encode_metadata(encoded["metadata"])
    if "vector" in encoded:
        encoded["vector"] = np.asarray(encoded["vector"], dtype=np.float32).tolist()
    row = {**stored, **encoded}
    # A row without a vector (older data) has no record: loads read it column by column.
    encoded[RECORD] = pack_record(row) if row.get("vector") is not None else None
    encoded[REVISION] = (stored.get(REVISION) or 0) + 1
    return encoded


async def update_row(
    table: Any,
    memory_id: str,
    values: Mapping[str, Any],
    write: Callable[[Awaitable[Any]], Awaitable[Any]],
) -> None:
    """Set ``values`` on the row ``memory_id`` (none: nothing to do) through ``write``."""
    by_id = ids_sql("id", [memory_id])
    for _attempt in range(UPDATE_ATTEMPTS):
        query = table.query().where(by_id).select([*_STORED_COLUMNS, REVISION]).limit(1)
        found = (await query_arrow(query)).to_pylist()
        if not found:
            return
        stored = found[0]
        revision = stored.get(REVISION)
        at = f"{REVISION} = {int(revision)}" if revision is not None else f"{REVISION} IS NULL"
        result = await write(table.update(updated_columns(stored, values), where=_and(by_id, at)))
        if result.rows_updated:
            return
    raise StoreError(f"memory {memory_id} kept changing under this update; try again")


async def backfill_records(
    table: Any, write: Callable[[Awaitable[Any]], Awaitable[Any]], *, batch: int = BACKFILL_BATCH
) -> int:
    """Give up to ``batch`` rows written before the record column (no revision yet) their
    record, at revision 0; a row an update reached first keeps what that update wrote. How
    many such rows there were (0: none left)."""
    query = table.query().where(f"{REVISION} IS NULL").limit(batch)
    found = await query_arrow(query)
    if not found.num_rows:
        return 0
    stored = found.to_pylist()
    for row in stored:
        # A row without a vector gets a revision only: loads read it column by column.
        row[RECORD] = pack_record(row) if row["vector"] is not None else None
        row[REVISION] = 0
    # Whole rows: LanceDB's merge on an indexed key refuses a subset of the columns.
    source = pa.Table.from_pylist(stored, schema=found.schema)
    merge = table.merge_insert("id").when_matched_update_all(where=f"target.{REVISION} IS NULL")
    await write(merge.execute(source))
    return len(stored)


async def backfill_for(
    table: Any, write: Callable[[Awaitable[Any]], Awaitable[Any]], budget_s: float
) -> tuple[int, bool]:
    """``backfill_records`` batch after batch for up to ``budget_s``: how many rows were
    given their record, and whether none is left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    given = 0
    while loop.time() < deadline:
        batch = await backfill_records(table, write)
        if not batch:
            return given, True
        given += batch
    return given, False


async def every_row_has_a_record(table: Any) -> bool:
    """True when no row predates the record column (none without a revision)."""
    try:
        return not await table.count_rows(f"{REVISION} IS NULL")
    except (OSError, RuntimeError, ValueError) as exc:
        raise StoreError(f"LanceDB count failed: {exc}") from exc


def _and(where: str, condition: str) -> str:
    return f"({where}) AND {condition}" if where else condition


__all__ = [
    "BACKFILL_BATCH",
    "UPDATE_ATTEMPTS",
    "backfill_for",
    "backfill_records",
    "every_row_has_a_record",
    "scan_columns",
    "scan_scope",
    "update_row",
    "updated_columns",
]
