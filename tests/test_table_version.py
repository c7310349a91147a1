"""The memories table's version as the scope cache reads it (memory_core/table_version.py):
kept between the store's own commits when LanceDB does not look for other processes' commits,
read every time when it does, never kept from a read that overlapped a commit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from memory_core import AsyncMemory, MemoryConfig
from memory_core.scope_cache import CachingStore
from memory_core.storage import Selection
from memory_core.store import LanceStore
from memory_core.table_version import KnownVersion
from memory_core.types import Scope
from tests.conftest import HashEmbedder


class Versions:
    """A table whose version the test moves; counts the reads."""

    def __init__(self) -> None:
        self.version = 1
        self.reads = 0
        self.gate: asyncio.Event | None = None

    async def read(self) -> int:
        self.reads += 1
        seen = self.version
        if self.gate is not None:
            await self.gate.wait()
        return seen


@pytest.mark.parametrize(
    ("keep", "reads_for_three_gets"),
    [(True, 1), (False, 3)],  # no consistency interval: kept; with one: read every time
)
async def test_a_version_is_kept_only_without_a_consistency_interval(
    keep: bool, reads_for_three_gets: int
) -> None:
    table = Versions()
    known = KnownVersion(table.read, keep=keep)
    assert [await known.get() for _ in range(3)] == [1, 1, 1]
    assert table.reads == reads_for_three_gets
    table.version = 2
    known.may_change()
    assert await known.get() == 2


async def test_a_read_that_overlapped_a_commit_is_not_kept() -> None:
    table = Versions()
    known = KnownVersion(table.read, keep=True)
    table.gate = asyncio.Event()
    reading = asyncio.ensure_future(known.get())
    await asyncio.sleep(0)  # the read has seen version 1 and waits
    known.may_change()  # a commit starts ...
    table.version = 2
    known.may_change()  # ... and ends
    table.gate.set()
    assert await reading == 1  # what that read saw
    table.gate = None
    assert await known.get() == 2  # not kept: asked again
    assert table.reads == 2


async def test_the_store_reads_its_version_once_between_its_own_writes(tmp_path: Path) -> None:
    store = LanceStore(str(tmp_path / "db"), 384)
    await store.open()
    reads = 0
    read = store._read_version

    async def counted() -> int:
        nonlocal reads
        reads += 1
        return await read()

    store._version._read = counted
    first = await store.version()
    assert await store.version() == first and reads == 1
    memory = AsyncMemory(
        MemoryConfig(storage_uri=str(tmp_path / "db")), embedder=HashEmbedder(), store=store
    )
    await memory.add("User likes green tea", user_id="u", infer=False)  # memories + history
    after_add = await store.version()
    assert after_add > first and reads == 2
    [row] = await store.fetch(Selection(Scope("u")))
    await store.update(row["id"], {"feedback": "positive"})
    assert await store.version() == after_add + 1 and reads == 3
    await store.optimize()
    optimized = await store.version()
    assert optimized > after_add + 1 and reads == 4
    assert await store.version() == optimized and reads == 4
    await memory.close()


async def test_a_cached_scope_is_dropped_by_its_store_maintenance(tmp_path: Path) -> None:
    """Maintenance (compaction, purges of expired rows) commits without the caching store's
    write path: the versions it makes must still reach the cache."""
    memory = AsyncMemory(MemoryConfig(storage_uri=str(tmp_path / "db")), embedder=HashEmbedder())
    await memory.open()
    await memory.add("User likes green tea", user_id="u", infer=False)
    store = memory.store
    assert isinstance(store, CachingStore)
    assert len((await memory.search("tea", user_id="u"))["results"]) == 1
    assert len(store.cache) == 1 and store.cache.misses == 1
    assert len((await memory.search("tea", user_id="u"))["results"]) == 1
    assert store.cache.hits == 1
    inner: Any = store.inner
    await inner.optimize()  # compaction commits new versions: nothing cached can be trusted
    assert len((await memory.search("tea", user_id="u"))["results"]) == 1
    assert store.cache.misses == 2 and store.cache.hits == 1  # emptied, loaded again
    await memory.close()
