"""The memory REST API (Mem0 server routes and shapes, also under ``/v1``), its OpenAPI
document and API page, and the memory browser's static files.

Every route authenticates the caller, then narrows what it touches to the users the key may
act for: ids of memories the key cannot see answer 404, exactly like absent ids.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from memory_core import AsyncMemory
from memory_core.errors import InvalidIdentity, NotFound
from memory_core.types import MISSING_IDENTITY, MemoryItem, Scope

from .api_models import (
    AddRequest,
    FeedbackRequest,
    ListQuery,
    ListRequest,
    MemoryFeedbackRequest,
    ScopeQuery,
    SearchRequest,
    UpdateRequest,
    validation_message,
)
from .auth import Caller
from .errors import BadRequest, Forbidden, MemoryDisabled
from .memory_access import authorize_scope, may_see, sees_all_users
from .memory_transfer import export_lines, import_authorizer, import_lines, split_lines
from .request_body import bounded_stream, parse_json, read_body
from .settings import RequestLimits
from .state import state_of

M = TypeVar("M", bound=BaseModel)
JSONL = "application/x-ndjson"


# ---- request plumbing ------------------------------------------------------------------


def caller_of(request: Request) -> Caller:
    return state_of(request).authenticator.authenticate(request.headers)


def memory_of(request: Request) -> AsyncMemory:
    memory = state_of(request).memory
    if memory is None:
        raise MemoryDisabled("memory is disabled in this proxy's config (memory.enabled)")
    return memory


def parse_model(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(validation_message(exc)) from exc


def limits_of(request: Request) -> RequestLimits:
    return state_of(request).settings.server.limits


async def read_json(request: Request, model: type[M], *, media: bool = False) -> M:
    """The body as ``model``; ``media``: bodies that may carry images and documents inline
    get the chat route's size limit."""
    limits = limits_of(request)
    limit = limits.max_body_bytes if media else limits.max_api_body_bytes
    raw = await read_body(request, limit=limit, timeout_s=limits.body_timeout_s)
    data = parse_json(raw, max_depth=limits.max_json_depth) if raw.strip() else {}
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return parse_model(model, data)


def read_query(request: Request, model: type[M]) -> M:
    return parse_model(model, dict(request.query_params))


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def visible_item(request: Request, caller: Caller, memory_id: str) -> MemoryItem:
    """The memory, or the same 404 whether it is absent or belongs to someone else."""
    item = await memory_of(request).get(memory_id)
    if not may_see(caller, item):
        raise NotFound(f"memory {memory_id} not found")
    return item


