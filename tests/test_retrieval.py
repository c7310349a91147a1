"""Search ranking: fusion, modes, recency, time ranges, the reranker protocol, and the token
budget of the recalled block (real default embedder, real LanceDB)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from memory_core import AsyncMemory, MemoryConfig
from memory_core.config import RerankerConfig, SearchConfig
from memory_core.fusion_weights import FEATURES
from memory_core.retrieval import (
    Fused,
    LiteLLMReranker,
    Ranking,
    Reranker,
    apply_recency,
    collect_candidates,
    fusion_weights,
    is_time_sensitive,
    mentioned_speakers,
    score_candidates,
    speaker_of,
    text_features,
)
from memory_core.scope_cache import CachingStore
from memory_core.storage import Selection
from memory_core.types import MemoryItem, Scope
from proxy.inject import build_memory_block, memory_line


# The textbook weighted reciprocal-rank fusion, as the oracle the shipped scorer must match.
def fuse_rankings(
    rankings: Sequence[Ranking],
    *,
    k: float = 60.0,
    weights: Sequence[float] | None = None,
) -> list[Fused]:
    """Weighted reciprocal-rank fusion: ``(row, similarity, fused)`` ordered by fused score.

    A row at 0-based ``rank`` in ranking ``i`` adds ``weights[i] / (k + rank + 1)``; rows are
    identified by ``id``; ties keep first-seen order (the first ranking's order).
    """
    fused: dict[str, list[Any]] = {}
    for index, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else float(weights[index])
        for rank, (row, similarity) in enumerate(ranking):
            entry = fused.setdefault(row["id"], [row, similarity, 0.0])
            entry[2] += weight / (k + rank + 1)
    ordered = sorted(fused.values(), key=lambda e: e[2], reverse=True)
    return [(row, similarity, score) for row, similarity, score in ordered]


def row(memory_id: str, created_at: str = "2024-01-01T00:00:00.000000+00:00") -> dict[str, Any]:
    return {"id": memory_id, "memory": memory_id, "created_at": created_at}


# ---- pure ranking functions ------------------------------------------------------------------


def test_rrf_sums_reciprocal_ranks_and_keeps_first_similarity() -> None:
    vector = [(row("a"), 0.9), (row("b"), 0.8), (row("c"), 0.7)]
    text = [(row("c"), 0.71), (row("d"), 0.5)]
    fused = fuse_rankings([vector, text], k=60)
    assert [r["id"] for r, _s, _f in fused] == ["c", "a", "b", "d"]
    by_id = {r["id"]: (s, f) for r, s, f in fused}
    assert by_id["c"][0] == 0.7  # the first ranking's similarity is kept
    assert by_id["c"][1] == pytest.approx(1 / 63 + 1 / 61)


def test_weighted_rrf_lets_one_ranking_win() -> None:
    vector = [(row("a"), 0.9), (row("b"), 0.8)]
    text = [(row("b"), 0.8), (row("a"), 0.9)]
    assert fuse_rankings([vector, text], k=10, weights=[1.0, 2.0])[0][0]["id"] == "b"
    assert fuse_rankings([vector, text], k=10, weights=[2.0, 1.0])[0][0]["id"] == "a"
    # Equal weights and a tie: the first ranking's order decides (stable).
    assert fuse_rankings([vector, text], k=10)[0][0]["id"] == "a"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Where does my sister live now?", True),
        ("What is my latest project?", True),
        ("Am I still vegetarian?", True),
        ("what do I currently drive", True),
        ("Where does my sister live?", False),
        ("What did I cook last summer?", False),
        ("Is the snow white?", False),
    ],
)
def test_time_sensitive_queries(query: str, expected: bool) -> None:
    assert is_time_sensitive(query) is expected


def test_recency_reorders_close_scores_only() -> None:
    old = row("old", "2024-01-01T00:00:00.000000+00:00")
    new = row("new", "2024-06-01T00:00:00.000000+00:00")
    close = [(old, 0.9, 1 / 61), (new, 0.9, 1 / 62)]
    boosted = apply_recency(close, weight=0.5, half_life_days=30, unit=1 / 61)
    assert [r["id"] for r, _s, _f in boosted] == ["new", "old"]
    far = [(old, 0.9, 2 / 61), (new, 0.9, 1 / 100)]
    assert apply_recency(far, weight=0.5, half_life_days=30, unit=1 / 61)[0][0]["id"] == "old"
    assert apply_recency(close, weight=0.0, half_life_days=30, unit=1 / 61) == close


# ---- search through AsyncMemory --------------------------------------------------------------

FACTS = [
    ("User lives in Lisbon", "2023-01-10T09:00:00Z"),
    ("User lives in Porto", "2024-05-02T09:00:00Z"),
    ("User's sister is a nurse in Madrid", "2023-06-01T09:00:00Z"),
    ("User plays the cello in a community orchestra", "2023-09-15T09:00:00Z"),
    ("User is allergic to peanuts", "2024-02-20T09:00:00Z"),
    ("User's dog Bolt is a border collie", "2022-11-30T09:00:00Z"),
]


async def make_memory(path: Path, embedder: Any, **search: Any) -> AsyncMemory:
    memory = AsyncMemory(MemoryConfig(storage_uri=str(path), search=search), embedder=embedder)
    for text, when in FACTS:
        await memory.add(text, user_id="u", infer=False, timestamp=when)
    return memory


@pytest.fixture
async def mem(tmp_path: Path, embedder: Any) -> Any:
    memory = await make_memory(tmp_path / "db", embedder)
    yield memory
    await memory.close()


@pytest.mark.parametrize("mode", ["hybrid", "vector", "text"])
async def test_every_mode_finds_the_fact(mode: str, tmp_path: Path, embedder: Any) -> None:
    memory = await make_memory(tmp_path / "db", embedder, mode=mode)
    try:
        found = (await memory.search("cello orchestra", user_id="u", limit=3))["results"]
        assert found[0]["memory"] == "User plays the cello in a community orchestra"
        assert all("score" in item for item in found)
        if mode == "text":  # BM25 only returns memories sharing a word with the query
            assert len(found) == 1
    finally:
        await memory.close()


async def test_config_from_yaml_sets_search_defaults(tmp_path: Path) -> None:
    path = tmp_path / "memory.yaml"
    path.write_text(
        "memory:\n  storage_uri: ./x\n  search:\n    mode: vector\n    rrf_k: 10\n"
        "    text_weight: 1.5\n    recency_weight: 0.3\n  duplicate_threshold: 0.9\n"
    )
    config = MemoryConfig.parse(path)
    assert config.search.mode == "vector"
    assert config.search.rrf_k == 10
    assert config.search.text_weight == 1.5
    assert config.search.recency_weight == 0.3
    assert config.duplicate_threshold == 0.9


async def test_recency_weight_prefers_the_newer_fact(tmp_path: Path, embedder: Any) -> None:
    plain = await make_memory(tmp_path / "a", embedder)
    recent = await make_memory(tmp_path / "b", embedder, recency_weight=2.0)
    try:
        query = "Which city does the user live in now?"
        top_recent = (await recent.search(query, user_id="u", limit=2))["results"]
        assert top_recent[0]["memory"] == "User lives in Porto"
        # The same first search on the plain memory: both rankings below then come from the
        # scope cache (a scope's first search ranks in LanceDB, whose BM25 can order
        # near-ties of unrelated memories differently; the cache loads after it).
        top_plain = (await plain.search(query, user_id="u", limit=2))["results"]
        assert top_plain[0]["memory"] != "User lives in Porto"
        for memory in (plain, recent):  # the loads start after a first search: wait for both
            store = memory.store
            assert isinstance(store, CachingStore)
            await store.cache.loads()
        # Not time-sensitive: no boost, the plain ranking.
        other = "Which city does the user live in?"
        assert [m["memory"] for m in (await recent.search(other, user_id="u"))["results"]] == [
            m["memory"] for m in (await plain.search(other, user_id="u"))["results"]
        ]
    finally:
        await plain.close()
        await recent.close()


async def test_time_range_filters(mem: AsyncMemory) -> None:
    in_2023 = {"created_at": {"gte": "2023-01-01T00:00:00Z", "lt": "2024-01-01T00:00:00Z"}}
    found = (await mem.search("where does the user live", user_id="u", filters=in_2023))["results"]
    assert {m["memory"] for m in found} == {
        "User lives in Lisbon",
        "User's sister is a nurse in Madrid",
        "User plays the cello in a community orchestra",
    }
    assert all(m["created_at"].startswith("2023") for m in found)
    since = {"created_at": {"gte": "2024-03-01T00:00:00Z"}}
    found = (await mem.search("where does the user live", user_id="u", filters=since))["results"]
    assert [m["memory"] for m in found] == ["User lives in Porto"]
    listed = (await mem.get_all(user_id="u", filters={"created_at": {"lte": "2022-12-31"}}))[
        "results"
    ]
    assert [m["memory"] for m in listed] == ["User's dog Bolt is a border collie"]


class ReverseReranker:
    """A reranker that puts the fused order upside down (to see that it is applied)."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    async def rerank(self, query: str, items: list[MemoryItem]) -> list[MemoryItem]:
        self.seen.append(len(items))
        return list(reversed(items))


class BrokenReranker:
    async def rerank(self, query: str, items: list[MemoryItem]) -> list[MemoryItem]:
        raise RuntimeError("provider down")


async def test_reranker_protocol_reorders_the_candidates(tmp_path: Path, embedder: Any) -> None:
    reranker = ReverseReranker()
    assert isinstance(reranker, Reranker)
    memory = AsyncMemory(
        MemoryConfig(storage_uri=str(tmp_path / "db")), embedder=embedder, reranker=reranker
    )
    try:
        for text, when in FACTS:
            await memory.add(text, user_id="u", infer=False, timestamp=when)
        fused = AsyncMemory(
            MemoryConfig(storage_uri=str(tmp_path / "db")), embedder=embedder, store=memory.store
        )
        everything = (await fused.search("cello", user_id="u", limit=6))["results"]
        found = (await memory.search("cello", user_id="u", limit=2))["results"]
        # The reranker saw every candidate (up to its depth) and its order is the answer.
        assert reranker.seen == [len(FACTS)]
        assert [m["id"] for m in found] == [m["id"] for m in reversed(everything)][:2]
    finally:
        await memory.close()


async def test_a_failing_reranker_falls_back_to_the_fused_order(
    mem: AsyncMemory, embedder: Any
) -> None:
    broken = AsyncMemory(mem.config, embedder=embedder, store=mem.store, reranker=BrokenReranker())
    expected = (await mem.search("cello", user_id="u", limit=3))["results"]
    found = (await broken.search("cello", user_id="u", limit=3))["results"]
    assert [m["id"] for m in found] == [m["id"] for m in expected]


async def test_litellm_reranker_maps_indices(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    class FakeLiteLLM:
        async def arerank(self, **kwargs: Any) -> dict[str, Any]:
            calls.append(kwargs)
            # Out-of-range and repeated indices are ignored; missing items keep their order.
            return {"results": [{"index": 2}, {"index": 7}, {"index": 2}, {"index": 0}]}

    monkeypatch.setattr("memory_core.litellm_loader.get_litellm", lambda: FakeLiteLLM())
    reranker = LiteLLMReranker(RerankerConfig(model="cohere/rerank-v3.5", api_key="k"))
    items = [MemoryItem(id=str(i), memory=f"m{i}") for i in range(4)]
    ranked = await reranker.rerank("q", items)
    assert [m["id"] for m in ranked] == ["2", "0", "1", "3"]
    assert calls[0]["model"] == "cohere/rerank-v3.5"
    assert calls[0]["documents"] == ["m0", "m1", "m2", "m3"]
    assert calls[0]["top_n"] == 4


# ---- token budget of the injected block ----------------------------------------------------


async def test_the_most_relevant_memories_survive_the_budget(mem: AsyncMemory) -> None:
    from proxy.inject import default_token_counter

    count = default_token_counter()
    found = (await mem.search("What instrument does the user play?", user_id="u"))["results"]
    assert found[0]["memory"] == "User plays the cello in a community orchestra"
    alone, _ = build_memory_block(found[:1], max_tokens=1000, count_tokens=count)
    assert alone is not None
    for budget in range(0, 200, 7):
        block, kept = build_memory_block(found, max_tokens=budget, count_tokens=count)
        if block is None:
            assert budget < count(alone)
            continue
        assert count(block) <= budget
        # Whenever the best memory fits, it is kept, first.
        if budget >= count(alone):
            assert block.splitlines()[2] == memory_line(found[0])
    block, kept = build_memory_block(found, max_tokens=count(alone) + 10, count_tokens=count)
    assert block is not None and 0 < kept < len(found)


# ---- context and speakers ----------------------------------------------------------------------


async def test_context_is_searchable_but_not_stored(tmp_path: Path, embedder: Any) -> None:
    config = MemoryConfig(storage_uri=str(tmp_path / "db"), search={"mode": "text"})
    memory = AsyncMemory(config, embedder=embedder)
    try:
        await memory.add("Cello lessons on Mondays", user_id="u", infer=False)
        added = await memory.add(
            "Yes, last Sunday!",
            user_id="u",
            infer=False,
            context="Did you run the charity marathon?",
        )
        (result,) = added["results"]
        assert result["memory"] == "Yes, last Sunday!"
        found = (await memory.search("charity marathon", user_id="u"))["results"]
        assert [m["memory"] for m in found] == ["Yes, last Sunday!"]
        assert (await memory.get(result["id"]))["memory"] == "Yes, last Sunday!"
        # A new text replaces what is indexed: the old context no longer matches.
        await memory.update(result["id"], "No, I skipped it")
        assert (await memory.search("charity marathon", user_id="u"))["results"] == []
        with pytest.raises(Exception, match="context"):
            await memory.add("x", user_id="u", infer=False, context=42)  # type: ignore[arg-type]
    finally:
        await memory.close()


async def test_context_reaches_the_extractor_as_background(
    tmp_path: Path, embedder: Any, fake_llm_config: dict[str, Any], fake_llm: Any
) -> None:
    config = MemoryConfig(storage_uri=str(tmp_path / "db"), llm=fake_llm_config)
    memory = AsyncMemory(config, embedder=embedder)
    try:
        await memory.add("I have a dog named Rex.", user_id="u", context="user: I live in Lisbon.")
        stored = [m["memory"] for m in (await memory.get_all(user_id="u"))["results"]]
        assert stored == ["User has a dog named Rex"]  # nothing learned from the context
        prompt = fake_llm.requests_of("extract")[0].messages[-1]["content"]
        assert "<context>\nuser: I live in Lisbon.\n</context>" in prompt
    finally:
        await memory.close()


def test_speaker_labels_and_mentions() -> None:
    assert speaker_of("Caroline: I went to a support group") == "Caroline"
    assert speaker_of("Mary Ann: hi") == "Mary Ann"
    assert speaker_of("User lives in Lisbon: a nice city") is None
    assert speaker_of("12:30 is lunch") is None
    labels = [speaker_of(t) for t in ["Caroline: I paint", "Melanie: I swim", "A note"]]
    assert mentioned_speakers("What did Melanie paint?", labels) == {"Melanie"}
    # No speaker named, or every speaker named: no signal.
    assert mentioned_speakers("What was painted?", labels) == set()
    assert mentioned_speakers("Did Caroline and Melanie paint?", labels) == set()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Caroline: What did you do?", {"question": 1.0, "asks": 1.0, "digits": 0.0}),
        ("Melanie: Is it ok? I think so.", {"question": 0.0, "asks": 1.0}),
        ("User moved to Lisbon in 2021", {"question": 0.0, "names": 1.0, "digits": 1.0}),
        ("Jon: Gina and I met Anna in Paris", {"names": 2.0}),  # the first word is not counted
        ("hi", {"length": math.log1p(1), "names": 0.0}),
    ],
)
def test_text_features(text: str, expected: dict[str, float]) -> None:
    features = text_features(text)
    for name, value in expected.items():
        assert features[name] == pytest.approx(value), name


