"""AsyncMemory / Memory against a real LanceDB in tmp_path with the real local embedder."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memory_core import (
    AsyncMemory,
    DimensionMismatch,
    ExtractionError,
    InvalidFilter,
    InvalidIdentity,
    InvalidInput,
    Memory,
    MemoryConfig,
    NotFound,
)
from memory_core.embedders import Embedder
from memory_core.errors import StoreError
from memory_core.llm_client import CallOptions
from memory_core.records import content_hash
from memory_core.scope_cache import CachingStore

STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}

FACTS = [
    "User's sister lives in Lisbon",
    "User is vegetarian",
    "User plays the cello in an orchestra",
    "User works as a software engineer at a bank",
    "User is allergic to peanuts",
    "User's favourite football club is Benfica",
]


class HashEmbedder:
    """A tiny deterministic Embedder of any dimension (no semantics)."""

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension

    async def embed(self, texts: Any, *, purpose: str = "passage") -> np.ndarray:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            rows.append(np.random.default_rng(seed).standard_normal(self.dimension))
        array = np.asarray(rows, dtype=np.float32).reshape(len(rows), self.dimension)
        return array / np.linalg.norm(array, axis=1, keepdims=True)


def texts_of(result: dict[str, list[Any]]) -> list[str]:
    return [item["memory"] for item in result["results"]]


@pytest.fixture
async def hmem(storage_uri: str) -> Any:
    """An AsyncMemory with the cheap HashEmbedder, for bulk tests where semantics don't matter."""
    memory = AsyncMemory(MemoryConfig(storage_uri=storage_uri), embedder=HashEmbedder(32))
    yield memory
    await memory.close()


# ---- add(infer=False) --------------------------------------------------------------------


async def test_add_string_and_get(amem: AsyncMemory) -> None:
    result = await amem.add("  I like green tea  ", user_id="u1", infer=False)
    assert len(result["results"]) == 1
    added = result["results"][0]
    assert added["event"] == "ADD" and added["memory"] == "I like green tea"
    assert UUID.match(added["id"])
    item = await amem.get(added["id"])
    assert item["id"] == added["id"]
    assert item["memory"] == "I like green tea"
    assert item["hash"] == content_hash("I like green tea")
    assert (item["user_id"], item["agent_id"], item["run_id"]) == ("u1", None, None)
    assert item["metadata"] == {} and item["categories"] == []
    assert STAMP.match(item["created_at"]) and item["created_at"] == item["updated_at"]
    assert "score" not in item


async def test_add_message_list_skips_system(amem: AsyncMemory) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant"},
        {"role": "user", "content": "I have a dog named Rex"},
        {"role": "assistant", "content": "Rex is a great name"},
        {"role": "user", "content": [{"type": "text", "text": "here he is"}, IMAGE]},
        {"role": "user", "content": [IMAGE]},
        {"role": "user", "content": "   "},
        "a plain string in the list",
    ]
    result = await amem.add(messages, user_id="u1", infer=False)
    assert [r["memory"] for r in result["results"]] == [
        "I have a dog named Rex",
        "Rex is a great name",
        "here he is",
        "a plain string in the list",
    ]
    stored = await amem.get_all(user_id="u1")
    assert sorted(texts_of(stored)) == sorted(r["memory"] for r in result["results"])
    assert "You are a helpful assistant" not in texts_of(stored)


async def test_add_single_message_object_and_empty_inputs(amem: AsyncMemory) -> None:
    result = await amem.add({"role": "user", "content": "one message"}, user_id="u1", infer=False)
    assert texts_of(result) == ["one message"]
    assert (await amem.add([], user_id="u1", infer=False))["results"] == []
    assert (await amem.add("   ", user_id="u1", infer=False))["results"] == []
    only_system = {"role": "system", "content": "ignored"}
    assert (await amem.add([only_system], user_id="u1", infer=False))["results"] == []
    assert texts_of(await amem.get_all(user_id="u1")) == ["one message"]


@pytest.mark.parametrize("messages", [123, None, [1], [["nested"]], 4.5])
async def test_add_rejects_malformed_messages(amem: AsyncMemory, messages: Any) -> None:
    with pytest.raises(InvalidInput):
        await amem.add(messages, user_id="u1", infer=False)


async def test_long_text_is_truncated_not_rejected(hmem: AsyncMemory) -> None:
    result = await hmem.add("x" * 25_000, user_id="u1", infer=False)
    assert result["results"][0]["memory"] == "x" * 10_000
    assert (await hmem.get_all(user_id="u1"))["results"][0]["memory"] == "x" * 10_000


async def test_metadata_is_kept_and_returned(amem: AsyncMemory) -> None:
    meta = {"source": "chat", "n": 3, "tags": ["a", "b"], "nested": {"k": "O'Brien 🐱"}}
    added = await amem.add(
        "User's sister lives in Lisbon", user_id="u1", metadata=meta, infer=False
    )
    memory_id = added["results"][0]["id"]
    assert (await amem.get(memory_id))["metadata"] == meta
    hits = await amem.search("where does my sister live?", user_id="u1")
    assert hits["results"][0]["metadata"] == meta
    assert (await amem.get_all(user_id="u1"))["results"][0]["metadata"] == meta


@pytest.mark.parametrize("key", ["user_id", "agent_id", "run_id"])
async def test_identity_keys_in_metadata_are_rejected(amem: AsyncMemory, key: str) -> None:
    with pytest.raises(InvalidInput, match=key):
        await amem.add("text", user_id="u1", metadata={key: "u2"}, infer=False)
    assert (await amem.get_all(user_id="u1"))["results"] == []
    assert (await amem.get_all(user_id="u2"))["results"] == []


async def test_metadata_must_be_an_object(amem: AsyncMemory) -> None:
    with pytest.raises(InvalidInput, match="metadata"):
        await amem.add("text", user_id="u1", metadata=["a"], infer=False)  # type: ignore[arg-type]


