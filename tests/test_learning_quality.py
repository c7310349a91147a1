"""No junk, no near-duplicates: the real ``add(infer=True)`` pipeline against the scripted fake
LLM, on the labelled exchanges of tests/data/junk_corpus.json (real default embedder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memory_core import AsyncMemory, MemoryConfig
from memory_core.duplicates import is_near_duplicate

CORPUS = json.loads((Path(__file__).parent / "data" / "junk_corpus.json").read_text("utf-8"))
CASES = CORPUS["cases"]


@pytest.fixture
async def learner(storage_uri: str, embedder: Any, fake_llm_config: dict[str, Any]) -> Any:
    memory = AsyncMemory(
        MemoryConfig(storage_uri=storage_uri, llm=fake_llm_config), embedder=embedder
    )
    await memory.open()
    yield memory
    await memory.close()


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
async def test_learning_decisions(
    case: dict[str, Any], learner: AsyncMemory, fake_llm: Any
) -> None:
    user = "u-" + str(abs(hash(case["name"])))
    for exchange in case.get("before", []):
        await learner.add(exchange, user_id=user)
    fake_llm.reset()

    result = await learner.add(case["messages"], user_id=user)

    events = sorted(r["event"] for r in result["results"])
    assert events == sorted(case["events"]), result
    stored = sorted(m["memory"] for m in (await learner.get_all(user_id=user))["results"])
    assert stored == sorted(case["memories"])
    for junk in case["not_learned"]:
        assert not any(junk.lower() in text.lower() for text in stored), (junk, stored)
    if "llm_calls" in case:
        assert len(fake_llm.requests_of("extract")) == case["llm_calls"]


def test_corpus_covers_every_kind_of_junk() -> None:
    kinds = {case["kind"] for case in CASES}
    assert {
        "greeting",
        "question",
        "assistant_generic",
        "task_prompt",
        "memory_block",
        "near_duplicate",
        "distinct",
    } <= kinds


async def test_duplicate_threshold_separates_the_labelled_pairs(embedder: Any) -> None:
    """The default threshold merges every labelled paraphrase and no pair of different facts."""
    threshold = MemoryConfig().duplicate_threshold
    assert threshold is not None
    pairs = CORPUS["embedding_pairs"]

    async def similarity(a: str, b: str) -> float:
        vectors = await embedder.embed([a, b], purpose="passage")
        return float(np.dot(vectors[0], vectors[1]))

    for a, b in pairs["near_duplicates"]:
        assert is_near_duplicate(await similarity(a, b), b, a, threshold), (a, b)
    for a, b in pairs["distinct"]:
        assert not is_near_duplicate(await similarity(a, b), b, a, threshold), (a, b)


async def test_guard_can_be_turned_off(
    storage_uri: str, embedder: Any, fake_llm_config: dict[str, Any]
) -> None:
    config = MemoryConfig(storage_uri=storage_uri, llm=fake_llm_config, duplicate_threshold=None)
    memory = AsyncMemory(config, embedder=embedder)
    try:
        await memory.add("I love hiking.", user_id="u")
        await memory.add("I enjoy hiking.", user_id="u")
        stored = sorted(m["memory"] for m in (await memory.get_all(user_id="u"))["results"])
        assert stored == ["User enjoys hiking", "User loves hiking"]
    finally:
        await memory.close()


async def test_contradiction_is_not_swallowed_by_the_guard(learner: AsyncMemory) -> None:
    """A fact the LLM deletes/updates is not a duplicate target for the new text."""
    await learner.add("I live in Lisbon.", user_id="mover")
    result = await learner.add("I moved to Porto.", user_id="mover")
    assert [r["event"] for r in result["results"]] == ["UPDATE"]
    stored = [m["memory"] for m in (await learner.get_all(user_id="mover"))["results"]]
    assert stored == ["User lives in Porto"]


async def test_relative_dates_get_the_exchange_date(learner: AsyncMemory, fake_llm: Any) -> None:
    """Each memory keeps when it was said; the extractor is told that date to resolve
    "yesterday" against."""
    await learner.add(
        "I ran my first marathon yesterday.", user_id="runner", timestamp="2024-03-10T18:30:00Z"
    )
    prompt = json.dumps(fake_llm.requests_of("extract")[0].messages)
    assert "2024-03-10" in prompt
    (item,) = (await learner.get_all(user_id="runner"))["results"]
    assert item["created_at"].startswith("2024-03-10")
