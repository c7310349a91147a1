"""Graph memory: a scope's entities and the relations between them, learned from the facts a
job stored and walked at recall (docs/graph.md).

- **Learn** (``learn``): one LLM call turns the job's facts into relations, each citing its
  fact, so each relation rests on known memories. Names resolve against the scope's entities
  (same words → same node; close embeddings with one name's words inside the other's → same
  node; the uncertain band goes to the LLM, one call for all such pairs). A relation already
  known gains the memory; one of an exclusive kind (``lives_in``...) supersedes the source's
  other one; one resting only on memories the job updated or deleted is superseded. Superseded
  relations keep their row with ``invalid_at`` (history, as Graphiti keeps it).
- **Recall** (``recall``): the entities the query names, the entities and relations nearest
  its vector, then one or two hops over valid relations; the memories they rest on, in walk
  order, are one more ranking for the fusion, and the relations are returned in Mem0's shape.
- **Forget** (``forget`` / ``delete_scope``): a deleted memory leaves the relations it alone
  supported, and entities left without relations go too.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import GraphConfig
from .filters import in_sql, scope_sql
from .graph_learn import GraphLearner, GraphReport, StoredFact
from .graph_pages import GraphPage, graph_page, relation_row, rename_relation
from .graph_prompts import MAX_NAME_CHARS, USER_ENTITY, name_key
from .graph_store import VALID, GraphStore, rests_on_sql
from .graph_transfer import export_relations, import_relations
from .llm_client import ChatLLM
from .types import Scope

Vector = np.ndarray[Any, Any]
Embed = Callable[[Sequence[str]], Awaitable[Vector]]
MAX_QUERY_WORDS = 64
_WORD = re.compile(r"\w+")


@dataclass(slots=True)
class GraphRecall:
    """The memories the walk reached (best first) and the relations it used."""

    memory_ids: list[str]
    relations: list[dict[str, Any]]


def mem0_relation(row: dict[str, Any]) -> dict[str, Any]:
    """A relation as Mem0 returns it, plus its id."""
    return {
        "id": row["id"],
        "source": row["source"],
        "relationship": row["relation"],
        "destination": row["target"],
    }


def relation_line(row: dict[str, Any]) -> str:
    """How a relation reads in a recall block: ``Maria -[lives_in]-> Lisbon``."""
    return f"{row['source']} -[{row['relation']}]-> {row['target']}"


def query_names(query: str) -> list[str]:
    """Every run of 1-4 words of ``query`` as a name key: what the query may name."""
    words = [w for w in _WORD.findall(query.casefold()) if len(w) <= MAX_NAME_CHARS]
    words = words[:MAX_QUERY_WORDS]
    return sorted(
        {" ".join(words[i : i + n]) for n in range(1, 5) for i in range(len(words) - n + 1)}
    )


class GraphMemory:
    """Learns, walks and forgets one store's graphs; ``embed`` makes passage vectors."""

    def __init__(self, store: GraphStore, embed: Embed, config: GraphConfig) -> None:
        self.store = store
        self.config = config
        self.embed = embed
        self._learner = GraphLearner(store, embed, config)

    async def learn(
        self,
        scope: Scope,
        facts: Sequence[StoredFact],
        changed: Sequence[str],
        llm: ChatLLM,
        *,
        when: str,
        job_id: str | None,
    ) -> GraphReport:
        """Relations from the facts a job stored (``changed``: the memories it updated or
        deleted); see ``graph_learn``."""
        return await self._learner.learn(scope, facts, changed, llm, when=when, job_id=job_id)

    # ---- recall ------------------------------------------------------------------------

    async def recall(self, query: str, vector: Vector, scope: Scope) -> GraphRecall:
        """The memories and relations reached from what ``query`` names or means."""
        cfg = self.config
        where = scope_sql(scope)
        valid = f"{where} AND {VALID}"
        # The three seed searches are independent: one round trip's time, not three.
        named, near, seeds = await asyncio.gather(
            self.store.entities(
                f"{where} AND {in_sql('name_key', query_names(query))}",
                limit=cfg.max_edges_per_hop,
            ),
            self.store.nearest_entities(vector, where, limit=cfg.seed_entities)
            if cfg.seed_entities
            else _nothing(),
            self.store.nearest_relations(vector, valid, limit=cfg.seed_relations),
        )
        user = name_key(USER_ENTITY)
        frontier = {row["id"] for row in named if row["name_key"] != user}
        frontier |= {
            row["id"]
            for row, similarity in near
            if similarity >= cfg.seed_threshold and row["name_key"] != user
        }
        walked: dict[str, tuple[int, float, dict[str, Any]]] = {}
        for row, similarity in seeds:
            if similarity >= cfg.seed_threshold:
                walked[row["id"]] = (0, similarity, row)
                frontier.update(_ends(row))
        seen = set(frontier)
        for hop in range(1, cfg.hops + 1):
            if not frontier:
                break
            ends = sorted(frontier)
            # Two indexed lookups at once rather than one OR the indexes cannot serve.
            outgoing, incoming = await asyncio.gather(
                self.store.relations(
                    f"{valid} AND {in_sql('source_id', ends)}", limit=cfg.max_edges_per_hop
                ),
                self.store.relations(
                    f"{valid} AND {in_sql('target_id', ends)}", limit=cfg.max_edges_per_hop
                ),
            )
            edges = list({row["id"]: row for row in [*outgoing, *incoming]}.values())
            edges = edges[: cfg.max_edges_per_hop]
            frontier = set()
            for row in edges:
                if row["id"] not in walked:
                    walked[row["id"]] = (hop, 0.0, row)
                for end in _ends(row):
                    if end not in seen:
                        seen.add(end)
                        frontier.add(end)
        ordered = sorted(walked.values(), key=lambda item: (item[0], -item[1]))
        reached: list[str] = []
        for _hop, _similarity, row in ordered:
            for memory_id in row["memory_ids"] or []:
                if memory_id not in reached:
                    reached.append(memory_id)
        stale = await self._stale(where, reached)
        memory_ids = [memory_id for memory_id in reached if memory_id not in stale]
        return GraphRecall(memory_ids, [row for _hop, _sim, row in ordered])

    async def _stale(self, where: str, memory_ids: Sequence[str]) -> set[str]:
        """Of ``memory_ids``, those a superseded relation rests on: partly outdated, so the
        walk does not vouch for them (the other rankings may still find them)."""
        if not memory_ids:
            return set()
        superseded = await self.store.relations(
            f"{where} AND invalid_at IS NOT NULL AND {rests_on_sql(memory_ids)}",
            limit=self.config.max_edges_per_hop,
        )
        return {m for row in superseded for m in row["memory_ids"] or []}

    # ---- export / import ----------------------------------------------------------------

    async def export(self, scope: Scope) -> list[dict[str, Any]]:
        """``scope``'s relations as export records (``graph_transfer``)."""
        return await export_relations(self.store, scope)

    async def import_records(self, records: Sequence[dict[str, Any]]) -> list[str]:
        """Store exported relation records; ``"imported"`` / ``"exists"`` per record."""
        return await import_relations(self.store, self.embed, records)

    # ---- forget ------------------------------------------------------------------------

    async def forget(self, scope: Scope, memory_ids: Sequence[str]) -> None:
        """``memory_ids`` (of ``scope``) were deleted: relations resting on them alone go,
        the others forget them; entities left without relations go too."""
        if not memory_ids:
            return
        gone = set(memory_ids)
        where = scope_sql(scope)
        rows = await self.store.relations(f"{where} AND {rests_on_sql(memory_ids)}")
        ends: set[str] = set()
        deleted: list[str] = []
        for row in rows:
            left = [m for m in row["memory_ids"] or [] if m not in gone]
            if left:
                await self.store.update_relation(row["id"], {"memory_ids": left})
            else:
                deleted.append(row["id"])
                ends.update((row["source_id"], row["target_id"]))
        if deleted:
            await self.store.delete_relations(in_sql("id", deleted))
        await self._drop_orphans(where, ends)

    async def _drop_orphans(self, where: str, entity_ids: set[str]) -> None:
        if not entity_ids:
            return
        ids = sorted(entity_ids)
        used = await self.store.relations(
            f"{where} AND ({in_sql('source_id', ids)} OR {in_sql('target_id', ids)})"
        )
        still = {row["source_id"] for row in used} | {row["target_id"] for row in used}
        orphans = [entity for entity in ids if entity not in still]
        if orphans:
            await self.store.delete_entities(in_sql("id", orphans))

    async def delete_scope(self, scope: Scope) -> None:
        """Everything of ``scope`` (the memories' ``delete_all``)."""
        where = scope_sql(scope)
        await self.store.delete_relations(where)
        await self.store.delete_entities(where)

    # ---- browse and edit (graph_pages) ---------------------------------------------------

    async def page(
        self,
        scope: Scope,
        *,
        limit: int,
        before: tuple[str, str] | None = None,
        include_invalid: bool = False,
    ) -> GraphPage:
        """A page of ``scope``'s relations, newest first, with the entities they join."""
        return await graph_page(
            self.store, scope, limit=limit, before=before, include_invalid=include_invalid
        )

    async def relation(self, relation_id: str) -> dict[str, Any] | None:
        """One relation's row (any scope: callers check whose it is), None if absent."""
        return await relation_row(self.store, relation_id)

    async def rename_relation(self, relation_id: str, relation: str) -> dict[str, Any] | None:
        """Rename a relation (``relation``: a ``relation_name``); the row after, or None."""
        return await rename_relation(self.store, self.embed, relation_id, relation)

    async def delete_relation(self, relation_id: str) -> dict[str, Any] | None:
        """Delete one relation (and entities it leaves alone); the row, None if absent."""
        row = await relation_row(self.store, relation_id)
        if row is None:
            return None
        await self.store.delete_relations(in_sql("id", [relation_id]))
        await self._drop_orphans(scope_sql(Scope.of(row)), {row["source_id"], row["target_id"]})
        return row


async def _nothing() -> list[tuple[dict[str, Any], float]]:
    return []


def _ends(row: dict[str, Any]) -> list[str]:
    """A relation's entities to walk on from: never the user's own node, which every
    relation of the user touches (walking it would reach everything)."""
    return [
        entity
        for entity, name in ((row["source_id"], row["source"]), (row["target_id"], row["target"]))
        if name != USER_ENTITY
    ]


__all__ = [
    "GraphMemory",
    "GraphPage",
    "GraphRecall",
    "GraphReport",
    "StoredFact",
    "mem0_relation",
    "query_names",
    "relation_line",
]
