"""Graph memory in exports and imports: a scope's relations as records (with their entities'
names and types, history included), and those records stored back, idempotent by relation
id, entities found by name in the record's scope or created."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .filters import in_sql, scope_sql
from .graph_prompts import name_key, relation_text
from .graph_store import GraphStore, exact_scope_sql
from .timestamps import now_stamp
from .types import IDENTITY_FIELDS, Scope

Embed = Callable[[Sequence[str]], Awaitable[np.ndarray[Any, Any]]]
RELATION_RECORD = "relation"  # the ``type`` of a relation line in an export
EXPORTED = ("id", "source", "relation", "target", "memory_ids", "valid_from", "invalid_at")


async def export_relations(store: GraphStore, scope: Scope) -> list[dict[str, Any]]:
    """Every relation of ``scope``, superseded ones too, oldest first, as export records."""
    where = scope_sql(scope)
    relations = await store.relations(where)
    types = {row["id"]: row["type"] for row in await store.entities(where)}
    relations.sort(key=lambda row: (row["created_at"], row["id"]))
    return [
        {
            "type": RELATION_RECORD,
            **{field: row[field] for field in EXPORTED},
            "source_type": types.get(row["source_id"], "thing"),
            "target_type": types.get(row["target_id"], "thing"),
            **{field: row.get(field) for field in IDENTITY_FIELDS},
            "created_at": row["created_at"],
        }
        for row in relations
    ]


async def import_relations(
    store: GraphStore, embed: Embed, records: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Store exported relations; per record ``"imported"`` or ``"exists"`` (that id is
    stored). Records are validated (``proxy.api_models.RelationRecord``) and authorized."""
    if not records:
        return []
    ids = [str(record["id"]) for record in records]
    known = {row["id"] for row in await store.relations(in_sql("id", ids))}
    statuses: list[str] = []
    fresh: list[dict[str, Any]] = []
    for record in records:
        if record["id"] in known:
            statuses.append("exists")
            continue
        known.add(record["id"])
        scope = Scope.of(record).require()
        source_id = await _entity(store, embed, scope, record["source"], record["source_type"])
        target_id = await _entity(store, embed, scope, record["target"], record["target_type"])
        stamp = record.get("created_at") or record["valid_from"]
        fresh.append(
            {
                "id": record["id"],
                **scope.as_dict(),
                "source_id": source_id,
                "source": record["source"],
                "relation": record["relation"],
                "target_id": target_id,
                "target": record["target"],
                "text": relation_text(record["source"], record["relation"], record["target"]),
                "memory_ids": list(record["memory_ids"]),
                "valid_from": record["valid_from"],
                "invalid_at": record.get("invalid_at"),
                "job_id": None,
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
        statuses.append("imported")
    if fresh:
        vectors = await embed([row["text"] for row in fresh])
        for row, vector in zip(fresh, vectors, strict=True):
            row["vector"] = vector
        await store.add_relations(fresh)
    return statuses


async def _entity(store: GraphStore, embed: Embed, scope: Scope, name: str, kind: str) -> str:
    """The id of ``name``'s entity in exactly ``scope``, created when there is none."""
    key = name_key(name)
    rows = await store.entities(f"{exact_scope_sql(scope)} AND {in_sql('name_key', [key])}")
    if rows:
        return str(rows[0]["id"])
    entity_id = uuid.uuid4().hex
    stamp = now_stamp()
    vector = (await embed([name]))[0]
    await store.add_entities(
        [
            {
                "id": entity_id,
                **scope.as_dict(),
                "name": name,
                "name_key": key,
                "type": kind,
                "vector": vector,
                "created_at": stamp,
                "updated_at": stamp,
            }
        ]
    )
    return entity_id


__all__ = ["RELATION_RECORD", "export_relations", "import_relations"]
