"""The same memory scenario through ``AsyncMemory`` on both implementations of the storage
boundary: LanceDB and the in-memory store of the tests. The facade, writer and searcher are
the same code; only the ``Store`` differs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from memory_core import AsyncMemory, MemoryConfig, NotFound, Store
from memory_core.llm_client import CallOptions
from tests.conftest import HashEmbedder
from tests.memory_store import InMemoryStore


class ScriptedLLM:
    """Extraction: the user's lines become facts. Update: every new fact is an ADD."""

    async def complete(self, messages: list[dict[str, Any]], *, call: CallOptions) -> str:
        text = messages[-1]["content"]
        if "<new_facts>" in text:
            facts = orjson.loads(text.split("<new_facts>")[1].split("</new_facts>")[0])
            decisions = [{"id": f"new-{i}", "text": f, "event": "ADD"} for i, f in enumerate(facts)]
            return orjson.dumps({"memory": decisions}).decode()
        conversation = text.split("<conversation>")[1].split("</conversation>")[0]
        facts = [line[6:] for line in conversation.strip().splitlines() if line.startswith("user:")]
        return orjson.dumps({"facts": facts}).decode()


@pytest.fixture(params=["lancedb", "in-memory"])
async def memory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncMemory]:
    store: Store | None = InMemoryStore() if request.param == "in-memory" else None
    config = MemoryConfig(storage_uri=str(tmp_path / "db"), search={"mode": "vector"})
    mem = AsyncMemory(config, embedder=HashEmbedder(), store=store, llm=ScriptedLLM())
    await mem.open()
    yield mem
    await mem.close()


async def test_the_same_scenario_on_every_store(memory: AsyncMemory) -> None:
    added = await memory.add(
        ["User likes tea", "User lives in Lisbon", "User likes tea"], user_id="u", infer=False
    )
    assert [r["event"] for r in added["results"]] == ["ADD", "ADD"]
    assert (await memory.add("User likes tea", user_id="u", infer=False))["results"] == []
    await memory.add("Other user's secret", user_id="v", infer=False)

    listed = (await memory.get_all(user_id="u"))["results"]
    assert {m["memory"] for m in listed} == {"User likes tea", "User lives in Lisbon"}
    found = (await memory.search("User lives in Lisbon", user_id="u", limit=1))["results"]
    assert found[0]["memory"] == "User lives in Lisbon" and found[0]["score"] > 0.99

    tea = next(m for m in listed if m["memory"] == "User likes tea")
    updated = await memory.update(tea["id"], "User likes green tea", metadata={"k": 1})
    assert updated["memory"] == "User likes green tea" and updated["metadata"] == {"k": 1}
    await memory.delete(tea["id"])
    with pytest.raises(NotFound):
        await memory.get(tea["id"])
    events = [h["event"] for h in await memory.history(tea["id"])]
    assert events == ["ADD", "UPDATE", "DELETE"]

    learned = await memory.add(
        [{"role": "user", "content": "I play the cello"}], user_id="u", job_id="job-1"
    )
    assert [r["event"] for r in learned["results"]] == ["ADD"]
    again = await memory.add(
        [{"role": "user", "content": "I play the cello"}], user_id="u", job_id="job-1"
    )
    assert again["results"] == []  # the job was applied before

    records = [{"id": "imp-1", "memory": "Imported fact", "user_id": "w"}]
    assert await memory.import_memories(records) == ["imported"]
    assert await memory.import_memories(records) == ["exists"]
    assert (await memory.delete_all(user_id="u"))["deleted"] == 2
    assert (await memory.get_all(user_id="v"))["results"][0]["memory"] == "Other user's secret"


async def test_stores_opening_one_new_data_dir_at_once_all_open(tmp_path: Path) -> None:
    """Replicas starting together race to create the same tables (one is listed before its
    first commit) and the same indexes (commit conflicts); every one opens. One round races
    rarely, so several fresh data dirs are opened."""
    from memory_core.store import LanceStore

    for round_ in range(6):
        stores = [LanceStore(str(tmp_path / f"shared-{round_}"), 8) for _ in range(6)]
        try:
            await asyncio.gather(*(store.open() for store in stores))
            assert all(store.is_open for store in stores)
        finally:
            for store in stores:
                if store.is_open:
                    await store.close()
