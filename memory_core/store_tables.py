"""Opening the LanceDB tables: created when missing, migrated (columns added since), indexed,
and checked against the embedder's dimension. Replicas opening one new store at once race:
a table another process is creating is listed before its first commit ("not found"), and
two processes creating one index conflict; both are re-read and retried."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import lancedb
import pyarrow as pa
from lancedb.index import FTS, BTree

from .errors import DimensionMismatch, StoreError
from .records import SEARCH_TEXT
from .store_schema import HISTORY, HISTORY_SCHEMA, MEMORIES, memories_schema

log = logging.getLogger("memory_core.store")

ATTEMPTS = 5
# Types a migrated column may have, as LanceDB's SQL names them.
_SQL_TYPES = {
    pa.string(): "STRING",
    pa.bool_(): "BOOLEAN",
    pa.float64(): "DOUBLE",
    pa.int32(): "INT",
    pa.int64(): "BIGINT",
    pa.binary(): "BINARY",
}
OPEN_ERRORS = (OSError, RuntimeError, ValueError)


async def open_tables(db: Any, uri: str, dimension: int) -> tuple[Any, Any]:
    """The memories and history tables of ``db``, ready for use."""
    try:
        memories = await _open_or_create(db, MEMORIES, memories_schema(dimension))
        history = await _open_or_create(db, HISTORY, HISTORY_SCHEMA)
    except OPEN_ERRORS as exc:
        raise StoreError(f"cannot open LanceDB at {uri}: {exc}") from exc
    await _check_dimension(memories, uri, dimension)
    await _ensure_indexes(memories, history)
    return memories, history


def consistency_interval(seconds: float | None) -> timedelta | None:
    """LanceDB's ``read_consistency_interval`` for a configured number of seconds."""
    return timedelta(seconds=seconds) if seconds is not None else None


async def open_side_table(
    uri: str,
    name: str,
    schema: pa.Schema,
    *,
    storage_options: Mapping[str, str] | None = None,
    read_consistency_interval_s: float | None = None,
) -> Any:
    """A table of the library's own next to the memories (exports, profiles): same store,
    created when missing (retried as the memories table when replicas race), columns added
    since appended."""
    try:
        db = await lancedb.connect_async(
            uri,
            storage_options=dict(storage_options or {}) or None,
            read_consistency_interval=consistency_interval(read_consistency_interval_s),
        )
        table = await _open_or_create(db, name, schema)
        await _add_missing_columns(table, schema, {})  # e.g. app_id on an older exports table
        return table
    except OPEN_ERRORS as exc:
        raise StoreError(f"cannot open the {name} table: {exc}") from exc


async def _open_or_create(db: Any, name: str, schema: pa.Schema) -> Any:
    for attempt in range(ATTEMPTS - 1):
        try:
            return await _open_or_create_once(db, name, schema)
        except (RuntimeError, ValueError) as exc:
            log.info("table %s raced another process's creation (retrying): %s", name, exc)
            await asyncio.sleep(0.2 * (attempt + 1))
    return await _open_or_create_once(db, name, schema)


async def _open_or_create_once(db: Any, name: str, schema: pa.Schema) -> Any:
    if name in await db.table_names():
        return await db.open_table(name)
    return await db.create_table(name, schema=schema, exist_ok=True)


async def query_arrow(query: Any) -> pa.Table:
    """A LanceDB query's result, its failures as ``StoreError``."""
    try:
        return await query.to_arrow()
    except (OSError, RuntimeError, ValueError) as exc:
        raise StoreError(f"LanceDB query failed: {exc}") from exc


async def query_rows(query: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (await query_arrow(query)).to_pylist()
    return rows


async def _check_dimension(memories: Any, uri: str, dimension: int) -> None:
    stored = (await memories.schema()).field("vector").type.list_size
    if stored != dimension:
        raise DimensionMismatch(
            f"the memories table at {uri} holds {stored}-dim vectors but the configured "
            f"embedder makes {dimension}-dim vectors; use the embedder the data was "
            "written with, or a new storage_uri"
        )


async def _ensure_indexes(memories: Any, history: Any) -> None:
    """Create what is missing; the loser of a race re-reads the latest version and finds it
    made."""
    for attempt in range(ATTEMPTS):
        try:
            await _create_missing_indexes(memories, history)
            return
        except RuntimeError as exc:
            if "conflict" not in str(exc) or attempt == ATTEMPTS - 1:
                raise
            log.info("index creation raced another process (retrying): %s", exc)
            await asyncio.sleep(0.2 * (attempt + 1))
            for table in (memories, history):
                await table.checkout_latest()


async def _add_missing_columns(table: Any, schema: pa.Schema, fills: dict[str, str]) -> None:
    """A table written before a column existed gets it, in schema order: NULL, or the SQL
    expression ``fills`` gives (``search_text`` starts as the memory itself)."""
    stored = set((await table.schema()).names)
    missing = {
        field.name: fills.get(field.name, f"CAST(NULL AS {_SQL_TYPES[field.type]})")
        for field in schema
        if field.name not in stored
    }
    if missing:
        await table.add_columns(missing)


async def _create_missing_indexes(memories: Any, history: Any) -> None:
    await _add_missing_columns(memories, memories_schema(1), {SEARCH_TEXT: "memory"})
    await _add_missing_columns(history, HISTORY_SCHEMA, {})
    existing = {tuple(idx.columns) for idx in await memories.list_indices()}
    if ("user_id",) not in existing:
        await memories.create_index("user_id", config=BTree())
    if ("id",) not in existing:  # updates read their row first (``store_rows.update_row``)
        await memories.create_index("id", config=BTree())
    if (SEARCH_TEXT,) not in existing:
        await memories.create_index(SEARCH_TEXT, config=FTS(with_position=False))
    history_existing = {tuple(idx.columns) for idx in await history.list_indices()}
    if ("memory_id",) not in history_existing:
        await history.create_index("memory_id", config=BTree())


__all__ = ["open_tables", "query_arrow", "query_rows"]