def encode_cursor(item: Mapping[str, Any]) -> str:
    raw = orjson.dumps([item["created_at"], item["id"]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, memory_id = orjson.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, TypeError) as exc:
        raise BadRequest("invalid cursor", param="cursor") from exc
    if not isinstance(created_at, str) or not isinstance(memory_id, str):
        raise BadRequest("invalid cursor", param="cursor")
    return created_at, memory_id


# ---- handlers --------------------------------------------------------------------------


async def add_memories(request: Request) -> Response:
    caller = caller_of(request)
    body = await read_json(request, AddRequest, media=True)
    scope = authorize_scope(caller, body.ids())
    memory = memory_of(request)
    extraction = state_of(request).extraction
    llm = extraction.configured() if body.infer and memory.config.llm is None else None
    result = await memory.add(
        body.messages,
        user_id=scope.user_id,
        agent_id=scope.agent_id,
        run_id=scope.run_id,
        app_id=scope.app_id,
        metadata=body.metadata,
        infer=body.infer,
        llm=llm,
        timestamp=body.timestamp,
        categories=body.categories,
        expiration_date=body.expiration_date,
        ttl_s=body.ttl_s,
        immutable=body.immutable,
    )
    return json_response(result)


async def _list(
    request: Request,
    caller: Caller,
    ids: dict[str, str | None],
    filters: dict[str, Any] | None,
    top_k: int,
    cursor: str | None,
    include_expired: bool,
) -> Response:
    scope = authorize_scope(caller, ids, filters=filters)
    before = decode_cursor(cursor) if cursor else None
    result = await memory_of(request).get_all(
        **scope.as_dict(),
        limit=top_k + 1,
        filters=filters,
        before=before,
        include_expired=include_expired,
    )
    items = result["results"]
    next_cursor = encode_cursor(items[top_k - 1]) if len(items) > top_k else None
    return json_response({"results": items[:top_k], "next_cursor": next_cursor})


async def list_memories(request: Request) -> Response:
    caller = caller_of(request)
    query = read_query(request, ListQuery)
    return await _list(
        request, caller, query.ids(), None, query.top_k, query.cursor, query.include_expired
    )


async def list_memories_filtered(request: Request) -> Response:
    caller = caller_of(request)
    body = await read_json(request, ListRequest)
    return await _list(
        request, caller, body.ids(), body.filters, body.top_k, body.cursor, body.include_expired
    )


async def search_memories(request: Request) -> Response:
    caller = caller_of(request)
    body = await read_json(request, SearchRequest)
    scope = authorize_scope(caller, body.ids(), body.filters)
    result = await memory_of(request).search(
        body.query,
        user_id=scope.user_id,
        agent_id=scope.agent_id,
        run_id=scope.run_id,
        app_id=scope.app_id,
        limit=body.top_k,
        graph=body.enable_graph,
        threshold=body.threshold,
        filters=body.filters,
        include_expired=body.include_expired,
    )
    return json_response(result)


async def get_memory(request: Request) -> Response:
    caller = caller_of(request)
    return json_response(await visible_item(request, caller, request.path_params["memory_id"]))


async def update_memory(request: Request) -> Response:
    caller = caller_of(request)
    memory_id = request.path_params["memory_id"]
    body = await read_json(request, UpdateRequest)
    await visible_item(request, caller, memory_id)
    item = await memory_of(request).update(
        memory_id,
        body.text,
        metadata=body.metadata,
        expiration_date=body.expiration_date,
        ttl_s=body.ttl_s,
        clear_expiration=body.clears_expiration,
        immutable=body.immutable,
    )
    return json_response(item)


async def _feedback(
    request: Request, caller: Caller, memory_id: str, body: FeedbackRequest
) -> Response:
    await visible_item(request, caller, memory_id)  # another user's memory: 404 as absent
    result = await memory_of(request).feedback(memory_id, body.feedback, body.feedback_reason)
    return json_response(result)


async def memory_feedback(request: Request) -> Response:
    caller = caller_of(request)
    body = await read_json(request, FeedbackRequest)
    return await _feedback(request, caller, request.path_params["memory_id"], body)


async def feedback(request: Request) -> Response:
    """Mem0 platform's ``POST /v1/feedback/`` (the memory named in the body)."""
    caller = caller_of(request)
    body = await read_json(request, MemoryFeedbackRequest)
    return await _feedback(request, caller, body.memory_id, body)


async def delete_memory(request: Request) -> Response:
    caller = caller_of(request)
    memory_id = request.path_params["memory_id"]
    await visible_item(request, caller, memory_id)
    return json_response(await memory_of(request).delete(memory_id))


async def memory_history(request: Request) -> Response:
    caller = caller_of(request)
    memory_id = request.path_params["memory_id"]
    memory = memory_of(request)
    try:
        await visible_item(request, caller, memory_id)
    except NotFound:
        # A deleted memory's history stays readable, but only for keys that see every user:
        # history rows do not say whose memory it was.
        if not sees_all_users(caller):
            raise
    history = await memory.history(memory_id)
    if not history:
        raise NotFound(f"memory {memory_id} not found")
    return json_response(history)


async def delete_all_memories(request: Request) -> Response:
    caller = caller_of(request)
    query = read_query(request, ScopeQuery)
    if Scope.of(query.ids()).is_empty:
        raise InvalidIdentity(MISSING_IDENTITY)
    scope = authorize_scope(caller, query.ids())
    return json_response(await memory_of(request).delete_all(**scope.as_dict()))


async def reset_memories(request: Request) -> Response:
    caller = caller_of(request)
    if not caller.admin:
        raise Forbidden("reset needs an admin API key")
    await memory_of(request).reset()
    return json_response({"message": "All memories reset"})


async def whoami(request: Request) -> Response:
    caller = caller_of(request)
    return json_response(
        {
            "name": caller.name,
            "users": list(caller.users),
            "admin": caller.admin,
            "open_mode": caller.open_mode,
        }
    )


# ---- export / import -------------------------------------------------------------------


async def export_memories(request: Request) -> Response:
    caller = caller_of(request)
    query = read_query(request, ScopeQuery)
    scope = authorize_scope(caller, query.ids())
    count, body = await export_lines(memory_of(request), scope)
    name = "-".join(v for v in scope.as_dict().values() if v) or "memories"
    return StreamingResponse(
        body,
        media_type=JSONL,
        headers={
            "X-Memory-Count": str(count),
            "Content-Disposition": f'attachment; filename="{name}.jsonl"',
        },
    )


async def import_memories(request: Request) -> Response:
    caller = caller_of(request)
    target = read_query(request, ScopeQuery)
    if not Scope.of(target.ids()).is_empty:
        authorize_scope(caller, target.ids())
    memory = memory_of(request)
    limits = limits_of(request)
    body = bounded_stream(
        request, limit=limits.max_import_bytes, timeout_s=limits.import_timeout_s, lines=True
    )
    report = await import_lines(
        memory,
        split_lines(body),
        import_authorizer(caller, target),
        max_depth=limits.max_json_depth,
    )
    return json_response(report.as_dict())


# ---- routes ----------------------------------------------------------------------------

Handler = Callable[[Request], Awaitable[Response]]

_MEMORY_ROUTES: list[tuple[str, Handler, list[str]]] = [
    ("/memories", add_memories, ["POST"]),
    ("/memories", list_memories, ["GET"]),
    ("/memories", delete_all_memories, ["DELETE"]),
    ("/memories/list", list_memories_filtered, ["POST"]),
    ("/memories/export", export_memories, ["GET"]),
    ("/memories/import", import_memories, ["POST"]),
    ("/memories/{memory_id}", get_memory, ["GET"]),
    ("/memories/{memory_id}", update_memory, ["PUT"]),
    ("/memories/{memory_id}", delete_memory, ["DELETE"]),
    ("/memories/{memory_id}/history", memory_history, ["GET"]),
    ("/memories/{memory_id}/feedback", memory_feedback, ["POST"]),
    ("/feedback", feedback, ["POST"]),
    ("/search", search_memories, ["POST"]),
    ("/reset", reset_memories, ["POST"]),
    ("/auth/me", whoami, ["GET"]),
]


def memory_routes() -> list[BaseRoute]:
    """The memory API at ``/`` and ``/v1`` (with and without a trailing slash, as Mem0's
    clients send both); ``docs_routes`` serves its documents and the browser."""
    routes: list[BaseRoute] = []
    for prefix in ("", "/v1"):
        for path, handler, methods in _MEMORY_ROUTES:
            routes.append(Route(prefix + path, handler, methods=methods))
            routes.append(Route(prefix + path + "/", handler, methods=methods))
    return routes


__all__ = ["memory_routes"]
