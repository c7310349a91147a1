"""The per-process scope cache (memory_core/scope_cache.py) and its in-process BM25
(memory_core/bm25.py): the same rankings as LanceDB's queries on a LoCoMo conversation, never
another scope's memories, never a changed or deleted memory once the write returned (in this
process, and with a second process writing to the same store), bounded by bytes."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pytest
from lancedb.index import FTS

from bench.locomo import load_sample, load_samples
from memory_core import AsyncMemory, MemoryConfig
from memory_core.bm25 import Bm25Index, has_content_words, tokenize
from memory_core.dates import created_bounds, created_within, named_days
from memory_core.errors import StoreError
from memory_core.scope_cache import CachingStore
from memory_core.scope_index import ScopeIndex, detached
from memory_core.storage import ScopeRows, Selection
from memory_core.store import LanceStore
from memory_core.types import Scope
from tests.conftest import HashEmbedder
from tests.queue_procs import ROOT, child_env

LOCOMO = Path(os.environ.get("LOCOMO_DATA", ROOT.parent / "shared" / "data" / "locomo-dev.json"))
_FTS_UNSAFE = re.compile(r"[^\w\s]+")


def config(path: Path, **cache: Any) -> MemoryConfig:
    return MemoryConfig(storage_uri=str(path), cache=cache)


# ---- the analyser and BM25 against LanceDB's index -------------------------------------------


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        (
            "Caroline went to the LGBTQ support group!",
            ["carolin", "went", "lgbtq", "support", "group"],
        ),
        ("universal universe", ["universal", "univers"]),  # Snowball 3, not Porter2
        ("I canned it", []),  # "canned" stems to "can", a stop word
        ("Café naïve", ["cafe", "naiv"]),
        ("x" * 40 + " ok", ["ok"]),  # 40+ byte tokens are dropped
        ("snake_case", ["snake", "case"]),
    ],
)
def test_tokenize(text: str, terms: list[str]) -> None:
    assert tokenize(text) == terms


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ok", False),
        ("thanks!", False),
        ("and?", False),
        ("Yes, please :)", False),
        ("🙂", False),
        ("what did I say about Lisbon?", True),
        ("tea", True),
        ("and her?", False),
    ],
)
def test_has_content_words(text: str, expected: bool) -> None:
    assert has_content_words(text) is expected


def _locomo_turns() -> tuple[list[str], list[str]]:
    sample = load_samples(LOCOMO)[0]
    texts = [f"{t.speaker}: {t.text}" for t in sample.turns]
    return texts, [qa.question for qa in sample.qa]


async def test_bm25_scores_equal_lancedb_on_a_locomo_conversation(tmp_path: Path) -> None:
    texts, questions = _locomo_turns()
    db = await lancedb.connect_async(str(tmp_path))
    table = await db.create_table("m", data=[{"id": i, "t": t} for i, t in enumerate(texts)])
    await table.create_index("t", config=FTS(with_position=False))
    index = Bm25Index.build([tokenize(t) for t in texts])
    for question in questions:
        query = _FTS_UNSAFE.sub(" ", question).strip()
        found = await (
            table.query().nearest_to_text(query, columns="t").select(["id", "_score"]).limit(40)
        ).to_arrow()
        theirs = dict(zip(found["id"].to_pylist(), found["_score"].to_pylist(), strict=True))
        ours = index.scores(query)
        for row, score in theirs.items():
            assert ours[row] == pytest.approx(score, rel=1e-4), (question, texts[row])
        # Past LanceDB's last hit, nothing of ours scores higher (ties fall either way).
        floor = min(theirs.values(), default=0.0)
        rest = np.delete(ours, list(theirs))
        assert rest.max(initial=0.0) <= floor * (1 + 1e-4), question


# ---- cached rankings against the store's queries ---------------------------------------------


@pytest.fixture(scope="module")
def locomo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One LoCoMo conversation as bench/locomo.py loads it, with the hash embedder."""
    path = tmp_path_factory.mktemp("locomo") / "db"
    sample = load_samples(LOCOMO)[0]

    async def build() -> None:
        memory = AsyncMemory(config(path, enabled=False), embedder=HashEmbedder())
        await memory.open()
        await load_sample(memory, sample, context_turns=1, caption=True)
        await memory.close()

    asyncio.run(build())
    return path


