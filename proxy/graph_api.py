"""The graph routes (docs/graph.md): ``GET /graph`` pages a scope's relations and the
entities they join, ``PATCH`` / ``DELETE /graph/relations/{relation_id}`` rename or delete one.

Scopes are authorized like the memory routes; a relation of a user the key may not act for
answers 404 exactly like an absent one. With ``memory.graph.enabled`` off: 409.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from memory_core.errors import NotFound
from memory_core.graph import GraphMemory
from memory_core.graph_pages import edge_of
from memory_core.graph_prompts import relation_name
from memory_core.types import ID_PATTERN

from .auth import Caller
from .errors import BadRequest, Conflict
from .graph_models import GraphQuery, RelationUpdate
from .memories_api import (
    caller_of,
    decode_cursor,
    encode_cursor,
    json_response,
    memory_of,
    read_json,
    read_query,
)
from .memory_access import authorize_scope, may_see

GRAPH_OFF = "graph memory is off: set memory.graph.enabled in the proxy's config"


async def graph_of(request: Request) -> GraphMemory:
    graph = await memory_of(request).graph_memory()
    if graph is None:
        raise Conflict(GRAPH_OFF)
    return graph


async def visible_relation(graph: GraphMemory, caller: Caller, relation_id: str) -> dict[str, Any]:
    """The relation, or the same 404 whether it is absent or belongs to someone else."""
    row = await graph.relation(relation_id) if ID_PATTERN.fullmatch(relation_id) else None
    if row is None or not may_see(caller, row):
        raise NotFound(f"relation {relation_id[:128]} not found")
    return row


async def get_graph(request: Request) -> Response:
    caller = caller_of(request)
    query = read_query(request, GraphQuery)
    scope = authorize_scope(caller, query.ids())
    before = decode_cursor(query.cursor) if query.cursor else None
    graph = await graph_of(request)
    page = await graph.page(
        scope, limit=query.limit, before=before, include_invalid=query.include_invalid
    )
    next_cursor = (
        encode_cursor({"created_at": page.next_before[0], "id": page.next_before[1]})
        if page.next_before is not None
        else None
    )
    return json_response({"nodes": page.nodes, "edges": page.edges, "next_cursor": next_cursor})


async def rename_relation(request: Request) -> Response:
    caller = caller_of(request)
    relation_id = request.path_params["relation_id"]
    body = await read_json(request, RelationUpdate)
    relation = relation_name(body.relationship)
    if relation is None:
        raise BadRequest("relationship needs a letter or digit", param="relationship")
    graph = await graph_of(request)
    await visible_relation(graph, caller, relation_id)
    row = await graph.rename_relation(relation_id, relation)
    if row is None:  # deleted meanwhile
        raise NotFound(f"relation {relation_id} not found")
    return json_response(edge_of(row))


async def delete_relation(request: Request) -> Response:
    caller = caller_of(request)
    relation_id = request.path_params["relation_id"]
    graph = await graph_of(request)
    await visible_relation(graph, caller, relation_id)
    if await graph.delete_relation(relation_id) is None:
        raise NotFound(f"relation {relation_id} not found")
    return json_response({"message": "Relation deleted"})


def graph_routes() -> list[BaseRoute]:
    """The graph routes at ``/`` and ``/v1``, with and without a trailing slash."""
    routes: list[BaseRoute] = []
    for prefix in ("", "/v1"):
        for path, handler, methods in (
            ("/graph", get_graph, ["GET"]),
            ("/graph/relations/{relation_id}", rename_relation, ["PATCH"]),
            ("/graph/relations/{relation_id}", delete_relation, ["DELETE"]),
        ):
            routes.append(Route(prefix + path, handler, methods=methods))
            routes.append(Route(prefix + path + "/", handler, methods=methods))
    return routes


__all__ = ["graph_routes"]