def test_candidates_carry_every_feature_and_rrf_weights_are_rrf() -> None:
    vector = [(row("a"), 0.9), (row("b"), 0.8)]
    text = [(row("b"), 0.8), (row("c"), 0.4)]
    candidates = collect_candidates(
        "cello", {"vector": vector, "text": text}, text_scores={"b": 4.0, "c": 2.0}, k=10
    )
    assert [c.row["id"] for c in candidates] == ["a", "b", "c"]
    by_id = {c.row["id"]: c.features for c in candidates}
    assert all(set(f) == set(FEATURES) for f in by_id.values())
    assert by_id["a"]["text_rank"] == 0.0 and by_id["a"]["vector_rank"] == 1 / 11
    assert by_id["b"]["text_rank"] == 1 / 11 and by_id["b"]["vector_rank"] == 1 / 12
    assert by_id["c"]["text_score"] == 0.5 and by_id["b"]["text_score"] == 1.0
    assert by_id["c"]["similarity"] == 0.4
    rrf = fusion_weights(SearchConfig(fusion="rrf", rrf_k=10))
    scored = score_candidates(candidates, rrf)
    expected = fuse_rankings([vector, text], k=10)
    assert [c.row["id"] for c in scored] == [r["id"] for r, _s, _f in expected]
    assert [c.score for c in scored] == pytest.approx([f for _r, _s, f in expected])


