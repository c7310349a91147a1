"""LanceDB storage for memories and their history, through the async API only.

Per-user search is an exact (flat) vector search with a SQL prefilter served by a BTREE index
on ``user_id``: an ANN index would drop rows under such a selective filter. Reads and updates
by id use a BTREE index on ``id``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa

from .config import MemoryLimits
from .errors import StoreError
from .filters import CompiledFilter, compile_selection, ids_sql, sql_literal
from .maintenance_lock import MaintenanceLock, maintenance_turn
from .records import SEARCH_TEXT, expiry_history
from .storage import Row, RowCheck, ScopeRows, Selection, TextHit
from .store_layout import cluster_users
from .store_rows import (
    backfill_for,
    every_row_has_a_record,
    scan_scope,
    text_hits,
    update_row,
)
from .store_schema import (
    HISTORY,
    HISTORY_SCHEMA,
    MEMORIES,
    ROW_COLUMNS,
    decode_row,
    encode_row,
    memories_schema,
)
from .store_tables import consistency_interval, open_tables, query_arrow, query_rows
from .table_version import KnownVersion
from .timestamps import now_stamp
from .types import HistoryItem

log = logging.getLogger("memory_core.store")

SCAN_LIMIT = 1_000_000  # LanceDB queries default to 10 rows; "all rows of a scope" needs a cap


class LanceStore:
    """The memories and history tables of one LanceDB database (local path or ``s3://``);
    implements ``memory_core.storage.Store``, compiling each ``Selection`` to SQL itself."""

    def __init__(
        self,
        uri: str,
        dimension: int,
        *,
        storage_options: Mapping[str, str] | None = None,
        read_consistency_interval_s: float | None = None,
        optimize_every: int = 100,
        cleanup_retention_s: float = 3600.0,
        limits: MemoryLimits | None = None,
        maintenance_lock: MaintenanceLock | None = None,
        maintenance_ttl_s: float = 600.0,
        purge_expired: bool = True,
        cluster_budget_s: float = 2.0,
    ) -> None:
        self.uri = uri
        self._cluster_budget_s = cluster_budget_s
        self._purge_expired = purge_expired
        # Told the rows each purge of expired memories deleted; it writes their history.
        self.on_purged: Callable[[Sequence[Row]], Awaitable[None]] | None = None
        self._lock = maintenance_lock
        self._lock_ttl_s = maintenance_ttl_s
        # optimize() outcomes since start ("ran", "skipped": another replica held the lock,
        # "failed"): the proxy's store maintenance metric.
        self.maintenance_runs: dict[str, int] = {"ran": 0, "skipped": 0, "failed": 0}
        self._limits = limits or MemoryLimits()
        self.dimension = dimension
        self._storage_options = dict(storage_options or {})
        self._consistency = consistency_interval(read_consistency_interval_s)
        self._optimize_every = optimize_every
        self._retention = timedelta(seconds=cleanup_retention_s)
        self._writes_since_optimize = 0
        self._maintenance: asyncio.Task[None] | None = None
        self._backfilled = False  # every row has its record (``store_rows.backfill_records``)
        self._version = KnownVersion(self._read_version, keep=self._consistency is None)
        self._db: Any = None
        self._memories: Any = None
        self._history: Any = None

    async def open(self) -> None:
        """Connect, create the tables and indexes if needed, and check the vector dimension."""
        try:
            self._db = await lancedb.connect_async(
                self.uri,
                storage_options=self._storage_options or None,
                read_consistency_interval=self._consistency,
            )
        except (OSError, RuntimeError, ValueError) as exc:
            raise StoreError(f"cannot open LanceDB at {self.uri}: {exc}") from exc
        self._version.may_change()
        try:
            self._memories, self._history = await open_tables(self._db, self.uri, self.dimension)
        except BaseException:
            # A failed open must not leave the store looking open (is_open) to later calls.
            self._db = None
            raise
        self._backfilled = await every_row_has_a_record(self._memories)
        if not self._backfilled:  # an older store: its rows get their records in the background
            self._maintenance = asyncio.get_running_loop().create_task(self.optimize())

    @property
    def is_open(self) -> bool:
        return self._memories is not None

    def _table(self) -> Any:
        if self._memories is None:
            raise StoreError("store is not open")
        return self._memories

    # ---- reads -------------------------------------------------------------------------

    def _compiled(self, selection: Selection) -> CompiledFilter:
        return compile_selection(selection, self._limits)

    def row_check(self, selection: Selection) -> RowCheck | None:
        return self._compiled(selection).predicate

    async def fetch(self, selection: Selection, *, limit: int | None = None) -> list[Row]:
        """Rows of ``selection`` (metadata conditions included), without vectors."""
        compiled = self._compiled(selection)
        query = self._table().query().select(ROW_COLUMNS).limit(limit or SCAN_LIMIT)
        if compiled.sql:
            query = query.where(compiled.sql)
        rows = [decode_row(r) for r in await query_rows(query)]
        return rows if compiled.predicate is None else [r for r in rows if compiled.matches(r)]

    async def count(self, selection: Selection | None = None) -> int:
        where = self._compiled(selection).sql if selection is not None else ""
        return int(await self._table().count_rows(where or None))

    async def vector_search(
        self, vector: np.ndarray[Any, Any], selection: Selection, *, limit: int
    ) -> list[tuple[Row, float]]:
        """Exact cosine search under ``selection``'s prefilter (its ``row_check`` is the
        caller's): (row, similarity) best first."""
        where = self._compiled(selection).sql
        query = (
            self._table()
            .query()
            .nearest_to(vector)
            .distance_type("cosine")
            .bypass_vector_index()
            .select([*ROW_COLUMNS, "_distance"])
            .limit(limit)
        )
        if where:
            query = query.where(where)
        rows = await query_rows(query)
        return [(decode_row(r), 1.0 - float(r["_distance"])) for r in rows]

    async def text_search(self, text: str, selection: Selection, *, limit: int) -> list[TextHit]:
        """BM25 full-text search under ``selection``'s prefilter: (row, its vector, BM25
        score) in BM25 order (the caller takes the cosine of each vector to its query)."""
        where = self._compiled(selection).sql
        query = (
            self._table()
            .query()
            .nearest_to_text(text, columns=SEARCH_TEXT)
            .select([*ROW_COLUMNS, "vector", "_score"])
            .limit(limit)
        )
        if where:
            query = query.where(where)
        return text_hits(await query_arrow(query))

    async def version(self) -> int:
        """The memories table's version (``table_version.KnownVersion``)."""
        return await self._version.get()

    async def _read_version(self) -> int:
        try:
            return int(await self._table().version())
        except (OSError, RuntimeError, ValueError) as exc:
            raise StoreError(f"LanceDB version check failed: {exc}") from exc

    async def scan(self, selection: Selection, *, limit: int) -> ScopeRows:
        """Up to ``limit`` rows of ``selection`` (SQL part only) with their vectors and
        full-text input, from their records (one column read): what the scope cache holds."""
        where = self._compiled(selection).sql
        return await scan_scope(self._table(), where, limit=limit, dimension=self.dimension)

    async def history(self, memory_id: str) -> list[HistoryItem]:
        query = self._history.query().where(ids_sql("memory_id", [memory_id])).limit(SCAN_LIMIT)
        rows = await query_rows(query)
        rows.sort(key=lambda r: (r["created_at"], r["id"]))
        return [
            HistoryItem(
                id=r["id"],
                memory_id=r["memory_id"],
                old_memory=r["old_memory"],
                new_memory=r["new_memory"],
                event=r["event"],
                created_at=r["created_at"],
                updated_at=r["updated_at"],
                is_deleted=bool(r["is_deleted"]),
                source=r.get("source"),
            )
            for r in rows
        ]

    async def memory_ids_with_history(self, memory_ids: Sequence[str]) -> set[str]:
        """The ids among ``memory_ids`` that have at least one history row."""
        if not memory_ids:
            return set()
        query = (
            self._history.query()
            .where(ids_sql("memory_id", list(memory_ids)))
            .select(["memory_id"])
            .limit(SCAN_LIMIT)
        )
        return {row["memory_id"] for row in await query_rows(query)}

    async def job_applied(self, job_id: str) -> bool:
        """True when a history row records that ``job_id`` was already applied."""
        where = f"job_id = {sql_literal(job_id)}"
        return int(await self._history.count_rows(where)) > 0

    # ---- writes ------------------------------------------------------------------------

    async def insert(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self._write(
                self._table().add(
                    pa.Table.from_pylist(
                        [encode_row(r) for r in rows], schema=memories_schema(self.dimension)
                    )
                )
            )

    async def update(self, memory_id: str, values: Mapping[str, Any]) -> None:
        """Set ``values`` on one memory, its record and revision with them (``store_rows``)."""
        await update_row(self._table(), memory_id, values, self._write)

    async def delete(self, selection: Selection) -> None:
        compiled = self._compiled(selection)
        if not compiled.sql or compiled.predicate is not None:
            raise StoreError("refusing to delete without a filter, or by metadata")
        where = compiled.sql
        await self._write(self._table().delete(where))

    async def add_history(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self._write(
                self._history.add(pa.Table.from_pylist(list(rows), schema=HISTORY_SCHEMA))
            )

    async def reset(self) -> None:
        """Drop both tables and create them empty."""
        await self._wait_maintenance()
        self._version.may_change()
        for name in (MEMORIES, HISTORY):
            if name in await self._db.table_names():
                await self._db.drop_table(name)
        self._memories, self._history = await open_tables(self._db, self.uri, self.dimension)
        self._version.may_change()

    async def _write(self, operation: Awaitable[Any]) -> Any:
        result = await self._uncounted(operation)
        self._writes_since_optimize += 1
        if self._writes_since_optimize >= self._optimize_every and (
            self._maintenance is None or self._maintenance.done()
        ):
            self._writes_since_optimize = 0
            self._maintenance = asyncio.get_running_loop().create_task(self.optimize())
        return result

    async def optimize(self) -> None:
        """Compact, fold new rows into the indexes, drop old versions, move scattered users'
        rows together (compacted in turn); with a maintenance lock, only while holding it."""
        async with maintenance_turn(self._lock, f"optimize:{self.uri}", self._lock_ttl_s) as no:
            if no is not None:
                self.maintenance_runs[no] += 1
                return
            log.info("store maintenance started")
            outcome = await self._maintain()
            log.info("store maintenance finished: %s", outcome)
            self.maintenance_runs[outcome] += 1

    async def _maintain(self) -> str:
        """One turn, each step best effort (data stays correct): "ran", or "failed" (logged)."""
        outcome = "ran"
        try:
            given = await self.backfill_records()
        except StoreError as exc:  # rows without a record still load
            log.warning("backfilling memory records failed on %s: %s", self.uri, exc)
            outcome = "failed"
        else:
            if given:
                log.info("gave %d memories of an older store their record", given)
        if self._purge_expired:
            try:
                purged = await self.purge_expired()
            except StoreError as exc:  # expired rows are never read
                log.warning("purging expired memories failed on %s: %s", self.uri, exc)
                outcome = "failed"
            else:
                if purged:
                    log.info("purged %d expired memories", purged)
        if not await self._compact(self._memories, self._history):
            outcome = "failed"
        try:  # after the compaction, which would count every recent commit as a run
            moved = await cluster_users(
                self._table(), self._uncounted, budget_s=self._cluster_budget_s
            )
        except StoreError as exc:  # scattered rows read the same, only slower
            log.warning("moving users' rows together failed on %s: %s", self.uri, exc)
            return "failed"
        # The moved rows are small fragments outside the indexes, which every query would scan
        # until the next turn (~0.25 ms per fragment at 1M rows): folded in now.
        return "failed" if moved and not await self._compact(self._memories) else outcome

    async def _compact(self, *tables: Any) -> bool:
        """Compact each table, index its new rows, drop old versions; False if one failed."""
        compacted = True
        for table in tables:
            self._version.may_change()
            try:
                await table.optimize(cleanup_older_than=self._retention)
            except (OSError, RuntimeError, ValueError) as exc:
                log.warning("LanceDB optimize failed on %s: %s", self.uri, exc)
                compacted = False
            finally:
                self._version.may_change()
        return compacted

    async def _uncounted(self, operation: Awaitable[Any]) -> Any:
        """One commit, not counted towards the next maintenance (maintenance's own)."""
        self._version.may_change()
        try:
            return await operation
        except (OSError, RuntimeError, ValueError) as exc:
            raise StoreError(f"LanceDB write failed: {exc}") from exc
        finally:
            self._version.may_change()

    async def backfill_records(self, *, budget_s: float = 60.0) -> int:
        """Records for the rows written before the record column, batch by batch for up to
        ``budget_s`` (maintenance runs it; a store opened with such rows starts a run)."""
        if self._backfilled:
            return 0
        given, self._backfilled = await backfill_for(self._table(), self._write, budget_s)
        return given

    async def purge_expired(self) -> int:
        """Delete the memories expired by now; how many. Each gets a DELETE history row whose
        source is ``expired``: written by ``on_purged`` when set (``AsyncMemory``: through the
        writer, so change observers and graph memory hear of it), else here. A row whose
        expiry moved meanwhile stays, without a row."""
        now = now_stamp()
        where = f"expires_at IS NOT NULL AND expires_at <= {sql_literal(now)}"
        query = self._table().query().where(where).select(ROW_COLUMNS).limit(SCAN_LIMIT)
        rows = [decode_row(r) for r in await query_rows(query)]
        if not rows:
            return 0
        await self._write(self._table().delete(where))
        left = await self.fetch(Selection.of_ids([r["id"] for r in rows]))
        kept = {r["id"] for r in left}
        gone = [r for r in rows if r["id"] not in kept]
        if gone and self.on_purged is not None:
            await self.on_purged(gone)
        elif gone:
            await self.add_history(expiry_history(gone, now))
        return len(gone)

    async def table_versions(self) -> dict[str, int]:
        """The current version of each table (the proxy's metrics)."""
        return {
            MEMORIES: int(await self._table().version()),
            HISTORY: int(await self._history.version()),
        }

    async def _wait_maintenance(self) -> None:
        if self._maintenance is not None and not self._maintenance.done():
            await self._maintenance

    async def close(self) -> None:
        await self._wait_maintenance()
        self._version.may_change()
        self._memories = None
        self._history = None
        self._db = None


__all__ = ["LanceStore", "decode_row"]