def assert_same_ranking(ours: list[Any], theirs: list[Any], *, tol: float = 1e-5) -> None:
    """The same scores in the same order, the same rows at each score; rows of equal score
    may come in either order, and those tied at the cut-off either way."""
    mine = [(row["id"], float(hit[-1])) for row, *hit in ours]
    other = [(row["id"], float(hit[-1])) for row, *hit in theirs]
    assert [s for _, s in mine] == pytest.approx([s for _, s in other], abs=tol, rel=tol)

    def ties(hits: list[tuple[str, float]]) -> list[set[str]]:
        groups: list[set[str]] = []
        last = None
        for memory_id, score in hits:
            if last is None or abs(score - last) > tol * max(1.0, abs(last)):
                groups.append(set())
            groups[-1].add(memory_id)
            last = score
        return groups[:-1]  # the group at the cut-off may hold other rows of that score

    assert ties(mine) == ties(other)


async def test_cached_rankings_equal_the_store_queries(locomo_store: Path) -> None:
    sample = load_samples(LOCOMO)[0]
    store = LanceStore(str(locomo_store), 384)
    await store.open()
    embedder = HashEmbedder()
    scope = Scope(sample.sample_id)
    index = ScopeIndex.build(await store.scan(Selection(scope), limit=10_000))
    assert len(index) == len(sample.turns)
    dated = 0
    for qa in sample.qa:
        vector = (await embedder.embed([qa.question], purpose="query"))[0]
        theirs = await store.vector_search(vector, Selection(scope), limit=40)
        ours = index.vector_search(vector, limit=40)
        assert_same_ranking(ours, theirs)
        # The same row, decoded the same way (the cache holds its containers compactly).
        assert detached(ours[0][0]) == detached(theirs[0][0])
        query = _FTS_UNSAFE.sub(" ", qa.question).strip()
        text_theirs = await store.text_search(query, Selection(scope), limit=40)
        text_ours = index.text_search(query, limit=40)
        assert_same_ranking(text_ours, text_theirs, tol=1e-4)
        days = named_days(qa.question)
        if days:
            dated += 1
            window = Selection(scope, window=created_within(days, slack_days=1))
            theirs = await store.vector_search(vector, window, limit=40)
            around = index.created_between(created_bounds(days, slack_days=1))
            assert_same_ranking(index.vector_search(vector, limit=40, where=around), theirs)
    assert dated >= 3
    await store.close()


async def test_cached_search_gives_the_uncached_results(locomo_store: Path) -> None:
    sample = load_samples(LOCOMO)[0]
    cached = AsyncMemory(config(locomo_store), embedder=HashEmbedder())
    plain = AsyncMemory(config(locomo_store, enabled=False), embedder=HashEmbedder())
    await cached.open()
    await plain.open()
    assert isinstance(cached.store, CachingStore) and isinstance(plain.store, LanceStore)
    # Cold: loaded while its first search waits.
    assert await cached.store.scope_index(Scope(sample.sample_id)) is not None
    assert cached.store.cache.misses == 1 and len(cached.store.cache) == 1
    same = same_set = 0
    hits = {"cached": 0.0, "plain": 0.0}
    for qa in sample.qa:
        results = {}
        for name, memory in (("cached", cached), ("plain", plain)):
            found = await memory.search(qa.question, user_id=sample.sample_id, limit=10)
            results[name] = [item["metadata"]["dia_id"] for item in found["results"]]
            if qa.evidence:
                hits[name] += len(set(results[name]) & set(qa.evidence)) / len(qa.evidence)
        same += results["cached"] == results["plain"]
        same_set += set(results["cached"]) == set(results["plain"])
    # LanceDB returns equal scores in no set order, and the hash embedder makes many equal
    # cosines: then neighbours swap (measured: 129 of 150 lists identical, 143 the same
    # memories), and recall is the same.
    assert same >= 0.8 * len(sample.qa) and same_set >= 0.9 * len(sample.qa)
    assert hits["cached"] == pytest.approx(hits["plain"], abs=0.01 * len(sample.qa))
    assert cached.store.cache.hits == len(sample.qa)
    await cached.close()
    await plain.close()


