"""The per-process cache of hot scopes: a scope's rows, vectors (one float32 matrix) and BM25
postings held in memory, so a search runs in process (a matrix-vector product and a few
postings) instead of two or three LanceDB queries. LanceDB stays the source of truth.

Correctness, in order of how it is kept:
- An entry is one scope's rows as a scan of that scope returned them: it can hold no other
  scope's memories, and a search only uses the entry of exactly its own scope.
- A write through this process (``CachingStore``) drops every entry it can touch before it
  returns, and a load that overlapped a write is not kept (the searches waiting for it use
  it: they overlapped that write too). A scope's first search waits for its load, one read
  of the scope's packed records (``store_rows``), while its query is embedded.
- Every search first reads the table version (LanceDB re-reads it per
  ``read_consistency_interval_s``). The cache knows which versions its own writes made; any
  other change (another process's write, a compaction) empties it.
- Bounded: least recently used entries go first past ``max_bytes``; a scope of more than
  ``max_scope_rows`` memories is never cached (its searches go to LanceDB); at most
  ``max_loads`` scans run at once (a scope asked for while they do is searched in the store
  and loads after it answered: a burst of many new users must not turn into as many scans
  competing for the cores; a load is cheaper than the store's queries, so the default lets a
  few run).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import numpy as np

from .config import MemoryConfig, ScopeCacheConfig
from .errors import StoreError
from .scope_index import ScopeIndex
from .storage import Row, RowCheck, ScopeRows, Selection, Store, TextHit
from .types import HistoryItem, Scope

log = logging.getLogger("memory_core.scope_cache")


class ScanningStore(Store, Protocol):
    """A store that can hand over a whole scope and tell its table version (``LanceStore``)."""

    async def version(self) -> int: ...

    async def scan(self, selection: Selection, *, limit: int) -> ScopeRows: ...


_TOO_LARGE = object()  # marker entry: the scope has more rows than the cache takes


class ScopeCache:
    """Least-recently-used scope entries, bounded by bytes, kept true to ``source``."""

    def __init__(self, source: ScanningStore, config: ScopeCacheConfig) -> None:
        self._source = source
        self._max_bytes = config.max_bytes
        self._max_rows = config.max_scope_rows
        self._entries: OrderedDict[Scope, ScopeIndex | object] = OrderedDict()
        self._bytes = 0
        self._version: int | None = None  # the table version every entry is true at
        self._generation = 0  # bumped when a write starts and ends: loads across one are dropped
        self._writing = 0
        self._write_lock = asyncio.Lock()
        self._loading: dict[
            Scope, tuple[asyncio.Task[ScopeIndex | None], tuple[int | None, int]]
        ] = {}
        self._max_loads = config.max_loads
        self._scanning: set[asyncio.Task[ScopeIndex | None]] = set()  # loads not yet done
        self.hits = 0
        self.misses = 0
        self.loads_deferred = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, scope: Scope) -> ScopeIndex | None:
        """The scope's index, cached or loaded now (the caller waits for one read of the
        scope's records); None for a scope too large to cache, while a write through this
        process is under way, or while ``max_loads`` other loads run (the caller searches the
        store, and loads the scope after it answered: ``load``)."""
        version = await self._source.version()
        if version != self._version:
            self.clear()
            self._version = version
        entry = self._entries.get(scope)
        if entry is not None:
            self._entries.move_to_end(scope)
            self.hits += 1
            return entry if isinstance(entry, ScopeIndex) else None
        self.misses += 1
        loading = self.load(scope)
        if loading is None:
            return None
        try:
            # Shielded: a search given up (a client gone) does not cancel a load others wait on.
            return await asyncio.shield(loading)
        except StoreError:  # ``_loaded`` logged it; this search goes to the store instead
            return None

    def load(self, scope: Scope) -> asyncio.Task[ScopeIndex | None] | None:
        """The load of ``scope`` for the current table version: the one under way, or a new
        one; None when it is cached, a write is under way or ``max_loads`` loads are (then a
        later search asks again)."""
        if scope in self._entries or self._writing:
            return None
        stamp = (self._version, self._generation)
        loading = self._loading.get(scope)
        if loading is not None and loading[1] == stamp:
            return loading[0]
        if len(self._scanning) >= self._max_loads:
            self.loads_deferred += 1
            return None
        task = asyncio.get_running_loop().create_task(self._load(scope, stamp))
        self._loading[scope] = (task, stamp)
        self._scanning.add(task)
        task.add_done_callback(lambda done: self._loaded(scope, done))
        return task

    async def loads(self) -> None:
        """Wait for the loads under way (tests and benchmarks)."""
        while self._loading:
            await asyncio.gather(*(t for t, _ in self._loading.values()), return_exceptions=True)

    def _loaded(self, scope: Scope, task: asyncio.Task[ScopeIndex | None]) -> None:
        self._scanning.discard(task)
        loading = self._loading.get(scope)
        if loading is not None and loading[0] is task:
            del self._loading[scope]
        if not task.cancelled() and task.exception() is not None:
            # A failed load only means the next searches go to the store, as without a cache.
            log.warning("loading a scope into the cache failed: %r", task.exception())

    async def _load(self, scope: Scope, stamp: tuple[int | None, int]) -> ScopeIndex | None:
        scanned = await self._source.scan(Selection(scope), limit=self._max_rows + 1)
        index = None
        if len(scanned.rows) <= self._max_rows:
            # Off the event loop: postings of a large scope take a while to build.
            index = await asyncio.to_thread(ScopeIndex.build, scanned)
        # Kept only if nothing was written, by anyone, since the scan started; either way
        # the searches waiting for it use it (they overlapped that write).
        if not self._writing and stamp == (self._version, self._generation):
            self._put(scope, index)
        return index

    def _put(self, scope: Scope, index: ScopeIndex | None) -> None:
        self._drop(scope)
        size = index.nbytes if index is not None else 0
        if size > self._max_bytes:
            return
        self._entries[scope] = index if index is not None else _TOO_LARGE
        self._bytes += size
        while self._bytes > self._max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def _drop(self, scope: Scope) -> None:
        entry = self._entries.pop(scope, None)
        if isinstance(entry, ScopeIndex):
            self._bytes -= entry.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _drop_where(self, touched: Callable[[Scope, ScopeIndex | None], bool]) -> None:
        for scope, entry in list(self._entries.items()):
            if touched(scope, entry if isinstance(entry, ScopeIndex) else None):
                self._drop(scope)

    @asynccontextmanager
    async def writing(
        self, touched: Callable[[Scope, ScopeIndex | None], bool] | None
    ) -> AsyncIterator[None]:
        """Around one write to the memories table: entries ``touched`` selects (all when
        None) are dropped before the write returns, whatever its outcome."""
        async with self._write_lock:
            self._writing += 1
            self._generation += 1
            before: int | None = None
            try:
                before = await self._source.version()
                yield
            finally:
                after: int | None
                try:
                    after = await self._source.version()
                except StoreError:
                    after = None
                self._writing -= 1
                self._generation += 1
                if touched is None:
                    self.clear()
                else:
                    self._drop_where(touched)
                ours_only = (
                    after is not None
                    and before is not None
                    and before == self._version
                    and after - before in (0, 1)
                )
                if not ours_only:  # someone else wrote too: nothing cached can be trusted
                    self.clear()
                self._version = after


def _row_in(scope: Scope, row: Mapping[str, Any]) -> bool:
    """True when ``row`` belongs to ``scope`` (every id the scope sets, equal)."""
    return all(value is None or row.get(f) == value for f, value in scope.as_dict().items())


class CachingStore:
    """A ``Store`` that passes everything to ``inner`` and keeps a ``ScopeCache`` true to
    the writes made through it; ``scope_index`` is the searcher's way in."""

    def __init__(self, inner: ScanningStore, config: ScopeCacheConfig) -> None:
        self.inner = inner
        self.cache = ScopeCache(inner, config)

    def __getattr__(self, name: str) -> Any:
        # What the store offers beyond the protocol (``optimize``, ``uri``...) for its callers.
        return getattr(self.inner, name)

    async def scope_index(self, scope: Scope) -> ScopeIndex | None:
        return await self.cache.get(scope)

    # ---- passed through ---------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.inner.is_open

    async def open(self) -> None:
        await self.inner.open()
        self.cache.clear()

    async def close(self) -> None:
        self.cache.clear()
        await self.inner.close()

    def row_check(self, selection: Selection) -> RowCheck | None:
        return self.inner.row_check(selection)

    async def fetch(self, selection: Selection, *, limit: int | None = None) -> list[Row]:
        return await self.inner.fetch(selection, limit=limit)

    async def count(self, selection: Selection | None = None) -> int:
        return await self.inner.count(selection)

    async def vector_search(
        self, vector: np.ndarray[Any, Any], selection: Selection, *, limit: int
    ) -> list[tuple[Row, float]]:
        return await self.inner.vector_search(vector, selection, limit=limit)

    async def text_search(self, text: str, selection: Selection, *, limit: int) -> list[TextHit]:
        return await self.inner.text_search(text, selection, limit=limit)

    async def history(self, memory_id: str) -> list[HistoryItem]:
        return await self.inner.history(memory_id)

    async def memory_ids_with_history(self, memory_ids: Sequence[str]) -> set[str]:
        return await self.inner.memory_ids_with_history(memory_ids)

    async def job_applied(self, job_id: str) -> bool:
        return await self.inner.job_applied(job_id)

    async def add_history(self, rows: Sequence[Row]) -> None:
        await self.inner.add_history(rows)  # the history table: no cached entry reads it

    # ---- writes to the memories table ---------------------------------------------------------

    async def insert(self, rows: Sequence[Row]) -> None:
        def touched(scope: Scope, _entry: ScopeIndex | None) -> bool:
            return any(_row_in(scope, row) for row in rows)

        async with self.cache.writing(touched):
            await self.inner.insert(rows)

    async def update(self, memory_id: str, values: Mapping[str, Any]) -> None:
        def touched(_scope: Scope, entry: ScopeIndex | None) -> bool:
            # A scope too large to cache holds no rows here; any other entry either has the
            # row or never will (an update keeps the row's scope).
            return entry is not None and memory_id in entry.ids

        async with self.cache.writing(touched):
            await self.inner.update(memory_id, values)

    async def delete(self, selection: Selection) -> None:
        ids = selection.ids
        plain = (
            ids is not None
            and selection.scope.is_empty
            and not (selection.hashes or selection.filters or selection.window)
        )

        def touched(_scope: Scope, entry: ScopeIndex | None) -> bool:
            return entry is not None and any(i in entry.ids for i in ids or ())

        async with self.cache.writing(touched if plain else None):
            await self.inner.delete(selection)

    async def reset(self) -> None:
        async with self.cache.writing(None):
            await self.inner.reset()


def with_scope_cache(store: ScanningStore, config: MemoryConfig) -> Store:
    """``store`` behind a ``CachingStore`` when ``cache.enabled`` (and it has room)."""
    cache = config.cache
    if not cache.enabled or cache.max_bytes == 0:
        return store
    return CachingStore(store, cache)


__all__ = ["CachingStore", "ScanningStore", "ScopeCache", "ScopeIndex", "with_scope_cache"]
