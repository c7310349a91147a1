"""Graph memory's learning step (``GraphMemory.learn``): one LLM call turns a job's facts into
relations, each citing its fact; names resolve against the scope's entities (docs/graph.md
"Resolution"); known relations gain the memory; exclusive kinds and relations resting only on
memories the job changed are superseded (kept, with ``invalid_at``)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import GraphConfig
from .contracts import Rejections
from .extraction import complete_validated
from .filters import in_sql
from .graph_prompts import (
    GRAPH_SCHEMA,
    USER_ENTITY,
    RelationClaim,
    build_graph_messages,
    name_key,
    parse_graph,
)
from .graph_resolve import SAME_SCHEMA, build_same_messages, name_overlap, parse_same
from .graph_store import VALID, GraphStore, exact_scope_sql, rests_on_sql
from .llm_client import ChatLLM
from .types import Scope

Vector = np.ndarray[Any, Any]
Embed = Callable[[Sequence[str]], Awaitable[Vector]]


@dataclass(frozen=True, slots=True)
class StoredFact:
    """A fact of the job and the memory that holds it now (ADD, UPDATE or NONE)."""

    text: str
    memory_id: str


@dataclass(slots=True)
class GraphReport:
    """What one ``learn`` did (counted into the job's learning report)."""

    relations_added: int = 0
    relations_confirmed: int = 0
    relations_superseded: int = 0
    entities_added: int = 0
    entities_merged: int = 0
    llm_calls: int = 0
    rejected: Rejections = field(default_factory=Rejections)

    def to_dict(self) -> dict[str, Any]:
        return {
            "relations_added": self.relations_added,
            "relations_confirmed": self.relations_confirmed,
            "relations_superseded": self.relations_superseded,
            "entities_added": self.entities_added,
            "entities_merged": self.entities_merged,
            "llm_calls": self.llm_calls,
            "rejected": dict(sorted(self.rejected.counts.items())),
        }


class GraphLearner:
    """Learns relations into ``store``; ``embed`` makes passage vectors."""

    def __init__(self, store: GraphStore, embed: Embed, config: GraphConfig) -> None:
        self.store = store
        self._embed = embed
        self.config = config

    async def learn(
        self,
        scope: Scope,
        facts: Sequence[StoredFact],
        changed: Sequence[str],
        llm: ChatLLM,
        *,
        when: str,
        job_id: str | None,
        attempts: int = 2,
    ) -> GraphReport:
        """Relations from ``facts``; ``changed``: the memories the job updated or deleted."""
        report = GraphReport()
        claims: list[RelationClaim] = []
        if facts:
            texts = [fact.text for fact in facts]
            no_claims: list[RelationClaim] = []
            claims, report.llm_calls = await complete_validated(
                llm,
                build_graph_messages(texts),
                lambda payload: parse_graph(payload, texts, report.rejected),
                schema_name="graph",
                schema=GRAPH_SCHEMA,
                empty=no_claims,
                attempts=attempts,
            )
        ids = await self._resolve(scope, claims, llm, when, report)
        confirmed = await self._link(scope, claims, facts, ids, when, job_id, report)
        await self._supersede_changed(scope, changed, confirmed, when, report)
        return report

    async def _resolve(
        self,
        scope: Scope,
        claims: Sequence[RelationClaim],
        llm: ChatLLM,
        when: str,
        report: GraphReport,
    ) -> dict[str, str]:
        """Entity id per name key of ``claims``: found, merged, or created."""
        names: dict[str, tuple[str, str]] = {}
        for claim in claims:
            names.setdefault(name_key(claim.source), (claim.source, claim.source_type))
            names.setdefault(name_key(claim.target), (claim.target, claim.target_type))
        if not names:
            return {}
        where = exact_scope_sql(scope)
        known = await self.store.entities(f"{where} AND {in_sql('name_key', list(names))}")
        ids = {row["name_key"]: row["id"] for row in known}
        unknown = [key for key in names if key not in ids]
        vectors = dict(zip(unknown, await self._embed([names[k][0] for k in unknown]), strict=True))
        ambiguous: list[tuple[str, dict[str, Any]]] = []
        for key in unknown:
            if key == name_key(USER_ENTITY):
                continue
            match = await self._closest(scope, names[key], vectors[key])
            if match is None:
                continue
            row, certain = match
            if certain:
                ids[key] = row["id"]
                report.entities_merged += 1
            else:
                ambiguous.append((key, row))
        if ambiguous:
            pairs = [(names[key][0], row["name"]) for key, row in ambiguous]
            verdicts, calls = await complete_validated(
                llm,
                build_same_messages(pairs),
                lambda payload: parse_same(payload, len(pairs)),
                schema_name="same",
                schema=SAME_SCHEMA,
                empty=[False] * len(pairs),
            )
            report.llm_calls += calls
            for (key, row), same in zip(ambiguous, verdicts, strict=True):
                if same:
                    ids[key] = row["id"]
                    report.entities_merged += 1
        new_rows = []
        for key, (name, kind) in names.items():
            if key in ids:
                continue
            ids[key] = uuid.uuid4().hex
            vector = vectors.get(key)
            if vector is None:
                vector = (await self._embed([name]))[0]
            new_rows.append(
                {
                    "id": ids[key],
                    **scope.as_dict(),
                    "name": name,
                    "name_key": key,
                    "type": kind,
                    "vector": vector,
                    "created_at": when,
                    "updated_at": when,
                }
            )
        await self.store.add_entities(new_rows)
        report.entities_added += len(new_rows)
        return ids

    async def _closest(
        self, scope: Scope, named: tuple[str, str], vector: Vector
    ) -> tuple[dict[str, Any], bool] | None:
        """The scope's entity this name most likely means, and whether that is certain."""
        name, kind = named
        cfg = self.config
        hits = await self.store.nearest_entities(vector, exact_scope_sql(scope), limit=3)
        for row, similarity in hits:
            if row["name_key"] == name_key(USER_ENTITY):
                continue
            overlap = name_overlap(name, row["name"])
            if similarity >= cfg.merge_threshold and (overlap or row["type"] == kind):
                return row, True
            if similarity >= cfg.ambiguous_threshold and overlap:
                return row, False
        return None

    async def _link(
        self,
        scope: Scope,
        claims: Sequence[RelationClaim],
        facts: Sequence[StoredFact],
        ids: dict[str, str],
        when: str,
        job_id: str | None,
        report: GraphReport,
    ) -> set[str]:
        """Store the claims as relations; the ids of the relations they confirm or add."""
        if not claims:
            return set()
        where = exact_scope_sql(scope)
        sources = sorted({ids[name_key(c.source)] for c in claims})
        current = await self.store.relations(
            f"{where} AND {VALID} AND {in_sql('source_id', sources)}"
        )
        touched: set[str] = set()
        fresh: list[tuple[RelationClaim, dict[str, Any]]] = []
        for claim in claims:
            source_id, target_id = ids[name_key(claim.source)], ids[name_key(claim.target)]
            memory_id = facts[claim.fact].memory_id
            same = next(
                (
                    r
                    for r in current
                    if (r["source_id"], r["relation"], r["target_id"])
                    == (source_id, claim.relation, target_id)
                ),
                None,
            )
            if same is not None:
                touched.add(same["id"])
                report.relations_confirmed += 1
                if memory_id not in (same["memory_ids"] or []):
                    same["memory_ids"] = [*(same["memory_ids"] or []), memory_id]
                    await self.store.update_relation(
                        same["id"], {"memory_ids": same["memory_ids"], "updated_at": when}
                    )
                continue
            if claim.relation in self.config.exclusive_relations:
                for old in current:
                    if (old["source_id"], old["relation"]) == (source_id, claim.relation):
                        if old["id"] not in touched and old.get("invalid_at") is None:
                            await self._invalidate(old, when)
                            report.relations_superseded += 1
            row: dict[str, Any] = {
                "id": uuid.uuid4().hex,
                **scope.as_dict(),
                "source_id": source_id,
                "source": claim.source,
                "relation": claim.relation,
                "target_id": target_id,
                "target": claim.target,
                "text": claim.text,
                "memory_ids": [memory_id],
                "valid_from": when,
                "invalid_at": None,
                "job_id": job_id,
                "created_at": when,
                "updated_at": when,
            }
            current.append(row)
            touched.add(row["id"])
            fresh.append((claim, row))
        if fresh:
            vectors = await self._embed([claim.text for claim, _ in fresh])
            for (_claim, row), vector in zip(fresh, vectors, strict=True):
                row["vector"] = vector
            await self.store.add_relations([row for _claim, row in fresh])
            report.relations_added += len(fresh)
        return touched

    async def _invalidate(self, row: dict[str, Any], when: str) -> None:
        row["invalid_at"] = when
        await self.store.update_relation(row["id"], {"invalid_at": when, "updated_at": when})

    async def _supersede_changed(
        self,
        scope: Scope,
        changed: Sequence[str],
        confirmed: set[str],
        when: str,
        report: GraphReport,
    ) -> None:
        """Relations resting only on memories this job updated or deleted no longer hold,
        unless the job confirmed them."""
        if not changed:
            return
        lost = set(changed)
        where = f"{exact_scope_sql(scope)} AND {VALID} AND {rests_on_sql(changed)}"
        for row in await self.store.relations(where):
            if row["id"] not in confirmed and set(row["memory_ids"] or []) <= lost:
                await self._invalidate(row, when)
                report.relations_superseded += 1


__all__ = ["GraphLearner", "GraphReport", "StoredFact"]
