"""``python -m bench graph``: graph memory measured (docs/graph.md).

1. LoCoMo recall@10 per category, graph walk on vs off in the same run, tune and held-out
   halves apart. Every turn is stored verbatim (as ``bench locomo`` does) and the graph is
   learned from the turns by a **scripted** graph builder (no real model is reachable here):
   each turn gives ``speaker -mentions-> Name`` for the capitalised names it contains. The
   LLM cost per learned exchange is counted on the real prompts (tiktoken cl100k).
2. Latency of the graph walk (``GraphMemory.recall``) for one user holding 1k / 10k / 100k
   entities (twice as many relations), synthetic names and random unit vectors.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.common import stamp, table, write_section
from bench.locomo import (
    CATEGORIES,
    DEFAULT_DATA,
    Sample,
    Scores,
    cached_local_embedder,
    load_samples,
    shipped_search_config,
    split_samples,
    turn_context,
    turn_text,
)
from memory_core.graph_prompts import GRAPH_SCHEMA, build_graph_messages
from memory_core.llm_client import CallOptions
from memory_core.types import Message

SIZES = (1_000, 10_000, 100_000)
ONE_CALL = CallOptions("graph", GRAPH_SCHEMA, 0)
FACTS_PER_JOB = 20  # turns given to one graph call when loading a conversation
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b([A-Z][a-z]+(?: [A-Z][a-z]+)*)\b")
_NOT_NAMES = frozenset("I Im Oh Wow Hey Hi Yes No Thanks Thank Yeah Sure Absolutely".split())


class ScriptedGraphBuilder:
    """Answers memproxy's graph prompt from its numbered facts: each ``Speaker: text`` turn
    gives ``Speaker -mentions-> Name`` per capitalised name in the text. Counts tokens."""

    model = "scripted-graph-builder"

    def __init__(self, count_tokens: Any) -> None:
        self._count = count_tokens
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    async def complete(self, messages: list[Message], *, call: CallOptions) -> str:
        text = str(messages[-1]["content"])
        relations = []
        for number, fact in re.findall(r"^(\d+)\. (.*)$", text, re.M):
            speaker, _, said = fact.partition(": ")
            for name in dict.fromkeys(_NAME.findall(said)):
                if name not in _NOT_NAMES and name != speaker:
                    relations.append(
                        {
                            "source": speaker,
                            "relation": "mentions",
                            "target": name,
                            "fact": int(number),
                        }
                    )
        answer = orjson.dumps({"entities": [], "relations": relations}).decode()
        self.calls += 1
        self.prompt_tokens += sum(self._count(str(m["content"])) for m in messages)
        self.completion_tokens += self._count(answer)
        return answer


async def locomo(samples: Sequence[Sample], embedder: Any, workdir: Path | None) -> dict[str, Any]:
    from memory_core import AsyncMemory, MemoryConfig
    from memory_core.config import GraphConfig
    from memory_core.graph_learn import StoredFact
    from memory_core.types import Scope
    from proxy.inject import default_token_counter

    builder = ScriptedGraphBuilder(default_token_counter())
    scores = {"off": Scores(), "on": Scores()}
    root = Path(tempfile.mkdtemp(prefix="graph-locomo-", dir=workdir))
    single_turn_prompts: list[int] = []
    try:
        for sample in samples:
            config = MemoryConfig(
                storage_uri=str(root / sample.sample_id),
                search=MemoryConfig().search.model_copy(update=shipped_search_config()),
                graph=GraphConfig(enabled=True),
            )
            memory = AsyncMemory(config, embedder=embedder)
            await memory.open()
            graph = memory.graph
            assert graph is not None
            scope = Scope(sample.sample_id)
            for session in sample.sessions:
                facts: list[StoredFact] = []
                for index, turn in enumerate(session):
                    # Stored as ``bench locomo`` stores it: the shipped search, one turn of
                    # context.
                    added = await memory.add(
                        turn_text(turn),
                        user_id=sample.sample_id,
                        infer=False,
                        timestamp=turn.when,
                        metadata={"dia_id": turn.dia_id},
                        context=turn_context(session, index, 1, caption=True),
                    )
                    facts += [StoredFact(r["memory"], r["id"]) for r in added["results"]]
                for start in range(0, len(facts), FACTS_PER_JOB):
                    await graph.learn(
                        scope,
                        facts[start : start + FACTS_PER_JOB],
                        [],
                        builder,
                        when=session[0].when.isoformat(),
                        job_id=None,
                    )
                if facts:  # what one learned exchange (its one fact) costs in the prompt
                    before = builder.prompt_tokens
                    await builder.complete(build_graph_messages([facts[0].text]), call=ONE_CALL)
                    single_turn_prompts.append(builder.prompt_tokens - before)
            for qa in sample.qa:
                for mode, walk in (("off", False), ("on", True)):
                    found = await memory.search(
                        qa.question, user_id=sample.sample_id, limit=20, graph=walk
                    )
                    ranked = [item["metadata"].get("dia_id", "") for item in found["results"]]
                    scores[mode].add(qa.category, ranked, qa.evidence)
            await memory.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "scores": scores,
        "prompt_tokens_one_fact": float(np.mean(single_turn_prompts)) if single_turn_prompts else 0,
        "calls": builder.calls,
        "prompt_tokens": builder.prompt_tokens,
        "completion_tokens": builder.completion_tokens,
    }


async def walk_latency(size: int, dimension: int, workdir: Path | None) -> dict[str, float]:
    """p50/p99 ms of ``GraphMemory.recall`` for one user of ``size`` entities."""
    from memory_core.config import GraphConfig
    from memory_core.graph import GraphMemory
    from memory_core.graph_store import GraphStore
    from memory_core.types import Scope

    rng = np.random.default_rng(size)
    root = Path(tempfile.mkdtemp(prefix="graph-latency-", dir=workdir))
    try:
        store = GraphStore(str(root), dimension)
        await store.open()

        def unit(rows: int) -> np.ndarray[Any, Any]:
            vectors = rng.standard_normal((rows, dimension)).astype(np.float32)
            return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

        stamp_ = "2026-01-01T00:00:00.000000+00:00"
        names = [f"Entity {i}" for i in range(size)]
        vectors = unit(size)
        for start in range(0, size, 20_000):
            await store.add_entities(
                [
                    {
                        "id": f"e{i}",
                        "user_id": "u",
                        "name": names[i],
                        "name_key": names[i].lower(),
                        "type": "thing",
                        "vector": vectors[i],
                        "created_at": stamp_,
                        "updated_at": stamp_,
                    }
                    for i in range(start, min(size, start + 20_000))
                ]
            )
        edges = rng.integers(0, size, (2 * size, 2))
        rel_vectors = unit(2 * size)
        for start in range(0, 2 * size, 20_000):
            await store.add_relations(
                [
                    {
                        "id": f"r{j}",
                        "user_id": "u",
                        "source_id": f"e{a}",
                        "source": names[a],
                        "relation": "knows",
                        "target_id": f"e{b}",
                        "target": names[b],
                        "text": f"{names[a]} knows {names[b]}",
                        "vector": rel_vectors[j],
                        "memory_ids": [f"m{j}"],
                        "valid_from": stamp_,
                        "invalid_at": None,
                        "job_id": None,
                        "created_at": stamp_,
                        "updated_at": stamp_,
                    }
                    for j, (a, b) in enumerate(edges[start : start + 20_000], start=start)
                ]
            )
        await store.optimize()  # fold the rows into the indexes, as maintenance does
        graph = GraphMemory(store, _no_embed, GraphConfig(enabled=True))
        queries = [f"What does Entity {int(i)} do?" for i in rng.integers(0, size, 40)]
        query_vectors = unit(len(queries))
        await graph.recall(queries[0], query_vectors[0], Scope("u"))  # warm
        timings = []
        for query, vector in zip(queries, query_vectors, strict=True):
            started = time.perf_counter()
            await graph.recall(query, vector, Scope("u"))
            timings.append((time.perf_counter() - started) * 1000)
        return {"p50": float(np.percentile(timings, 50)), "p99": float(np.percentile(timings, 99))}
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _no_embed(texts: Sequence[str]) -> np.ndarray[Any, Any]:
    raise AssertionError("the walk embeds nothing")


def recall_rows(scores: dict[str, Scores]) -> list[list[Any]]:
    rows = []
    for category in [*CATEGORIES, None]:
        name = "overall" if category is None else f"{category} {CATEGORIES[category]}"
        off, on = scores["off"].mean(category, 10), scores["on"].mean(category, 10)
        rows.append(
            [name, scores["off"].count(category), f"{off:.3f}", f"{on:.3f}", f"{on - off:+.3f}"]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench graph", description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--parts", default="locomo,latency", help="locomo, latency or both")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    samples = load_samples(args.data)
    embedder = cached_local_embedder()
    parts = []
    wanted = set(args.parts.split(","))
    for split in ("tune", "holdout") if "locomo" in wanted else ():
        measured = asyncio.run(locomo(split_samples(samples, split), embedder, args.workdir))
        parts.append(f"LoCoMo {split} half, recall@10 (graph walk off vs on, same run):\n\n")
        parts.append(
            table(["category", "questions", "off", "on", "Δ"], recall_rows(measured["scores"]))
            + "\n"
        )
        parts.append(
            f"\nScripted graph builder: {measured['calls']} graph calls, "
            f"{measured['prompt_tokens']:,} prompt + {measured['completion_tokens']:,} "
            f"completion tokens; one learned exchange with one fact: "
            f"{measured['prompt_tokens_one_fact']:.0f} prompt tokens.\n\n"
        )
    rows = []
    for size in [int(s) for s in args.sizes.split(",") if s] if "latency" in wanted else []:
        latency = asyncio.run(walk_latency(size, embedder.dimension, args.workdir))
        rows.append(
            [f"{size:,}", f"{2 * size:,}", f"{latency['p50']:.1f}", f"{latency['p99']:.1f}"]
        )
    parts.append("Graph walk latency, one user (ms, 40 queries):\n\n")
    parts.append(table(["entities", "relations", "p50", "p99"], rows) + "\n")
    meta = stamp()
    body = (
        f"`python -m bench graph` — {meta['date']}, commit {meta['commit']}, {meta['machine']}."
        "\n\n" + "".join(parts)
    )
    print(body)
    if not args.no_write:
        write_section("Graph memory", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