def test_speaker_feature_lifts_the_named_speaker() -> None:
    ranking = [
        ({"id": "1", "memory": "Caroline: I love painting sunsets"}, 0.9),
        ({"id": "2", "memory": "Melanie: I painted a lake last week"}, 0.8),
        ({"id": "3", "memory": "A note without a speaker"}, 0.7),
    ]
    candidates = collect_candidates("What did Melanie paint?", {"vector": ranking}, k=10)
    rrf = fusion_weights(SearchConfig(fusion="rrf"))
    assert [c.row["id"] for c in score_candidates(candidates, rrf)] == ["2", "1", "3"]
    off = fusion_weights(SearchConfig(fusion="rrf", speaker_weight=0))
    assert [c.row["id"] for c in score_candidates(candidates, off)] == ["1", "2", "3"]
    learned_off = fusion_weights(SearchConfig(speaker_weight=0))
    assert "speaker" not in learned_off


def test_fusion_weights_are_validated() -> None:
    assert fusion_weights(SearchConfig(weights={"similarity": 2.0})) == {"similarity": 2.0}
    with pytest.raises(ValueError, match="unknown fusion features"):
        SearchConfig(weights={"similarty": 2.0})


async def test_table_without_search_text_is_upgraded(tmp_path: Path, embedder: Any) -> None:
    """A memories table written before the full-text column existed gets it on open."""
    import lancedb
    import pyarrow as pa

    from memory_core.store_schema import memories_schema

    old_schema = pa.schema(
        [f for f in memories_schema(embedder.dimension) if f.name != "search_text"]
    )
    vector = (await embedder.embed(["User plays the cello"], purpose="passage"))[0]
    db = await lancedb.connect_async(str(tmp_path / "db"))
    stamp = "2024-01-01T00:00:00.000000+00:00"
    row = {
        "id": "m1",
        "user_id": "u",
        "agent_id": None,
        "run_id": None,
        "memory": "User plays the cello",
        "hash": "h",
        "vector": vector.tolist(),
        "metadata": "{}",
        "categories": [],
        "created_at": stamp,
        "updated_at": stamp,
    }
    await db.create_table("memories", data=pa.Table.from_pylist([row], schema=old_schema))
    memory = AsyncMemory(
        MemoryConfig(storage_uri=str(tmp_path / "db"), search={"mode": "text"}), embedder=embedder
    )
    try:
        found = (await memory.search("cello", user_id="u"))["results"]
        assert [m["id"] for m in found] == ["m1"]
    finally:
        await memory.close()