async def test_exact_duplicates_are_not_stored_twice(amem: AsyncMemory) -> None:
    first = await amem.add("I like tea", user_id="u1", infer=False)
    assert len(first["results"]) == 1
    assert (await amem.add("I like tea", user_id="u1", infer=False))["results"] == []
    assert (await amem.add("  I like tea\n", user_id="u1", infer=False))["results"] == []
    within = await amem.add(
        ["I like coffee", "I like coffee", " I like coffee "], user_id="u1", infer=False
    )
    assert texts_of(within) == ["I like coffee"]
    # the guard is exact: a different case is a different text
    assert len((await amem.add("i like tea", user_id="u1", infer=False))["results"]) == 1
    # and it is per user
    assert len((await amem.add("I like tea", user_id="u2", infer=False))["results"]) == 1
    assert sorted(texts_of(await amem.get_all(user_id="u1"))) == [
        "I like coffee",
        "I like tea",
        "i like tea",
    ]


async def test_concurrent_duplicate_adds_store_one_row(amem: AsyncMemory) -> None:
    results = await asyncio.gather(
        *(amem.add("I live in Porto", user_id="u1", infer=False) for _ in range(12)),
        *(amem.add(["I live in Porto", "I ski"], user_id="u1", infer=False) for _ in range(4)),
    )
    added = [r for result in results for r in result["results"]]
    assert sorted(r["memory"] for r in added) == ["I live in Porto", "I ski"]
    assert sorted(texts_of(await amem.get_all(user_id="u1"))) == ["I live in Porto", "I ski"]


async def test_concurrent_adds_of_different_users(amem: AsyncMemory) -> None:
    await asyncio.gather(
        *(
            amem.add(f"fact {n} of {user}", user_id=user, infer=False)
            for n in range(10)
            for user in ("u1", "u2", "u3")
        )
    )
    for user in ("u1", "u2", "u3"):
        stored = texts_of(await amem.get_all(user_id=user))
        assert sorted(stored) == sorted(f"fact {n} of {user}" for n in range(10))


@pytest.mark.parametrize("method", ["add", "search", "get_all", "delete_all"])
async def test_an_id_is_required(amem: AsyncMemory, method: str) -> None:
    with pytest.raises(InvalidIdentity, match="at least one"):
        if method == "add":
            await amem.add("x", infer=False)
        elif method == "search":
            await amem.search("x")
        elif method == "get_all":
            await amem.get_all()
        else:
            await amem.delete_all()


@pytest.mark.parametrize("bad", ["", "u 1", "u1' OR '1'='1", "x" * 129, "ü", "u1;", "a/b"])
@pytest.mark.parametrize("field", ["user_id", "agent_id", "run_id"])
async def test_malformed_ids_are_rejected(amem: AsyncMemory, field: str, bad: str) -> None:
    with pytest.raises(InvalidIdentity, match=field):
        await amem.add("x", infer=False, **{field: bad})
    with pytest.raises(InvalidIdentity, match=field):
        await amem.search("x", **{field: bad})
    with pytest.raises(InvalidIdentity):
        await amem.get_all(**{field: bad})
    with pytest.raises(InvalidIdentity):
        await amem.delete_all(**{field: bad})


async def test_timestamp_sets_created_at(amem: AsyncMemory) -> None:
    await amem.add("a", user_id="u1", infer=False, timestamp="2024-05-06T07:08:09Z")
    await amem.add("b", user_id="u1", infer=False, timestamp=0)
    items = {i["memory"]: i for i in (await amem.get_all(user_id="u1"))["results"]}
    assert items["a"]["created_at"] == "2024-05-06T07:08:09.000000+00:00"
    assert items["b"]["created_at"] == "1970-01-01T00:00:00.000000+00:00"


@pytest.mark.parametrize("bad", ["last tuesday", "2024-13-45", 1e300, True])
async def test_bad_timestamp_is_invalid_input(amem: AsyncMemory, bad: Any) -> None:
    with pytest.raises(InvalidInput, match="timestamp"):
        await amem.add("a", user_id="u1", infer=False, timestamp=bad)


async def test_scopes_with_agent_and_run(amem: AsyncMemory) -> None:
    await amem.add("user only", user_id="u1", infer=False)
    await amem.add("with agent", user_id="u1", agent_id="a1", infer=False)
    await amem.add("with run", user_id="u1", agent_id="a1", run_id="r1", infer=False)
    await amem.add("other agent", user_id="u2", agent_id="a1", infer=False)
    assert len(texts_of(await amem.get_all(user_id="u1"))) == 3
    assert sorted(texts_of(await amem.get_all(user_id="u1", agent_id="a1"))) == [
        "with agent",
        "with run",
    ]
    assert texts_of(await amem.get_all(run_id="r1")) == ["with run"]
    assert sorted(texts_of(await amem.get_all(agent_id="a1"))) == [
        "other agent",
        "with agent",
        "with run",
    ]
    assert texts_of(await amem.get_all(user_id="u1", agent_id="a2")) == []
    hits = await amem.search("agent", user_id="u2", agent_id="a1")
    assert texts_of(hits) == ["other agent"]


# ---- search --------------------------------------------------------------------------------


@pytest.fixture
async def facts(amem: AsyncMemory) -> AsyncMemory:
    for n, fact in enumerate(FACTS):
        topic = "food" if fact in ("User is vegetarian", "User is allergic to peanuts") else "life"
        await amem.add(fact, user_id="u1", metadata={"topic": topic, "n": n}, infer=False)
    await amem.add(
        "User's brother lives in Tokyo", user_id="u2", metadata={"topic": "life"}, infer=False
    )
    return amem


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("where does my sister live?", "User's sister lives in Lisbon"),
        ("Do I eat meat?", "User is vegetarian"),
        ("what instrument do I play", "User plays the cello in an orchestra"),
        ("what is my job", "User works as a software engineer at a bank"),
        ("food allergies", "User is allergic to peanuts"),
        ("which soccer team do I support", "User's favourite football club is Benfica"),
    ],
)
async def test_search_ranks_the_relevant_memory_first(
    facts: AsyncMemory, query: str, expected: str
) -> None:
    hits = (await facts.search(query, user_id="u1"))["results"]
    assert hits[0]["memory"] == expected
    assert len(hits) == len(FACTS)
    assert all(-1.0 <= h["score"] <= 1.0 for h in hits)
    assert hits[0]["user_id"] == "u1"


