"""Graph memory's two LanceDB tables, in the same store as the memories: ``entities`` (one row
per node, its name embedded) and ``relations`` (one row per edge, its text embedded, the
memories it rests on, valid from / invalid at). Scoped like memories; every value reaches SQL
through ``sql_literal`` (names are data, never SQL)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
from lancedb.index import BTree, LabelList

from .errors import StoreError
from .filters import in_sql, scope_sql, sql_literal
from .store_tables import open_side_table
from .types import IDENTITY_FIELDS, Scope

ENTITIES = "graph_entities"
RELATIONS = "graph_relations"
SCAN_LIMIT = 1_000_000
OPTIMIZE_EVERY = 100  # writes between compactions (as the memories table)
# What the walk and the writes look rows up by (a user holding 100k entities is not scanned).
INDEXED_ENTITY_COLUMNS: dict[str, Any] = {"user_id": BTree(), "name_key": BTree()}
INDEXED_RELATION_COLUMNS: dict[str, Any] = {
    "user_id": BTree(),
    "source_id": BTree(),
    "target_id": BTree(),
    "memory_ids": LabelList(),  # array_has_any(memory_ids, ...): forgetting, stale memories
}
STORE_ERRORS = (OSError, RuntimeError, ValueError)
Vector = np.ndarray[Any, Any]
log = logging.getLogger("memory_core.graph")
VALID = "invalid_at IS NULL"  # a relation not superseded


def _scope_fields() -> list[pa.Field]:
    return [pa.field(field, pa.string()) for field in IDENTITY_FIELDS]


def entities_schema(dimension: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            *_scope_fields(),
            pa.field("name", pa.string(), nullable=False),
            pa.field("name_key", pa.string(), nullable=False),
            pa.field("type", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dimension)),
            pa.field("created_at", pa.string(), nullable=False),
            pa.field("updated_at", pa.string(), nullable=False),
        ]
    )


def relations_schema(dimension: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            *_scope_fields(),
            pa.field("source_id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("relation", pa.string(), nullable=False),
            pa.field("target_id", pa.string(), nullable=False),
            pa.field("target", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dimension)),
            pa.field("memory_ids", pa.list_(pa.string())),
            pa.field("valid_from", pa.string(), nullable=False),
            pa.field("invalid_at", pa.string()),
            pa.field("job_id", pa.string()),
            pa.field("created_at", pa.string(), nullable=False),
            pa.field("updated_at", pa.string(), nullable=False),
        ]
    )


ENTITY_COLUMNS = [f.name for f in entities_schema(1) if f.name != "vector"]
RELATION_COLUMNS = [f.name for f in relations_schema(1) if f.name != "vector"]


def exact_scope_sql(scope: Scope) -> str:
    """Rows of exactly ``scope``: each id equal, each id it lacks NULL (writes resolve names
    among the entities of their own scope only)."""
    clauses = [
        f"{field} = {sql_literal(value)}" if value is not None else f"{field} IS NULL"
        for field, value in scope.as_dict().items()
    ]
    return " AND ".join(clauses)


def rests_on_sql(memory_ids: Sequence[str]) -> str:
    """Relations resting on any of ``memory_ids``."""
    listed = ", ".join(sql_literal(m) for m in memory_ids)
    return f"array_has_any(memory_ids, [{listed}])"


class GraphStore:
    """Reads and writes of the entity and relation tables of one LanceDB database."""

    def __init__(
        self,
        uri: str,
        dimension: int,
        *,
        storage_options: Mapping[str, str] | None = None,
        read_consistency_interval_s: float | None = None,
    ) -> None:
        self.uri = uri
        self.dimension = dimension
        self._options = dict(storage_options or {})
        self._consistency_s = read_consistency_interval_s
        self._entities: Any = None
        self._relations: Any = None
        self._writes_since_optimize = 0

    async def open(self) -> None:
        """Open (or create) both tables as the library's other side tables are opened, then
        index what the walk and the writes look rows up by."""
        tables = []
        for name, schema in (
            (ENTITIES, entities_schema(self.dimension)),
            (RELATIONS, relations_schema(self.dimension)),
        ):
            tables.append(
                await open_side_table(
                    self.uri,
                    name,
                    schema,
                    storage_options=self._options,
                    read_consistency_interval_s=self._consistency_s,
                )
            )
        try:
            for table, columns in zip(
                tables, (INDEXED_ENTITY_COLUMNS, INDEXED_RELATION_COLUMNS), strict=True
            ):
                indexed = {tuple(index.columns) for index in await table.list_indices()}
                for column, config in columns.items():
                    if (column,) not in indexed:
                        await table.create_index(column, config=config)
        except STORE_ERRORS as exc:
            raise StoreError(f"cannot index the graph tables at {self.uri}: {exc}") from exc
        self._entities, self._relations = tables

    @property
    def is_open(self) -> bool:
        return self._relations is not None

    def _tables(self) -> tuple[Any, Any]:
        if self._entities is None:
            raise StoreError("the graph store is not open")
        return self._entities, self._relations

    # ---- reads -------------------------------------------------------------------------

    async def entities(self, where: str, *, limit: int = SCAN_LIMIT) -> list[dict[str, Any]]:
        entities, _ = self._tables()
        query = entities.query().where(where).select(ENTITY_COLUMNS).limit(limit)
        return await _rows(query)

    async def relations(self, where: str, *, limit: int = SCAN_LIMIT) -> list[dict[str, Any]]:
        _, relations = self._tables()
        query = relations.query().where(where).select(RELATION_COLUMNS).limit(limit)
        return await _rows(query)

    async def nearest_entities(
        self, vector: Vector, where: str, *, limit: int
    ) -> list[tuple[dict[str, Any], float]]:
        entities, _ = self._tables()
        return await _nearest(entities, vector, where, limit, ENTITY_COLUMNS)

    async def nearest_relations(
        self, vector: Vector, where: str, *, limit: int
    ) -> list[tuple[dict[str, Any], float]]:
        _, relations = self._tables()
        return await _nearest(relations, vector, where, limit, RELATION_COLUMNS)

    async def count(self, scope: Scope) -> tuple[int, int]:
        """How many entities and relations ``scope`` holds."""
        entities, relations = self._tables()
        where = scope_sql(scope) or None
        try:
            return int(await entities.count_rows(where)), int(await relations.count_rows(where))
        except STORE_ERRORS as exc:
            raise StoreError(f"graph count failed: {exc}") from exc

    # ---- writes ------------------------------------------------------------------------

    async def add_entities(self, rows: Sequence[Mapping[str, Any]]) -> None:
        entities, _ = self._tables()
        if rows:
            data = [_encoded(row) for row in rows]
            await self._write(
                entities.add(pa.Table.from_pylist(data, entities_schema(self.dimension)))
            )

    async def add_relations(self, rows: Sequence[Mapping[str, Any]]) -> None:
        _, relations = self._tables()
        if rows:
            data = [_encoded(row) for row in rows]
            schema = relations_schema(self.dimension)
            await self._write(relations.add(pa.Table.from_pylist(data, schema)))

    async def update_relation(self, relation_id: str, values: Mapping[str, Any]) -> None:
        _, relations = self._tables()
        encoded = _encoded(values)
        if "vector" in encoded:
            encoded["vector"] = encoded["vector"].tolist()
        await self._write(relations.update(encoded, where=in_sql("id", [relation_id])))

    async def delete_relations(self, where: str) -> None:
        _, relations = self._tables()
        await self._write(relations.delete(where))

    async def delete_entities(self, where: str) -> None:
        entities, _ = self._tables()
        await self._write(entities.delete(where))

    async def _write(self, operation: Any) -> None:
        try:
            await operation
        except STORE_ERRORS as exc:
            raise StoreError(f"graph write failed: {exc}") from exc
        self._writes_since_optimize += 1
        if self._writes_since_optimize >= OPTIMIZE_EVERY:
            self._writes_since_optimize = 0
            try:
                await self.optimize()
            except StoreError as exc:  # the writes are done; the next round tries again
                log.warning("%s", exc)

    async def optimize(self) -> None:
        """Compact both tables and fold new rows into their indexes (LanceDB scans rows an
        index has not seen); old versions past an hour are dropped."""
        for table in self._tables():
            try:
                await table.optimize(cleanup_older_than=timedelta(hours=1))
            except STORE_ERRORS as exc:
                raise StoreError(f"graph maintenance failed: {exc}") from exc

    async def reset(self) -> None:
        """Every user's graph gone (``AsyncMemory.reset``)."""
        await self.delete_relations("TRUE")
        await self.delete_entities("TRUE")

    async def close(self) -> None:
        self._entities = self._relations = None


def _encoded(row: Mapping[str, Any]) -> dict[str, Any]:
    encoded = dict(row)
    if encoded.get("vector") is not None:
        encoded["vector"] = np.asarray(encoded["vector"], dtype=np.float32)
    return encoded


async def _rows(query: Any) -> list[dict[str, Any]]:
    try:
        rows: list[dict[str, Any]] = (await query.to_arrow()).to_pylist()
    except STORE_ERRORS as exc:
        raise StoreError(f"graph query failed: {exc}") from exc
    return rows


async def _nearest(
    table: Any, vector: Vector, where: str, limit: int, columns: list[str]
) -> list[tuple[dict[str, Any], float]]:
    query = (
        table.query()
        .nearest_to(np.asarray(vector, dtype=np.float32))
        .distance_type("cosine")
        .bypass_vector_index()  # exact, as for memories: an ANN index drops filtered rows
        .where(where)
        .select([*columns, "_distance"])
        .limit(limit)
    )
    rows = await _rows(query)
    return [({k: r[k] for k in columns}, 1.0 - float(r["_distance"])) for r in rows]


__all__ = [
    "ENTITIES",
    "RELATIONS",
    "VALID",
    "GraphStore",
    "exact_scope_sql",
    "rests_on_sql",
]