async def test_fusion_weights_decide_the_hybrid_order(tmp_path: Path, embedder: Any) -> None:
    by_similarity = await make_memory(tmp_path / "a", embedder, weights={"similarity": 1.0})
    reversed_order = await make_memory(tmp_path / "b", embedder, weights={"similarity": -1.0})
    try:
        query = "where does the user live"
        up = [m["score"] for m in (await by_similarity.search(query, user_id="u"))["results"]]
        down = [m["score"] for m in (await reversed_order.search(query, user_id="u"))["results"]]
        assert len(up) == len(FACTS)
        assert up == sorted(up, reverse=True)
        assert down == sorted(down)
    finally:
        await by_similarity.close()
        await reversed_order.close()


async def test_search_candidates_expose_what_the_fusion_weighs(mem: AsyncMemory) -> None:
    await mem.open()
    candidates = await mem.searcher.candidates("cello orchestra", Selection(Scope("u")))
    assert len(candidates) == len(FACTS)  # every memory is within the vector ranking's depth
    assert all(set(c.features) == set(FEATURES) for c in candidates)
    cello = next(c for c in candidates if "cello" in c.row["memory"])
    assert cello.features["text_rank"] == 1 / (mem.config.search.rrf_k + 1)
    assert cello.features["text_score"] == 1.0
    others = [c for c in candidates if c is not cello]
    assert all(c.features["text_rank"] == 0.0 for c in others)
    assert all(c.row["user_id"] == "u" for c in candidates)