async def test_search_limit_and_threshold(facts: AsyncMemory) -> None:
    assert len((await facts.search("sister", user_id="u1", limit=2))["results"]) == 2
    assert len((await facts.search("sister", user_id="u1", limit=1))["results"]) == 1
    everything = (await facts.search("where does my sister live?", user_id="u1"))["results"]
    scores = sorted(h["score"] for h in everything)
    cut = (scores[-1] + scores[-2]) / 2  # between the best and the second best
    kept = await facts.search("where does my sister live?", user_id="u1", threshold=cut)
    assert texts_of(kept) == ["User's sister lives in Lisbon"]
    assert all(h["score"] >= cut for h in kept["results"])
    none = await facts.search("where does my sister live?", user_id="u1", threshold=0.9999)
    assert none["results"] == []


@pytest.mark.parametrize("limit", [0, -1, 1001, True, 2.5, "3"])
async def test_search_rejects_bad_limits(facts: AsyncMemory, limit: Any) -> None:
    with pytest.raises(InvalidInput, match="limit"):
        await facts.search("x", user_id="u1", limit=limit)


@pytest.mark.parametrize("query", ["", "   ", None, 5])
async def test_search_rejects_empty_queries(facts: AsyncMemory, query: Any) -> None:
    with pytest.raises(InvalidInput, match="query"):
        await facts.search(query, user_id="u1")


@pytest.mark.parametrize("query", ["!!!???", "' OR 1=1 --", "AND OR NOT", "🐱", "sister " * 60])
async def test_search_with_odd_queries_still_works(facts: AsyncMemory, query: str) -> None:
    hits = (await facts.search(query, user_id="u1"))["results"]
    assert len(hits) == len(FACTS)
    assert {h["user_id"] for h in hits} == {"u1"}


async def test_search_without_hybrid(tmp_path: Path, embedder: Any) -> None:
    config = MemoryConfig(storage_uri=str(tmp_path / "db"), hybrid_search=False)
    memory = AsyncMemory(config, embedder=embedder)
    try:
        for fact in FACTS:
            await memory.add(fact, user_id="u1", infer=False)
        hits = (await memory.search("where does my sister live?", user_id="u1"))["results"]
        assert hits[0]["memory"] == "User's sister lives in Lisbon"
        # pure vector ranking: sorted by similarity
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True)
    finally:
        await memory.close()


async def test_search_with_metadata_filters(facts: AsyncMemory) -> None:
    food = await facts.search("tell me about me", user_id="u1", filters={"topic": "food"})
    assert sorted(texts_of(food)) == ["User is allergic to peanuts", "User is vegetarian"]
    first_two = await facts.search("anything", user_id="u1", filters={"n": {"lt": 2}})
    assert sorted(texts_of(first_two)) == sorted(FACTS[:2])
    not_food = await facts.search(
        "anything", user_id="u1", filters={"NOT": {"topic": "food"}}, limit=100
    )
    assert len(not_food["results"]) == 4
    either = await facts.search("x", user_id="u1", filters={"OR": [{"n": 0}, {"n": 5}]})
    assert sorted(texts_of(either)) == sorted([FACTS[0], FACTS[5]])
    assert (await facts.search("x", user_id="u1", filters={"topic": "none"}))["results"] == []
    with pytest.raises(InvalidFilter):
        await facts.search("x", user_id="u1", filters={"topic": {"regex": ".*"}})


ISOLATION_FILTERS: list[dict[str, Any] | None] = [
    None,
    {"user_id": "u1"},
    {"user_id": {"in": ["u1", "u2"]}},
    {"user_id": {"ne": "u2"}},
    {"user_id": {"nin": ["u2"]}},
    {"user_id": {"contains": "u"}},
    {"OR": [{"user_id": "u1"}, {"user_id": "u2"}]},
    {"OR": [{"user_id": "u1"}, {"id": {"ne": ""}}]},
    {"NOT": {"user_id": "u2"}},
    {"NOT": {"user_id": "u1"}},
    {"id": {"nin": []}},
    {"topic": "food"},
    {"topic": {"ne": "x"}},
    {"OR": [{"topic": "food"}, {"topic": "life"}]},
    {"created_at": {"gte": 0}},
]


@pytest.mark.parametrize("filters", ISOLATION_FILTERS)
async def test_users_never_see_each_others_memories(
    facts: AsyncMemory, filters: dict[str, Any] | None
) -> None:
    for query in ("where does my sister live?", "vegetarian", "Lisbon"):
        hits = (await facts.search(query, user_id="u2", filters=filters))["results"]
        assert {h["user_id"] for h in hits} <= {"u2"}
        assert not set(texts_of({"results": hits})) & set(FACTS)
    listed = (await facts.get_all(user_id="u2", filters=filters))["results"]
    assert {i["user_id"] for i in listed} <= {"u2"}
    assert not set(i["memory"] for i in listed) & set(FACTS)
    # and the other way round
    mine = (await facts.get_all(user_id="u1", filters=filters))["results"]
    assert "User's brother lives in Tokyo" not in [i["memory"] for i in mine]


async def test_user_without_memories_gets_nothing(facts: AsyncMemory) -> None:
    assert (await facts.search("where does my sister live?", user_id="nobody"))["results"] == []
    assert (await facts.get_all(user_id="nobody"))["results"] == []


# ---- get / get_all / update / delete / history -------------------------------------------


@pytest.mark.parametrize("memory_id", ["0d7e3b9c-0000-4000-8000-000000000000", "", "x" * 200, 5])
async def test_get_unknown_is_not_found(amem: AsyncMemory, memory_id: Any) -> None:
    with pytest.raises(NotFound):
        await amem.get(memory_id)
    with pytest.raises(NotFound):
        await amem.delete(memory_id)
    with pytest.raises(NotFound):
        await amem.update(memory_id, "text")


