"""Graph memory's part in ``AsyncMemory``: opened beside the store when ``graph.enabled``,
learning after a job's facts are applied, and what a failure there may and may not do."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from .config import MemoryConfig
from .embedders import Embedder, Vectors
from .errors import MemoryCoreError
from .graph import GraphMemory
from .graph_learn import StoredFact
from .graph_store import GraphStore
from .learning_report import LearningReport
from .llm_client import ChatLLM
from .timestamps import format_timestamp
from .types import AddResult, Scope

log = logging.getLogger("memory_core.graph")


async def open_graph(config: MemoryConfig, embedder: Embedder) -> GraphMemory:
    store = GraphStore(
        config.storage_uri,
        embedder.dimension,
        storage_options=config.storage_options,
        read_consistency_interval_s=config.read_consistency_interval_s,
    )
    await store.open()

    async def embed(texts: Sequence[str]) -> Vectors:
        return await embedder.embed(list(texts), purpose="passage")

    return GraphMemory(store, embed, config.graph)


async def learn_graph(
    graph: GraphMemory,
    scope: Scope,
    results: Sequence[AddResult],
    llm: ChatLLM,
    *,
    when: datetime,
    job_id: str | None,
    report: LearningReport | None,
) -> None:
    """Relations from what a job stored. The facts are stored already, and a queue retry of
    the job would find it applied: a graph failure is logged and reported, never raised."""
    deleted = [r["id"] for r in results if r.get("event") == "DELETE"]
    changed = [r["id"] for r in results if r.get("event") in ("UPDATE", "DELETE")]
    facts = [
        StoredFact(r["memory"], r["id"]) for r in results if r.get("event") in ("ADD", "UPDATE")
    ]
    try:
        await graph.forget(scope, deleted)
        if not facts and not changed:
            return
        outcome = await graph.learn(
            scope, facts, changed, llm, when=format_timestamp(when), job_id=job_id
        )
    except MemoryCoreError as exc:
        log.warning("graph learning failed (the facts are stored): %s", exc)
        if report is not None:
            report.graph = {"error": str(exc)[:500]}
        return
    if report is not None:
        report.llm_calls += outcome.llm_calls
        report.graph = outcome.to_dict()


__all__ = ["learn_graph", "open_graph"]
