"""Pydantic models of the graph routes (``graph_api.py``) and their OpenAPI operations."""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from memory_core.graph_pages import MAX_PAGE

from .api_models import MessageResponse, ScopeQuery
from .openapi_spec import Operation


class GraphQuery(ScopeQuery):
    """``GET /graph`` query parameters: whose graph, one page of its relations."""

    limit: int = Field(
        default=100,
        ge=1,
        le=MAX_PAGE,
        validation_alias=AliasChoices("limit", "top_k"),
        description="relations per page (alias: top_k)",
    )
    cursor: str | None = Field(default=None, max_length=512)
    include_invalid: bool = Field(
        default=False, description="also the superseded relations (invalid_at set): history"
    )


class RelationUpdate(BaseModel):
    """``PATCH /graph/relations/{relation_id}``: the relation's new name."""

    model_config = ConfigDict(extra="ignore")

    relationship: str = Field(
        min_length=1,
        max_length=200,
        validation_alias=AliasChoices("relationship", "relation"),
        description='a short verb phrase, stored in snake_case ("Cousin of" → "cousin_of")',
    )


class GraphNode(BaseModel):
    id: str
    name: str
    type: str


class GraphEdge(BaseModel):
    id: str
    source_id: str
    target_id: str
    source: str
    relationship: str
    destination: str
    valid_from: str
    invalid_at: str | None = Field(description="when it was superseded; null while valid")
    memory_ids: list[str] = Field(description="the memories it rests on")
    created_at: str
    updated_at: str


class GraphResponse(BaseModel):
    nodes: list[GraphNode] = Field(description="the entities the page's edges join")
    edges: list[GraphEdge] = Field(description="relations, newest first")
    next_cursor: str | None = Field(
        default=None, description="pass as ?cursor= for the next page; null on the last page"
    )


GRAPH_OPERATIONS: list[Operation] = [
    (
        "get",
        "/graph",
        "A scope's graph: relations (paged, newest first) and their entities",
        None,
        GraphResponse,
        "GraphQuery",
    ),
    ("patch", "/graph/relations/{relation_id}", "Rename a relation", RelationUpdate, GraphEdge, ""),
    ("delete", "/graph/relations/{relation_id}", "Delete a relation", None, MessageResponse, ""),
]
GRAPH_QUERY_MODELS: dict[str, type[BaseModel]] = {"GraphQuery": GraphQuery}

__all__ = [
    "GRAPH_OPERATIONS",
    "GRAPH_QUERY_MODELS",
    "GraphEdge",
    "GraphNode",
    "GraphQuery",
    "GraphResponse",
    "RelationUpdate",
]