async def test_get_all_newest_first_limit_and_filters(amem: AsyncMemory) -> None:
    await amem.add("january", user_id="u1", infer=False, timestamp="2024-01-15")
    await amem.add("march", user_id="u1", infer=False, timestamp="2024-03-15", metadata={"q": 1})
    await amem.add("february", user_id="u1", infer=False, timestamp="2024-02-15")
    await amem.add("other user", user_id="u2", infer=False, timestamp="2024-04-15")
    assert texts_of(await amem.get_all(user_id="u1")) == ["march", "february", "january"]
    assert texts_of(await amem.get_all(user_id="u1", limit=2)) == ["march", "february"]
    since = {"created_at": {"gte": "2024-02-01"}}
    assert texts_of(await amem.get_all(user_id="u1", filters=since)) == ["march", "february"]
    before = {"created_at": {"lt": "2024-02-15T00:00:01+00:00"}}
    assert texts_of(await amem.get_all(user_id="u1", filters=before)) == ["february", "january"]
    assert texts_of(await amem.get_all(user_id="u1", filters={"q": 1})) == ["march"]
    with pytest.raises(InvalidInput):
        await amem.get_all(user_id="u1", limit=0)


async def test_get_all_beyond_default_query_limit(hmem: AsyncMemory) -> None:
    """LanceDB queries return 10 rows by default; get_all must not stop there."""
    await hmem.add([f"memory number {n}" for n in range(150)], user_id="u1", infer=False)
    assert len((await hmem.get_all(user_id="u1"))["results"]) == 100  # the default limit
    assert len((await hmem.get_all(user_id="u1", limit=1000))["results"]) == 150


async def test_update_changes_text_vector_and_history(tmp_path: Path, embedder: Any) -> None:
    config = MemoryConfig(storage_uri=str(tmp_path / "db"), hybrid_search=False)
    memory = AsyncMemory(config, embedder=embedder)
    try:
        added = await memory.add(
            "User has a cat named Tom", user_id="u1", metadata={"a": 1}, infer=False
        )
        memory_id = added["results"][0]["id"]
        for fact in FACTS[1:]:
            await memory.add(fact, user_id="u1", infer=False)
        before = await memory.get(memory_id)
        query = "which city do I live in?"
        old_hits = (await memory.search(query, user_id="u1"))["results"]
        old_score = next(h["score"] for h in old_hits if h["id"] == memory_id)

        updated = await memory.update(memory_id, "  User lives in Lisbon  ", metadata={"b": 2})
        assert updated["memory"] == "User lives in Lisbon"
        assert updated["hash"] == content_hash("User lives in Lisbon")
        assert updated["metadata"] == {"a": 1, "b": 2}
        assert updated["created_at"] == before["created_at"]
        assert updated["updated_at"] > before["updated_at"]
        assert updated["user_id"] == "u1"

        hits = (await memory.search(query, user_id="u1"))["results"]
        assert hits[0]["id"] == memory_id  # the new vector is used
        assert hits[0]["score"] > old_score + 0.01
        assert texts_of(await memory.get_all(user_id="u1")).count("User lives in Lisbon") == 1

        history = await memory.history(memory_id)
        assert [(h["event"], h["old_memory"], h["new_memory"]) for h in history] == [
            ("ADD", None, "User has a cat named Tom"),
            ("UPDATE", "User has a cat named Tom", "User lives in Lisbon"),
        ]
        assert all(h["memory_id"] == memory_id and not h["is_deleted"] for h in history)
    finally:
        await memory.close()


@pytest.mark.parametrize("text", ["", "   ", None, 7])
async def test_update_rejects_empty_text(amem: AsyncMemory, text: Any) -> None:
    added = await amem.add("keep me", user_id="u1", infer=False)
    with pytest.raises(InvalidInput):
        await amem.update(added["results"][0]["id"], text)
    assert texts_of(await amem.get_all(user_id="u1")) == ["keep me"]


async def test_update_rejects_identity_metadata(amem: AsyncMemory) -> None:
    added = await amem.add("keep me", user_id="u1", infer=False)
    with pytest.raises(InvalidInput, match="user_id"):
        await amem.update(added["results"][0]["id"], "moved", metadata={"user_id": "u2"})
    assert (await amem.get_all(user_id="u2"))["results"] == []


async def test_delete_and_history(amem: AsyncMemory) -> None:
    first = (await amem.add("v1", user_id="u1", infer=False))["results"][0]["id"]
    other = (await amem.add("unrelated", user_id="u1", infer=False))["results"][0]["id"]
    await amem.update(first, "v2")
    await amem.update(first, "v3")
    assert await amem.delete(first) == {"message": "Memory deleted successfully!"}
    with pytest.raises(NotFound):
        await amem.get(first)
    assert texts_of(await amem.get_all(user_id="u1")) == ["unrelated"]
    assert texts_of(await amem.search("v3", user_id="u1")) == ["unrelated"]
    history = await amem.history(first)
    assert [(h["event"], h["old_memory"], h["new_memory"], h["is_deleted"]) for h in history] == [
        ("ADD", None, "v1", False),
        ("UPDATE", "v1", "v2", False),
        ("UPDATE", "v2", "v3", False),
        ("DELETE", "v3", None, True),
    ]
    stamps = [h["created_at"] for h in history]
    assert stamps == sorted(stamps)
    assert len({h["id"] for h in history}) == 4
    assert [h["event"] for h in await amem.history(other)] == ["ADD"]
    assert await amem.history("0d7e3b9c-0000-4000-8000-000000000000") == []
    with pytest.raises(NotFound):
        await amem.delete(first)


async def test_delete_all_with_a_thousand_memories(hmem: AsyncMemory) -> None:
    amem = hmem
    texts = [f"u1 memory {n:04d}" for n in range(1000)]
    added = await amem.add(texts, user_id="u1", infer=False)
    assert len(added["results"]) == 1000
    await amem.add(["u2 one", "u2 two", "u2 three"], user_id="u2", infer=False)
    await amem.add("u1 with agent", user_id="u1", agent_id="a1", infer=False)
    assert len((await amem.get_all(user_id="u1", limit=5000))["results"]) == 1001

    result = await amem.delete_all(user_id="u1")
    assert result["deleted"] == 1001
    assert (await amem.get_all(user_id="u1", limit=5000))["results"] == []
    assert (await amem.search("memory", user_id="u1"))["results"] == []
    assert sorted(texts_of(await amem.get_all(user_id="u2"))) == ["u2 one", "u2 three", "u2 two"]
    sample = added["results"][500]["id"]
    assert [h["event"] for h in await amem.history(sample)] == ["ADD", "DELETE"]
    assert (await amem.delete_all(user_id="u1"))["deleted"] == 0
    # the user can start again, and old texts are no longer "duplicates"
    assert len((await amem.add(texts[0], user_id="u1", infer=False))["results"]) == 1


