"""Graph memory browsed and edited (the REST API's ``/graph`` routes, the memory browser): a
scope's relations a page at a time, newest first, with the entities they join; one relation
renamed, its text re-embedded. Every value reaches SQL through ``sql_literal``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from .filters import in_sql, scope_sql, sql_literal
from .graph_prompts import relation_text
from .graph_store import VALID, GraphStore
from .timestamps import format_timestamp
from .types import Scope

MAX_PAGE = 1000
Embed = Callable[[Sequence[str]], Awaitable[np.ndarray[Any, Any]]]


@dataclass(slots=True)
class GraphPage:
    """One page of a scope's graph: ``edges`` newest first, ``nodes`` their ends, and the
    ``(created_at, id)`` of the last edge when more follow."""

    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    next_before: tuple[str, str] | None


def edge_of(row: dict[str, Any]) -> dict[str, Any]:
    """A relation row as the API shows it."""
    return {
        "id": row["id"],
        "source_id": row["source_id"],
        "target_id": row["target_id"],
        "source": row["source"],
        "relationship": row["relation"],
        "destination": row["target"],
        "valid_from": row["valid_from"],
        "invalid_at": row["invalid_at"],
        "memory_ids": list(row["memory_ids"] or []),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def before_sql(before: tuple[str, str]) -> str:
    """Rows older than ``(created_at, id)`` in the page order."""
    created_at, row_id = (sql_literal(value) for value in before)
    return f"(created_at < {created_at} OR (created_at = {created_at} AND id < {row_id}))"


async def graph_page(
    store: GraphStore,
    scope: Scope,
    *,
    limit: int,
    before: tuple[str, str] | None = None,
    include_invalid: bool = False,
) -> GraphPage:
    """Up to ``limit`` relations of ``scope`` (superseded ones only with ``include_invalid``)
    older than ``before``, newest first, and the entities at their ends."""
    limit = max(1, min(limit, MAX_PAGE))
    clauses = [scope_sql(scope)]
    if not include_invalid:
        clauses.append(VALID)
    if before is not None:
        clauses.append(before_sql(before))
    rows = await store.relations(" AND ".join(clauses))
    rows.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
    page = rows[:limit]
    ends = sorted({end for row in page for end in (row["source_id"], row["target_id"])})
    entities = await store.entities(f"{scope_sql(scope)} AND {in_sql('id', ends)}")
    nodes = sorted(
        ({"id": e["id"], "name": e["name"], "type": e["type"]} for e in entities),
        key=lambda node: (node["name"].casefold(), node["id"]),
    )
    last = page[-1] if len(rows) > limit else None
    return GraphPage(
        nodes=nodes,
        edges=[edge_of(row) for row in page],
        next_before=(last["created_at"], last["id"]) if last is not None else None,
    )


async def relation_row(store: GraphStore, relation_id: str) -> dict[str, Any] | None:
    rows = await store.relations(in_sql("id", [relation_id]), limit=1)
    return rows[0] if rows else None


async def rename_relation(
    store: GraphStore, embed: Embed, relation_id: str, relation: str
) -> dict[str, Any] | None:
    """Call the relation ``relation`` (a ``relation_name``), its text re-embedded; the row
    after, None when absent. Renamed onto a valid relation the same two entities already
    have, the two become one: that one keeps both's memories and this one goes."""
    row = await relation_row(store, relation_id)
    if row is None:
        return None
    now = format_timestamp(datetime.now(UTC))
    if row["invalid_at"] is None:
        same = await store.relations(
            f"{scope_sql(Scope.of(row))} AND {VALID} AND id != {sql_literal(relation_id)}"
            f" AND source_id = {sql_literal(row['source_id'])}"
            f" AND target_id = {sql_literal(row['target_id'])}"
            f" AND relation = {sql_literal(relation)}",
            limit=1,
        )
        if same:
            kept = same[0]
            memory_ids = list(kept["memory_ids"] or [])
            memory_ids += [m for m in row["memory_ids"] or [] if m not in memory_ids]
            await store.update_relation(kept["id"], {"memory_ids": memory_ids, "updated_at": now})
            await store.delete_relations(in_sql("id", [relation_id]))
            return {**kept, "memory_ids": memory_ids, "updated_at": now}
    text = relation_text(row["source"], relation, row["target"])
    vector = (await embed([text]))[0]
    values = {"relation": relation, "text": text, "vector": vector, "updated_at": now}
    await store.update_relation(relation_id, values)
    return {**row, "relation": relation, "text": text, "updated_at": now}


__all__ = [
    "MAX_PAGE",
    "GraphPage",
    "edge_of",
    "graph_page",
    "relation_row",
    "rename_relation",
]