# ---- isolation and freshness ------------------------------------------------------------------


@pytest.fixture
async def memory(tmp_path: Path) -> AsyncIterator[AsyncMemory]:
    mem = AsyncMemory(config(tmp_path / "db"), embedder=HashEmbedder())
    await mem.open()
    yield mem
    await mem.close()


async def ids_found(memory: AsyncMemory, query: str, **scope: str) -> list[str]:
    found = await memory.search(query, limit=50, **scope)
    return [item["memory"] for item in found["results"]]


async def test_a_scope_sees_only_its_own_memories(memory: AsyncMemory) -> None:
    await memory.add(
        ["Alice likes green tea", "Alice lives in Lisbon"], user_id="alice", infer=False
    )
    await memory.add(["Bob likes green tea", "Bob lives in Porto"], user_id="bob", infer=False)
    await memory.add("Alice's agent note about tea", user_id="alice", agent_id="a1", infer=False)
    store = memory.store
    assert isinstance(store, CachingStore)

    async def found(query: str, **scope: str) -> list[str]:
        result = await ids_found(memory, query, **scope)
        await store.cache.loads()  # each scope loads for its first search
        return result

    for _ in range(2):  # cold (each scope loads for its first search), then from the cache
        assert set(await found("green tea", user_id="bob")) == {
            "Bob likes green tea",
            "Bob lives in Porto",
        }
        assert "Alice's agent note about tea" in await found("tea", user_id="alice")
        assert await found("tea", user_id="alice", agent_id="a1") == [
            "Alice's agent note about tea"
        ]
        assert await found("tea", user_id="carol") == []
    assert store.cache.hits >= 4


async def test_writes_are_seen_by_the_next_search(memory: AsyncMemory) -> None:
    added = await memory.add(
        ["User likes green tea", "User lives in Lisbon"], user_id="u", infer=False
    )
    tea = next(r["id"] for r in added["results"] if "tea" in r["memory"])
    await ids_found(memory, "tea", user_id="u")
    store = memory.store
    assert isinstance(store, CachingStore)
    await store.cache.loads()  # cached from here on
    await memory.update(tea, "User likes black coffee")
    found = await ids_found(memory, "coffee", user_id="u")
    assert "User likes black coffee" in found and "User likes green tea" not in found
    await memory.delete(tea)
    assert "User likes black coffee" not in await ids_found(memory, "coffee", user_id="u")
    await memory.add("User owns a bicycle", user_id="u", infer=False)
    assert "User owns a bicycle" in await ids_found(memory, "bicycle", user_id="u")
    await memory.delete_all(user_id="u")
    assert await ids_found(memory, "Lisbon", user_id="u") == []


class SlowScanStore(LanceStore):
    """Holds every scan until ``release`` is set: a load that overlaps a write."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def scan(self, selection: Selection, *, limit: int) -> ScopeRows:
        found = await super().scan(selection, limit=limit)
        self.started.set()
        await self.release.wait()
        return found


async def test_a_load_overlapping_a_write_is_not_kept(tmp_path: Path) -> None:
    inner = SlowScanStore(str(tmp_path / "db"), 384)
    store = CachingStore(inner, MemoryConfig().cache)
    memory = AsyncMemory(
        MemoryConfig(storage_uri=str(tmp_path / "db")), embedder=HashEmbedder(), store=store
    )
    await memory.open()
    added = await memory.add("User likes green tea", user_id="u", infer=False)
    search = asyncio.ensure_future(ids_found(memory, "tea", user_id="u"))
    await inner.started.wait()  # the first search's load read the old row and waits
    await memory.update(added["results"][0]["id"], "User likes black coffee")
    inner.release.set()
    assert await search == ["User likes green tea"]  # it overlapped the update
    await store.cache.loads()
    assert len(store.cache) == 0  # what the scan read was dropped
    # The next search loads the scope again, and keeps it.
    assert await ids_found(memory, "coffee", user_id="u") == ["User likes black coffee"]
    assert len(store.cache) == 1
    assert await ids_found(memory, "coffee", user_id="u") == ["User likes black coffee"]
    assert store.cache.hits == 1
    await memory.close()


class FailingScanStore(LanceStore):
    """The first ``failures`` scans fail as LanceDB's reads can (``StoreError``)."""

    failures = 1

    async def scan(self, selection: Selection, *, limit: int) -> ScopeRows:
        if self.failures:
            self.failures -= 1
            raise StoreError("LanceDB query failed: injected")
        return await super().scan(selection, limit=limit)