async def test_delete_all_of_a_narrower_scope(amem: AsyncMemory) -> None:
    await amem.add("keep", user_id="u1", infer=False)
    await amem.add("drop", user_id="u1", run_id="r1", infer=False)
    assert (await amem.delete_all(user_id="u1", run_id="r1"))["deleted"] == 1
    assert texts_of(await amem.get_all(user_id="u1")) == ["keep"]


async def test_reset(amem: AsyncMemory) -> None:
    memory_id = (await amem.add("a", user_id="u1", infer=False))["results"][0]["id"]
    await amem.add("b", user_id="u2", infer=False)
    await amem.reset()
    assert (await amem.get_all(user_id="u1"))["results"] == []
    assert (await amem.get_all(user_id="u2"))["results"] == []
    assert await amem.history(memory_id) == []
    assert len((await amem.add("a", user_id="u1", infer=False))["results"]) == 1
    assert texts_of(await amem.search("a", user_id="u1")) == ["a"]


async def test_data_persists_across_instances(storage_uri: str, embedder: Any) -> None:
    first = AsyncMemory(MemoryConfig(storage_uri=storage_uri), embedder=embedder)
    memory_id = (await first.add("persist me", user_id="u1", infer=False))["results"][0]["id"]
    await first.close()
    second = AsyncMemory(MemoryConfig(storage_uri=storage_uri), embedder=embedder)
    try:
        assert (await second.get(memory_id))["memory"] == "persist me"
        assert (await second.add("persist me", user_id="u1", infer=False))["results"] == []
    finally:
        await second.close()


# ---- job ids, dimensions, config -----------------------------------------------------------


async def test_job_id_makes_add_idempotent(amem: AsyncMemory) -> None:
    first = await amem.add(["fact one", "fact two"], user_id="u1", infer=False, job_id="j1")
    assert len(first["results"]) == 2
    again = await amem.add(["fact one", "fact two"], user_id="u1", infer=False, job_id="j1")
    assert again["results"] == []
    other_text = await amem.add("fact three", user_id="u1", infer=False, job_id="j1")
    assert other_text["results"] == []
    assert sorted(texts_of(await amem.get_all(user_id="u1"))) == ["fact one", "fact two"]
    fresh = await amem.add("fact three", user_id="u1", infer=False, job_id="j2")
    assert texts_of(fresh) == ["fact three"]


async def test_embedder_protocol_and_dimension_mismatch(storage_uri: str) -> None:
    assert isinstance(HashEmbedder(8), Embedder)
    small = AsyncMemory(MemoryConfig(storage_uri=storage_uri), embedder=HashEmbedder(8))
    await small.add("eight dims", user_id="u1", infer=False)
    await small.close()

    bigger = AsyncMemory(MemoryConfig(storage_uri=storage_uri), embedder=HashEmbedder(16))
    with pytest.raises(DimensionMismatch) as caught:
        await bigger.open()
    assert "8-dim" in str(caught.value) and "16-dim" in str(caught.value)
    with pytest.raises(DimensionMismatch):  # lazily opened calls fail the same way
        await bigger.add("x", user_id="u1", infer=False)

    same = AsyncMemory(MemoryConfig(storage_uri=storage_uri), embedder=HashEmbedder(8))
    try:
        assert texts_of(await same.get_all(user_id="u1")) == ["eight dims"]
    finally:
        await same.close()


async def test_dimension_mismatch_with_the_local_embedder(storage_uri: str, embedder: Any) -> None:
    other = AsyncMemory(MemoryConfig(storage_uri=storage_uri), embedder=HashEmbedder(64))
    await other.open()
    await other.close()
    local = AsyncMemory(MemoryConfig(storage_uri=storage_uri), embedder=embedder)
    with pytest.raises(DimensionMismatch, match=f"{embedder.dimension}-dim"):
        await local.search("anything", user_id="u1")


async def test_infer_true_without_llm_is_invalid_input(amem: AsyncMemory) -> None:
    with pytest.raises(InvalidInput, match="LLM"):
        await amem.add("I'm vegetarian", user_id="u1")
    assert (await amem.get_all(user_id="u1"))["results"] == []


# ---- sync Memory -------------------------------------------------------------------------


def test_sync_memory_full_cycle(storage_uri: str, embedder: Any) -> None:
    with Memory(MemoryConfig(storage_uri=storage_uri), embedder=embedder) as memory:
        added = memory.add(FACTS, user_id="u1", infer=False)
        assert len(added["results"]) == len(FACTS)
        hits = memory.search("where does my sister live?", user_id="u1", limit=3)
        assert hits["results"][0]["memory"] == "User's sister lives in Lisbon"
        assert len(hits["results"]) == 3
        memory_id = hits["results"][0]["id"]
        assert memory.update(memory_id, "User's sister lives in Porto")["memory"] == (
            "User's sister lives in Porto"
        )
        assert memory.get(memory_id)["memory"] == "User's sister lives in Porto"
        assert [h["event"] for h in memory.history(memory_id)] == ["ADD", "UPDATE"]
        memory.delete(memory_id)
        assert len(memory.get_all(user_id="u1")["results"]) == len(FACTS) - 1
        assert memory.delete_all(user_id="u1")["deleted"] == len(FACTS) - 1
        memory.add("x", user_id="u2", infer=False)
        memory.reset()
        assert memory.get_all(user_id="u2")["results"] == []
        with pytest.raises(NotFound):
            memory.get(memory_id)
        assert isinstance(memory.async_memory, AsyncMemory)


def test_sync_memory_from_config_dict(tmp_path: Path) -> None:
    memory = Memory.from_config({"storage_uri": str(tmp_path / "db")})
    try:
        memory.add("I'm vegetarian", user_id="u1", infer=False)
        assert texts_of(memory.search("food", user_id="u1")) == ["I'm vegetarian"]
        with pytest.raises(InvalidInput, match="infer=False"):
            memory.add("I'm vegetarian and my sister lives in Lisbon", user_id="u1")
        with pytest.raises(InvalidIdentity):
            memory.add("x", infer=False)
    finally:
        memory.close()
    memory.close()  # closing twice is harmless


def test_memory_from_yaml_file(tmp_path: Path, embedder: Any) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"memory:\n  storage_uri: {tmp_path / 'db'}\n  hybrid_search: false\n")
    memory = AsyncMemory.from_config(path)
    assert memory.config.storage_uri == str(tmp_path / "db")
    assert memory.config.hybrid_search is False


async def test_open_is_idempotent_and_concurrent(storage_uri: str, embedder: Any) -> None:
    memory = AsyncMemory(MemoryConfig(storage_uri=storage_uri), embedder=embedder)
    try:
        await asyncio.gather(
            memory.open(), memory.open(), memory.add("x", user_id="u", infer=False)
        )
        assert memory.store is not None and memory.store.is_open
        assert texts_of(await memory.get_all(user_id="u")) == ["x"]
    finally:
        await memory.close()


# ---- with the fake upstream LLM ------------------------------------------------------------


@pytest.fixture
async def lmem(storage_uri: str, embedder: Any, fake_llm_config: dict[str, Any]) -> Any:
    config = MemoryConfig(storage_uri=storage_uri, llm=fake_llm_config)
    memory = AsyncMemory(config, embedder=embedder)
    yield memory
    await memory.close()


def test_acceptance_sync_memory_with_llm(tmp_path: Path, fake_llm_config: dict[str, Any]) -> None:
    m = Memory.from_config({"storage_uri": str(tmp_path / "db"), "llm": fake_llm_config})
    try:
        added = m.add("I'm vegetarian and my sister lives in Lisbon", user_id="u1")
        assert sorted((r["event"], r["memory"]) for r in added["results"]) == [
            ("ADD", "User is vegetarian"),
            ("ADD", "User's sister lives in Lisbon"),
        ]
        hits = m.search("where does my sister live?", user_id="u1")["results"]
        assert "Lisbon" in hits[0]["memory"]
        assert m.search("where does my sister live?", user_id="u2")["results"] == []
    finally:
        m.close()


async def test_llm_full_cycle_update(lmem: AsyncMemory, fake_llm: Any) -> None:
    first = await lmem.add("I live in Paris", user_id="u1")
    assert [(r["event"], r["memory"]) for r in first["results"]] == [("ADD", "User lives in Paris")]
    memory_id = first["results"][0]["id"]
    assert len(fake_llm.requests_of("extract")) == 1
    assert len(fake_llm.requests_of("update")) == 0  # nothing to compare with yet

    second = await lmem.add("I moved to Rome", user_id="u1")
    assert [
        (r["event"], r["id"], r["memory"], r.get("previous_memory")) for r in second["results"]
    ] == [("UPDATE", memory_id, "User lives in Rome", "User lives in Paris")]
    assert texts_of(await lmem.get_all(user_id="u1")) == ["User lives in Rome"]
    history = await lmem.history(memory_id)
    assert [(h["event"], h["old_memory"], h["new_memory"]) for h in history] == [
        ("ADD", None, "User lives in Paris"),
        ("UPDATE", "User lives in Paris", "User lives in Rome"),
    ]
    hits = await lmem.search("which city do I live in?", user_id="u1")
    assert texts_of(hits) == ["User lives in Rome"]

    # the update call saw only small ids, never the real uuid
    update_request = fake_llm.requests_of("update")[-1]
    assert memory_id not in json.dumps(update_request.body)
    assert offered(update_request.messages[-1]["content"]) == {"User lives in Paris": "0"}
    # JSON mode was requested for both calls
    for request in fake_llm.requests_of("extract") + fake_llm.requests_of("update"):
        assert request.body.get("response_format") == {"type": "json_object"}


async def test_llm_delete_decision(lmem: AsyncMemory) -> None:
    await lmem.add("I like sushi", user_id="u1")
    result = await lmem.add("I no longer like sushi", user_id="u1")
    events = [r["event"] for r in result["results"]]
    assert "DELETE" in events
    deleted = next(r for r in result["results"] if r["event"] == "DELETE")
    assert deleted["memory"] == "User likes sushi"
    assert "User likes sushi" not in texts_of(await lmem.get_all(user_id="u1"))
    assert [h["event"] for h in await lmem.history(deleted["id"])] == ["ADD", "DELETE"]


async def test_llm_exact_duplicate_short_circuits(lmem: AsyncMemory, fake_llm: Any) -> None:
    """mem0#1674: re-adding the same fact must not update or delete the memory."""
    first = await lmem.add("I live in Paris", user_id="u1")
    memory_id = first["results"][0]["id"]
    again = await lmem.add("I live in Paris", user_id="u1")
    assert again["results"] == []
    assert len(fake_llm.requests_of("update")) == 0  # no update call at all
    assert len(fake_llm.requests_of("extract")) == 2
    assert (await lmem.get(memory_id))["memory"] == "User lives in Paris"
    assert [h["event"] for h in await lmem.history(memory_id)] == ["ADD"]


async def test_llm_known_fact_next_to_a_new_one(lmem: AsyncMemory) -> None:
    await lmem.add("I live in Paris", user_id="u1")
    result = await lmem.add("I live in Paris and I'm vegetarian", user_id="u1")
    assert [(r["event"], r["memory"]) for r in result["results"]] == [("ADD", "User is vegetarian")]
    assert sorted(texts_of(await lmem.get_all(user_id="u1"))) == [
        "User is vegetarian",
        "User lives in Paris",
    ]


async def test_llm_invalid_json_every_attempt_fails_and_stores_nothing(
    lmem: AsyncMemory, fake_llm: Any
) -> None:
    fake_llm.set_failures(invalid_json_next=3)
    with pytest.raises(ExtractionError):
        await lmem.add("I'm vegetarian and my sister lives in Lisbon", user_id="u1")
    assert len(fake_llm.requests_of("extract")) == 3  # llm.attempts calls, no more
    assert (await lmem.get_all(user_id="u1"))["results"] == []