async def test_a_failed_load_sends_the_search_to_the_store_and_the_next_one_loads(
    tmp_path: Path,
) -> None:
    inner = FailingScanStore(str(tmp_path / "db"), 384)
    store = CachingStore(inner, MemoryConfig().cache)
    memory = AsyncMemory(
        MemoryConfig(storage_uri=str(tmp_path / "db")), embedder=HashEmbedder(), store=store
    )
    await memory.open()
    await memory.add("User likes green tea", user_id="u", infer=False)
    assert await ids_found(memory, "tea", user_id="u") == ["User likes green tea"]
    assert inner.failures == 0 and len(store.cache) == 0  # answered by the store
    assert await ids_found(memory, "tea", user_id="u") == ["User likes green tea"]
    assert len(store.cache) == 1 and store.cache.misses == 2
    assert await ids_found(memory, "tea", user_id="u") == ["User likes green tea"]
    assert store.cache.hits == 1
    await memory.close()


@pytest.mark.parametrize("max_loads", [1, 2])
async def test_at_most_max_loads_scopes_load_at_once(tmp_path: Path, max_loads: int) -> None:
    inner = SlowScanStore(str(tmp_path / "db"), 384)
    cfg = MemoryConfig(storage_uri=str(tmp_path / "db"), cache={"max_loads": max_loads})
    store = CachingStore(inner, cfg.cache)
    memory = AsyncMemory(cfg, embedder=HashEmbedder(), store=store)
    await memory.open()
    users = ["u1", "u2", "u3"]
    for user in users:
        await memory.add(f"{user} likes green tea", user_id=user, infer=False)
    scans = 0
    scan = inner.scan

    async def counted(selection: Selection, *, limit: int) -> ScopeRows:
        nonlocal scans
        scans += 1
        return await scan(selection, limit=limit)

    inner.scan = counted  # type: ignore[method-assign]
    # Three new users at once: max_loads scans start (held), the other searches go to the store.
    searches = {u: asyncio.ensure_future(ids_found(memory, "tea", user_id=u)) for u in users}
    answered: set[str] = set()
    while len(answered) < len(users) - max_loads:
        pending = [task for user, task in searches.items() if user not in answered]
        done, _ = await asyncio.wait(pending, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert done, "the searches that could not load were not answered by the store"
        answered |= {user for user, task in searches.items() if task in done}
    await inner.started.wait()
    waiting = [user for user in users if user not in answered]
    assert scans == max_loads and not any(searches[user].done() for user in waiting)
    # Each of the others asked twice: before its store search, and once the store answered.
    assert store.cache.loads_deferred == 2 * (len(users) - max_loads)
    inner.release.set()
    for user in users:
        assert await searches[user] == [f"{user} likes green tea"]
    await store.cache.loads()
    assert len(store.cache) == max_loads
    for user in users:  # the deferred ones load for their next search
        assert await ids_found(memory, "tea", user_id=user) == [f"{user} likes green tea"]
    assert len(store.cache) == len(users) and scans == len(users)
    assert await ids_found(memory, "tea", user_id="u3") == ["u3 likes green tea"]
    assert store.cache.hits == max_loads + 1  # the loaded ones in the second round, then u3
    await memory.close()


async def test_the_cache_stays_within_its_byte_bound(tmp_path: Path) -> None:
    memory = AsyncMemory(config(tmp_path / "db", max_bytes=40_000), embedder=HashEmbedder())
    await memory.open()
    for user in ("u1", "u2", "u3", "u4"):
        await memory.add([f"{user} fact number {i}" for i in range(5)], user_id=user, infer=False)
    store = memory.store
    assert isinstance(store, CachingStore)
    for user in ("u1", "u2", "u3", "u4"):
        assert len(await ids_found(memory, "fact", user_id=user)) == 5
        await store.cache.loads()
        assert store.cache.nbytes <= 40_000
        assert len(await ids_found(memory, "fact", user_id=user)) == 5
    assert 0 < len(store.cache) < 4
    await memory.close()


async def test_a_scope_too_large_is_searched_in_the_store(tmp_path: Path) -> None:
    memory = AsyncMemory(config(tmp_path / "db", max_scope_rows=3), embedder=HashEmbedder())
    await memory.open()
    await memory.add([f"big fact {i}" for i in range(5)], user_id="big", infer=False)
    store = memory.store
    assert isinstance(store, CachingStore)
    assert len(await ids_found(memory, "fact", user_id="big")) == 5
    await store.cache.loads()
    assert len(await ids_found(memory, "fact", user_id="big")) == 5
    assert store.cache.nbytes == 0 and store.cache.hits == 1  # known too large: the store
    await memory.close()


async def test_a_repeated_query_is_embedded_once(tmp_path: Path) -> None:
    class Counting(HashEmbedder):
        queries = 0

        async def embed(self, texts: Any, *, purpose: str = "passage") -> np.ndarray:
            if purpose == "query":
                Counting.queries += 1
            return await super().embed(texts, purpose=purpose)

    memory = AsyncMemory(config(tmp_path / "db"), embedder=Counting())
    await memory.add("User likes tea", user_id="u", infer=False)
    for _ in range(3):
        assert await ids_found(memory, "what do I drink?", user_id="u") == ["User likes tea"]
    assert Counting.queries == 1
    await memory.close()


class RecordingStore(LanceStore):
    """Notes when the store's searches and the cache's scans start and end; the scans of the
    users in ``held`` wait for ``release``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[str] = []
        self.held: set[str] = set()
        self.release = asyncio.Event()

    async def text_search(self, text: str, selection: Selection, *, limit: int) -> Any:
        self.events.append("text search")
        found = await super().text_search(text, selection, limit=limit)
        self.events.append("text search done")
        return found

    async def vector_search(self, vector: Any, selection: Selection, *, limit: int) -> Any:
        self.events.append("vector search")
        found = await super().vector_search(vector, selection, limit=limit)
        self.events.append("vector search done")
        return found

    async def scan(self, selection: Selection, *, limit: int) -> ScopeRows:
        self.events.append("scan")
        found = await super().scan(selection, limit=limit)
        if selection.scope.user_id in self.held:
            await self.release.wait()
        self.events.append("scan done")
        return found


class SlowQueries(HashEmbedder):
    """A query embedding that takes a while, noting when it starts and ends."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events

    async def embed(self, texts: Any, *, purpose: str = "passage") -> np.ndarray:
        if purpose != "query":
            return await super().embed(texts, purpose=purpose)
        self.events.append("embedding")
        await asyncio.sleep(0.2)
        self.events.append("embedding done")
        return await super().embed(texts, purpose=purpose)


def assert_loaded_while_embedding(events: list[str]) -> None:
    """The scope's scan started after the query's embedding and before it was done, and no
    store search ran."""
    assert events[0] == "embedding" and sorted(events) == sorted(
        ["embedding", "scan", "scan done", "embedding done"]
    )
    assert events.index("scan") < events.index("embedding done")


async def test_a_cold_scope_loads_while_its_query_is_embedded(tmp_path: Path) -> None:
    inner = RecordingStore(str(tmp_path / "db"), 384)
    store = CachingStore(inner, MemoryConfig().cache)
    memory = AsyncMemory(
        MemoryConfig(storage_uri=str(tmp_path / "db"), cache={"query_vectors": 0}),
        embedder=SlowQueries(inner.events),
        store=store,
    )
    await memory.open()
    await memory.add(["User likes green tea", "User lives in Lisbon"], user_id="u", infer=False)
    inner.events.clear()
    assert "User likes green tea" in await ids_found(memory, "green tea", user_id="u")
    # The scope's records were read while the query was embedded, and searched in process.
    assert_loaded_while_embedding(inner.events)
    assert len(store.cache) == 1 and store.cache.misses == 1
    inner.events.clear()
    assert "User likes green tea" in await ids_found(memory, "green tea", user_id="u")
    assert inner.events == ["embedding", "embedding done"]  # from the cache: no store query
    assert store.cache.hits == 1
    await memory.close()


async def test_a_scope_without_room_to_load_is_searched_in_the_store_and_loads_later(
    tmp_path: Path,
) -> None:
    inner = RecordingStore(str(tmp_path / "db"), 384)
    cfg = MemoryConfig(
        storage_uri=str(tmp_path / "db"), cache={"query_vectors": 0, "max_loads": 1}
    )
    store = CachingStore(inner, cfg.cache)
    memory = AsyncMemory(cfg, embedder=SlowQueries(inner.events), store=store)
    await memory.open()
    await memory.add(["User likes green tea", "User lives in Lisbon"], user_id="u", infer=False)
    await memory.add("Other likes tea", user_id="other", infer=False)
    inner.held.add("other")
    other = asyncio.ensure_future(ids_found(memory, "tea", user_id="other"))
    for _ in range(500):  # until the other user's load holds the one slot
        if "scan" in inner.events:
            break
        await asyncio.sleep(0.01)
    inner.events.clear()
    assert "User likes green tea" in await ids_found(memory, "green tea", user_id="u")
    events = inner.events
    # The full-text search ran while the query was being embedded; the vector search needs
    # the vector; no room for the scope's scan, before or after the store answered.
    assert events.index("text search") < events.index("embedding done")
    assert events.index("text search done") < events.index("embedding done")
    assert events.index("vector search") > events.index("embedding done")
    assert "scan" not in events and store.cache.loads_deferred == 2
    inner.release.set()
    assert await other == ["Other likes tea"]
    events.clear()
    assert "User likes green tea" in await ids_found(memory, "green tea", user_id="u")
    assert_loaded_while_embedding(events)  # it loads now
    assert len(store.cache) == 2
    await memory.close()


async def test_changing_a_result_does_not_change_the_cache(tmp_path: Path) -> None:
    memory = AsyncMemory(config(tmp_path / "db"), embedder=HashEmbedder())
    await memory.add(
        "User likes green tea", user_id="u", infer=False, metadata={"tags": ["drinks"]}
    )
    await memory.search("green tea", user_id="u")
    store = memory.store
    assert isinstance(store, CachingStore)
    await store.cache.loads()
    for _ in range(2):
        [hit] = (await memory.search("green tea", user_id="u"))["results"]
        assert hit["metadata"] == {"tags": ["drinks"]} and hit["categories"] == []
        assert hit["memory"] == "User likes green tea"
        hit["metadata"]["tags"].append("changed by the caller")
        hit["metadata"]["new"] = 1
        hit["categories"].append("changed")
        hit["memory"] = "changed"
    assert store.cache.hits == 2
    await memory.close()


async def test_a_cached_scope_ranks_full_text_while_the_query_is_embedded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    memory = AsyncMemory(
        MemoryConfig(storage_uri=str(tmp_path / "db"), cache={"query_vectors": 0}),
        embedder=SlowQueries(events),
    )
    await memory.add(["User likes green tea", "User lives in Lisbon"], user_id="u", infer=False)
    assert "User likes green tea" in await ids_found(memory, "green tea", user_id="u")
    store = memory.store
    assert isinstance(store, CachingStore)
    await store.cache.loads()
    searches = {"text": ScopeIndex.text_search, "vector": ScopeIndex.vector_search}

    def recording(kind: str) -> Any:
        def search(index: ScopeIndex, *args: Any, **kwargs: Any) -> Any:
            events.append(f"cached {kind} search")
            return searches[kind](index, *args, **kwargs)

        return search

    for kind in searches:
        monkeypatch.setattr(ScopeIndex, f"{kind}_search", recording(kind))
    events.clear()
    assert "User likes green tea" in await ids_found(memory, "green tea", user_id="u")
    assert events == [
        "embedding",
        "cached text search",  # needs no vector: ranked while the query is embedded
        "embedding done",
        "cached vector search",
    ]
    assert store.cache.hits == 1
    await memory.close()


@pytest.mark.parametrize(
    ("texts", "term", "docs", "tfs"),
    [
        (["tea tea", "coffee", "green tea"], "tea", [0, 2], [2, 1]),
        (["tea tea", "coffee", "green tea"], "coffe", [1], [1]),
        (["tea tea", "coffee", "green tea"], "milk", [], []),
        (["", "the and of", "tea"], "tea", [2], [1]),  # empty and stop-word-only documents
        ([], "tea", [], []),
    ],
)
def test_postings_are_compressed_rows(
    texts: list[str], term: str, docs: list[int], tfs: list[float]
) -> None:
    index = Bm25Index.build([tokenize(t) for t in texts])
    found_docs, found_tfs = index.postings(term)
    assert found_docs.tolist() == docs and found_tfs.tolist() == tfs
    assert len(index.lengths) == len(texts) and int(index.starts[-1]) == len(index.docs)


# ---- two processes on one store ---------------------------------------------------------------

OTHER_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from memory_core import AsyncMemory, MemoryConfig
    from tests.conftest import HashEmbedder

    async def main() -> None:
        memory = AsyncMemory(MemoryConfig(storage_uri=sys.argv[1]), embedder=HashEmbedder())
        for line in sys.stdin:
            op, _, arg = line.strip().partition(" ")
            if op == "update":
                memory_id, _, text = arg.partition(" ")
                await memory.update(memory_id, text)
            elif op == "delete":
                await memory.delete(arg)
            elif op == "add":
                await memory.add(arg, user_id="u", infer=False)
            print("done", flush=True)
        await memory.close()

    asyncio.run(main())
    """
)


async def test_writes_of_another_process_are_seen(tmp_path: Path) -> None:
    uri = str(tmp_path / "db")
    memory = AsyncMemory(
        MemoryConfig(storage_uri=uri, read_consistency_interval_s=0), embedder=HashEmbedder()
    )
    added = await memory.add(
        ["User likes green tea", "User lives in Lisbon"], user_id="u", infer=False
    )
    tea = next(r["id"] for r in added["results"] if "tea" in r["memory"])
    lisbon = next(r["id"] for r in added["results"] if "Lisbon" in r["memory"])
    assert "User likes green tea" in await ids_found(memory, "tea", user_id="u")
    store = memory.store
    assert isinstance(store, CachingStore)
    await store.cache.loads()  # cached now
    other = subprocess.Popen(
        [sys.executable, "-c", OTHER_PROCESS, uri],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd=ROOT,
    )
    assert other.stdin is not None and other.stdout is not None

    def run(command: str) -> None:
        assert other.stdin is not None and other.stdout is not None
        other.stdin.write(command + "\n")
        other.stdin.flush()
        assert other.stdout.readline().strip() == "done"

    try:
        assert "User likes green tea" in await ids_found(memory, "tea", user_id="u")
        assert store.cache.hits == 1
        await asyncio.to_thread(run, f"update {tea} User likes black coffee")
        found = await ids_found(memory, "coffee", user_id="u")
        assert "User likes black coffee" in found and "User likes green tea" not in found
        await asyncio.to_thread(run, f"delete {lisbon}")
        assert "User lives in Lisbon" not in await ids_found(memory, "Lisbon", user_id="u")
        await asyncio.to_thread(run, "add User owns a bicycle")
        assert "User owns a bicycle" in await ids_found(memory, "bicycle", user_id="u")
    finally:
        other.stdin.close()
        other.wait(timeout=60)
    await memory.close()