async def test_llm_invalid_json_once_is_retried(lmem: AsyncMemory, fake_llm: Any) -> None:
    fake_llm.set_failures(invalid_json_next=1)
    result = await lmem.add("I'm vegetarian", user_id="u1")
    assert texts_of(result) == ["User is vegetarian"]
    assert len(fake_llm.requests_of("extract")) == 2


async def test_llm_provider_error_is_extraction_error(lmem: AsyncMemory, fake_llm: Any) -> None:
    fake_llm.set_failures(fail_next=10, fail_status=400)
    with pytest.raises(ExtractionError):
        await lmem.add("I'm vegetarian", user_id="u1")
    assert (await lmem.get_all(user_id="u1"))["results"] == []


async def test_llm_bogus_ids_are_ignored(lmem: AsyncMemory, fake_llm: Any) -> None:
    paris = (await lmem.add("I live in Paris", user_id="u1"))["results"][0]["id"]
    other = (await lmem.add("I have a cat", user_id="u2"))["results"][0]["id"]
    result = await lmem.add("I like sushi [[bogus-id]] and I'm vegetarian", user_id="u1")
    update_answer = fake_llm.requests_of("update")
    assert update_answer, "the update call was made"
    assert [(r["event"], r["memory"]) for r in result["results"]] == [("ADD", "User is vegetarian")]
    assert sorted(texts_of(await lmem.get_all(user_id="u1"))) == [
        "User is vegetarian",
        "User lives in Paris",
    ]
    assert [h["event"] for h in await lmem.history(paris)] == ["ADD"]
    assert (await lmem.get(other))["memory"] == "User has a cat"


async def test_llm_prompt_carries_date_and_selective_rules(
    storage_uri: str, embedder: Any, fake_llm: Any, fake_llm_config: dict[str, Any]
) -> None:
    config = MemoryConfig(
        storage_uri=storage_uri,
        llm=fake_llm_config,
        include="food and family",
        exclude="passwords",
        categories=["diet", "family"],
    )
    memory = AsyncMemory(config, embedder=embedder)
    try:
        await memory.add(
            [
                {"role": "system", "content": "SYSTEM PROMPT TEXT"},
                {"role": "user", "content": "I'm vegetarian"},
                {"role": "assistant", "content": "Good to know"},
            ],
            user_id="u1",
            timestamp="2024-02-03T10:00:00Z",
        )
    finally:
        await memory.close()
    request = fake_llm.requests_of("extract")[-1]
    system = request.messages[0]["content"]
    user = request.messages[-1]["content"]
    assert "2024-02-03" in system and user.startswith("Exchange date: 2024-02-03")
    assert "Only record facts of this kind: food and family" in system
    assert "Never record facts of this kind: passwords" in system
    assert "Relevant categories: diet, family" in system
    assert "user: I'm vegetarian" in user and "assistant: Good to know" in user
    assert "SYSTEM PROMPT TEXT" not in user
    assert request.body["model"] == "fake-model"


async def test_llm_job_id_idempotency(lmem: AsyncMemory, fake_llm: Any) -> None:
    first = await lmem.add("I'm vegetarian", user_id="u1", job_id="job-1")
    assert texts_of(first) == ["User is vegetarian"]
    again = await lmem.add("I'm vegetarian", user_id="u1", job_id="job-1")
    assert again["results"] == []
    assert len(fake_llm.requests_of("extract")) == 1  # not even an LLM call


async def test_llm_users_stay_isolated(lmem: AsyncMemory) -> None:
    await lmem.add("I live in Paris", user_id="u1")
    result = await lmem.add("I moved to Rome", user_id="u2")
    # u1's Paris is not offered to u2's update: Rome is an ADD for u2
    assert [(r["event"], r["memory"]) for r in result["results"]] == [("ADD", "User lives in Rome")]
    assert texts_of(await lmem.get_all(user_id="u1")) == ["User lives in Paris"]
    assert texts_of(await lmem.get_all(user_id="u2")) == ["User lives in Rome"]


# ---- the update step with a scripted ChatLLM (no HTTP) -------------------------------------


class ScriptedChat:
    """A ChatLLM: fixed facts for the extraction call, scripted answers for the update call."""

    def __init__(self, facts: list[str], *updates: Any) -> None:
        self.facts = facts
        self.updates = list(updates)
        self.update_prompts: list[str] = []

    async def complete(self, messages: list[dict[str, Any]], *, call: CallOptions) -> str:
        assert call.schema_name in ("facts", "memory")
        if messages[0]["content"].startswith("You are memproxy's fact extractor."):
            return json.dumps({"facts": self.facts})
        self.update_prompts.append(messages[1]["content"])
        answer = self.updates.pop(0)
        if callable(answer):
            answer = answer(messages[1]["content"])
        return answer if isinstance(answer, str) else json.dumps(answer)


def offered(prompt: str) -> dict[str, str]:
    """text -> small id, from an update prompt."""
    block = prompt.split("<existing_memories>\n", 1)[1].split("\n</existing_memories>", 1)[0]
    return {item["text"]: item["id"] for item in json.loads(block)}


async def scripted(storage_uri: str, embedder: Any, chat: ScriptedChat) -> AsyncMemory:
    return AsyncMemory(MemoryConfig(storage_uri=storage_uri), embedder=embedder, llm=chat)


async def seeded(storage_uri: str, embedder: Any, facts: list[str], **kwargs: Any) -> list[str]:
    """Store ``facts`` for u1 through the LLM path; returns their ids."""
    memory = await scripted(storage_uri, embedder, ScriptedChat(facts))
    try:
        result = await memory.add("seed", user_id="u1", **kwargs)
        return [r["id"] for r in result["results"]]
    finally:
        await memory.close()


async def test_invalid_update_answer_applies_nothing(storage_uri: str, embedder: Any) -> None:
    await seeded(storage_uri, embedder, ["User lives in Paris"])
    chat = ScriptedChat(["User lives in Rome", "User is vegetarian"], "nope", "still nope")
    memory = await scripted(storage_uri, embedder, chat)
    try:
        with pytest.raises(ExtractionError):
            await memory.add("I moved to Rome and I'm vegetarian", user_id="u1")
        assert texts_of(await memory.get_all(user_id="u1")) == ["User lives in Paris"]
    finally:
        await memory.close()


async def test_update_step_applies_mixed_decisions(storage_uri: str, embedder: Any) -> None:
    facts = ["User lives in Paris", "User likes sushi"]
    await seeded(storage_uri, embedder, facts, metadata={"source": "a"})

    def decide(prompt: str) -> dict[str, Any]:
        ids = offered(prompt)
        assert set(ids) == {"User lives in Paris", "User likes sushi"}  # u2's row never offered
        return {
            "memory": [
                {"id": ids["User lives in Paris"], "text": "User lives in Rome", "event": "UPDATE"},
                {"id": ids["User likes sushi"], "text": "User likes sushi", "event": "DELETE"},
                {"id": "new", "text": "User is vegetarian", "event": "ADD"},
                {"id": "new2", "text": "User lives in Paris", "event": "ADD"},  # exists: skipped
                {"id": "42", "text": "hijack", "event": "UPDATE"},  # not offered: ignored
            ]
        }

    chat = ScriptedChat(["User lives in Rome", "User is vegetarian"], decide)
    memory = await scripted(storage_uri, embedder, chat)
    try:
        await memory.add("I have a cat", user_id="u2", infer=False)
        before = {i["memory"]: i for i in (await memory.get_all(user_id="u1"))["results"]}
        assert set(before) == set(facts)
        result = await memory.add("new exchange", user_id="u1", metadata={"source": "b"})
        assert sorted((r["event"], r["memory"]) for r in result["results"]) == [
            ("ADD", "User is vegetarian"),
            ("DELETE", "User likes sushi"),
            ("UPDATE", "User lives in Rome"),
        ]
        after = {i["memory"]: i for i in (await memory.get_all(user_id="u1"))["results"]}
        assert set(after) == {"User lives in Rome", "User is vegetarian"}
        rome = after["User lives in Rome"]
        assert rome["id"] == before["User lives in Paris"]["id"]
        assert rome["metadata"] == {"source": "b"}  # merged, new values win
        assert after["User is vegetarian"]["metadata"] == {"source": "b"}
        assert texts_of(await memory.get_all(user_id="u2")) == ["I have a cat"]
        sushi_id = before["User likes sushi"]["id"]
        assert [h["event"] for h in await memory.history(sushi_id)] == ["ADD", "DELETE"]
        hits = await memory.search("which city?", user_id="u1", limit=1)
        assert texts_of(hits) == ["User lives in Rome"]
    finally:
        await memory.close()


@pytest.mark.parametrize("decided", ["User is vegetarian", "User is a vegetarian"])
async def test_a_learning_job_that_died_before_its_history_writes_it_when_retried(
    storage_uri: str, embedder: Any, monkeypatch: pytest.MonkeyPatch, decided: str
) -> None:
    """The memory row was stored, the history write failed (LanceDB's "too many concurrent
    writers" on a shared store): the retried job finds the text already stored and must still
    record its ADD, under its own job id, once. ``decided``: the update step's ADD text, the
    extracted fact itself or its rewording (then only the decision's text is stored)."""
    await seeded(storage_uri, embedder, ["User likes tea"])

    def add_it(_prompt: str) -> dict[str, Any]:
        return {"memory": [{"id": "new", "text": decided, "event": "ADD"}]}

    chat = ScriptedChat(["User is vegetarian"], add_it, add_it, add_it)
    memory = await scripted(storage_uri, embedder, chat)
    await memory.open()
    store = memory.store
    inner = store.inner if isinstance(store, CachingStore) else store
    write_history = inner.add_history
    failures = ["once"]

    async def failing_once(rows: Any) -> None:
        if failures:
            failures.pop()
            raise StoreError("LanceDB write failed: Too many concurrent writers")
        await write_history(rows)

    monkeypatch.setattr(inner, "add_history", failing_once)
    try:
        with pytest.raises(StoreError):
            await memory.add("I'm vegetarian", user_id="u1", job_id="job-1")
        stored = {i["memory"]: i["id"] for i in (await memory.get_all(user_id="u1"))["results"]}
        assert set(stored) == {"User likes tea", decided}
        assert await memory.history(stored[decided]) == []
        assert not await inner.job_applied("job-1")

        again = await memory.add("I'm vegetarian", user_id="u1", job_id="job-1")
        assert again["results"] == []  # stored by the first run
        assert await inner.job_applied("job-1")
        history = await memory.history(stored[decided])
        assert [(h["event"], h["new_memory"]) for h in history] == [("ADD", decided)]
        assert (await memory.add("I'm vegetarian", user_id="u1", job_id="job-1"))["results"] == []
        assert len(await memory.history(stored[decided])) == 1
        assert sorted(texts_of(await memory.get_all(user_id="u1"))) == sorted(stored)
    finally:
        await memory.close()


async def test_update_to_the_same_text_is_a_no_op(storage_uri: str, embedder: Any) -> None:
    [memory_id] = await seeded(storage_uri, embedder, ["User lives in Paris"])

    def same(prompt: str) -> dict[str, Any]:
        small = offered(prompt)["User lives in Paris"]
        return {
            "memory": [
                {"id": small, "text": "User lives in Paris", "event": "UPDATE"},
                {"id": small, "text": "User lives in Paris, France", "event": "UPDATE"},
            ]
        }

    chat = ScriptedChat(["User lives in Paris, France"], same)
    memory = await scripted(storage_uri, embedder, chat)
    try:
        result = await memory.add("y", user_id="u1")
        assert result["results"] == []  # first decision wins; it changes nothing
        assert [h["event"] for h in await memory.history(memory_id)] == ["ADD"]
    finally:
        await memory.close()


async def test_no_facts_means_no_update_call(storage_uri: str, embedder: Any) -> None:
    chat = ScriptedChat([])
    memory = await scripted(storage_uri, embedder, chat)
    try:
        assert (await memory.add("hello!", user_id="u1"))["results"] == []
        assert chat.update_prompts == []
        assert (await memory.get_all(user_id="u1"))["results"] == []
    finally:
        await memory.close()
