"""The memory REST API (Mem0 server routes and shapes, also under ``/v1``), its OpenAPI
document and API page, and the memory browser's static files.

Every route authenticates the caller, then narrows what it touches to the users the key may
act for: ids of memories the key cannot see answer 404, exactly like absent ids.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from memory_core import AsyncMemory
from memory_core.errors import InvalidIdentity, InvalidInput, MemoryCoreError, NotFound
from memory_core.extraction import ChatLLM, LiteLLMChat
from memory_core.filters import IDENTITY_FIELDS, LOGIC
from memory_core.types import MemoryItem, Scope, validate_id

from .api_models import (
    AddRequest,
    ImportRecord,
    ListQuery,
    ListRequest,
    ScopeQuery,
    SearchRequest,
    UpdateRequest,
    build_openapi,
    validation_message,
)
from .auth import Caller
from .errors import BadRequest, Forbidden, ProxyError
from .settings import Settings

M = TypeVar("M", bound=BaseModel)
STATIC_DIR = Path(__file__).parent / "static"
EXPORT_CHUNK = 500
IMPORT_BATCH = 500
MAX_IMPORT_LINE = 1 << 20
JSONL = "application/x-ndjson"


class MemoryDisabled(ProxyError):
    status = 503
    type = "server_error"


# ---- who may see what ------------------------------------------------------------------


def sees_all_users(caller: Caller) -> bool:
    return caller.admin or "*" in caller.users


def may_see(caller: Caller, item: Mapping[str, Any]) -> bool:
    """A memory is visible when the key may act for its user (user-less ones: all-user keys)."""
    if sees_all_users(caller):
        return True
    user_id = item.get("user_id")
    return user_id is not None and user_id in caller.users


def identity_from_filters(filters: Mapping[str, Any]) -> dict[str, str]:
    """Top-level equalities on user_id/agent_id/run_id (also inside a top-level AND)."""
    found: dict[str, str] = {}
    nodes: list[Any] = [filters]
    and_items = filters.get("AND")
    if isinstance(and_items, list):
        nodes.extend(and_items)
    for node in nodes:
        if not isinstance(node, Mapping):
            continue
        for key in IDENTITY_FIELDS:
            value = node.get(key)
            if isinstance(value, Mapping) and set(value) == {"eq"}:
                value = value["eq"]
            if isinstance(value, str) and key not in found:
                found[key] = value
    return found


def filter_user_ids(filters: Any) -> list[str]:
    """Every user_id value a filter mentions, at any depth, under any operator."""
    found: list[str] = []
    if isinstance(filters, list):
        for item in filters:
            found.extend(filter_user_ids(item))
    elif isinstance(filters, Mapping):
        for key, value in filters.items():
            if key in LOGIC:
                found.extend(filter_user_ids(value))
            elif key == "user_id":
                values = value.values() if isinstance(value, Mapping) else [value]
                for v in values:
                    found.extend(v if isinstance(v, list) else [v])
    return found


def authorize_scope(
    caller: Caller,
    user_id: str | None,
    agent_id: str | None,
    run_id: str | None,
    filters: Mapping[str, Any] | None = None,
) -> Scope:
    """The scope a request may touch; filters can only narrow it (memory_core ANDs it in)."""
    if user_id is None and agent_id is None and run_id is None and filters:
        derived = identity_from_filters(filters)
        user_id, agent_id, run_id = (derived.get(k) for k in IDENTITY_FIELDS)
    if user_id is None and not sees_all_users(caller):
        user_id = caller.bound_user
        if user_id is None:
            raise Forbidden("this API key must name a user_id", param="user_id")
    scope = Scope(user_id, agent_id, run_id).require()
    if user_id is not None:
        caller.check_user(user_id)
    for value in filter_user_ids(filters or {}):
        if not isinstance(value, str):
            raise BadRequest("user_id filter values must be strings", param="filters")
        caller.check_user(validate_id(value, "user_id"))
    return scope


# ---- request plumbing ------------------------------------------------------------------


def caller_of(request: Request) -> Caller:
    caller: Caller = request.app.state.authenticator.authenticate(request.headers)
    return caller


def memory_of(request: Request) -> AsyncMemory:
    memory: AsyncMemory | None = getattr(request.app.state, "memory", None)
    if memory is None:
        raise MemoryDisabled("memory is disabled in this proxy's config (memory.enabled)")
    return memory


def parse_model(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(validation_message(exc)) from exc


async def read_json(request: Request, model: type[M]) -> M:
    raw = await request.body()
    try:
        data = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
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


def extraction_llm(request: Request) -> ChatLLM | None:
    """``memory.extraction_model`` when the memory config itself names no ``llm``."""
    settings: Settings | None = getattr(request.app.state, "settings", None)
    config = settings.extraction_llm() if settings is not None else None
    return LiteLLMChat(config) if config is not None else None


# ---- handlers --------------------------------------------------------------------------


async def add_memories(request: Request) -> Response:
    caller = caller_of(request)
    body = await read_json(request, AddRequest)
    scope = authorize_scope(caller, body.user_id, body.agent_id, body.run_id)
    memory = memory_of(request)
    llm = extraction_llm(request) if body.infer and memory.config.llm is None else None
    result = await memory.add(
        body.messages,
        **scope.as_dict(),
        metadata=body.metadata,
        infer=body.infer,
        llm=llm,
    )
    return json_response(result)


async def _list(
    request: Request,
    caller: Caller,
    ids: tuple[str | None, str | None, str | None],
    filters: dict[str, Any] | None,
    top_k: int,
    cursor: str | None,
) -> Response:
    scope = authorize_scope(caller, *ids, filters=filters)
    before = decode_cursor(cursor) if cursor else None
    result = await memory_of(request).get_all(
        **scope.as_dict(), limit=top_k + 1, filters=filters, before=before
    )
    items = result["results"]
    next_cursor = encode_cursor(items[top_k - 1]) if len(items) > top_k else None
    return json_response({"results": items[:top_k], "next_cursor": next_cursor})


async def list_memories(request: Request) -> Response:
    caller = caller_of(request)
    query = read_query(request, ListQuery)
    ids = (query.user_id, query.agent_id, query.run_id)
    return await _list(request, caller, ids, None, query.top_k, query.cursor)


async def list_memories_filtered(request: Request) -> Response:
    caller = caller_of(request)
    body = await read_json(request, ListRequest)
    ids = (body.user_id, body.agent_id, body.run_id)
    return await _list(request, caller, ids, body.filters, body.top_k, body.cursor)


async def search_memories(request: Request) -> Response:
    caller = caller_of(request)
    body = await read_json(request, SearchRequest)
    scope = authorize_scope(caller, body.user_id, body.agent_id, body.run_id, body.filters)
    result = await memory_of(request).search(
        body.query,
        **scope.as_dict(),
        limit=body.top_k,
        threshold=body.threshold,
        filters=body.filters,
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
    item = await memory_of(request).update(memory_id, body.text, metadata=body.metadata)
    return json_response(item)


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
    if query.user_id is None and query.agent_id is None and query.run_id is None:
        raise InvalidIdentity("at least one of user_id, agent_id or run_id is required")
    scope = authorize_scope(caller, query.user_id, query.agent_id, query.run_id)
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


async def export_lines(memory: AsyncMemory, scope: Scope) -> tuple[int, AsyncIterator[bytes]]:
    """The scope's memories as JSONL chunks (newest first), and how many there are."""
    listing = await memory.get_all(
        user_id=scope.user_id, agent_id=scope.agent_id, run_id=scope.run_id, limit=1_000_000
    )
    items = listing["results"]

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(items), EXPORT_CHUNK):
            yield b"".join(orjson.dumps(i) + b"\n" for i in items[start : start + EXPORT_CHUNK])

    return len(items), chunks()


async def export_memories(request: Request) -> Response:
    caller = caller_of(request)
    query = read_query(request, ScopeQuery)
    scope = authorize_scope(caller, query.user_id, query.agent_id, query.run_id)
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


@dataclass(slots=True)
class ImportReport:
    imported: int = 0
    exists: int = 0
    duplicate: int = 0
    lines: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "imported": self.imported,
            "exists": self.exists,
            "duplicate": self.duplicate,
            "errors": self.errors,
        }


async def split_lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Lines of a byte stream (without the newline); an over-long line is yielded cut off
    (and refused by the parser), the rest of it skipped."""
    buffer = b""
    skipping = False
    async for chunk in chunks:
        if skipping:
            if b"\n" not in chunk:
                continue
            chunk = chunk.split(b"\n", 1)[1]
            skipping = False
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line
        if len(buffer) > MAX_IMPORT_LINE:
            yield buffer
            buffer = b""
            skipping = True
    if buffer:
        yield buffer


Authorize = Callable[[dict[str, Any]], None]


async def import_lines(
    memory: AsyncMemory,
    lines: AsyncIterable[bytes],
    authorize: Authorize,
    *,
    on_batch: Callable[[ImportReport], Awaitable[None] | None] | None = None,
) -> ImportReport:
    """Validate JSONL line by line; store good lines in batches; report bad ones by number.

    ``authorize(record)`` fills in / checks the record's scope and raises to refuse the line.
    """
    report = ImportReport()
    batch: list[dict[str, Any]] = []

    async def flush() -> None:
        if batch:
            for status in await memory.import_memories(batch):
                setattr(report, status, getattr(report, status) + 1)
            batch.clear()
        if on_batch is not None:
            maybe = on_batch(report)
            if maybe is not None:
                await maybe

    async for raw in lines:
        report.lines += 1
        if not raw.strip():
            continue
        try:
            record = _parse_import_line(raw)
            authorize(record)
        except (ValueError, ProxyError, MemoryCoreError) as exc:
            message = exc.message if isinstance(exc, ProxyError) else str(exc)
            report.errors.append({"line": report.lines, "message": message})
            continue
        batch.append(record)
        if len(batch) >= IMPORT_BATCH:
            await flush()
    await flush()
    return report


def _parse_import_line(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_IMPORT_LINE:
        raise ValueError(f"line longer than {MAX_IMPORT_LINE} bytes")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("each line must be a JSON object")
    try:
        record = ImportRecord.model_validate(data)
    except ValidationError as exc:
        raise ValueError(validation_message(exc)) from exc
    return record.checked()


def import_authorizer(caller: Caller, target: ScopeQuery) -> Authorize:
    """Lines take the target's ids when they have none, must match it when they do, and
    must name a user the key may act for."""

    def authorize(record: dict[str, Any]) -> None:
        for key in IDENTITY_FIELDS:
            wanted = getattr(target, key)
            if wanted is None:
                continue
            if record.get(key) is None:
                record[key] = wanted
            elif record[key] != wanted:
                raise InvalidInput(f"{key} {record[key]!r} differs from the import's {wanted!r}")
        scope = authorize_scope(
            caller, record.get("user_id"), record.get("agent_id"), record.get("run_id")
        )
        record.update(scope.as_dict())  # a bound key's lines default to its user

    return authorize


async def import_memories(request: Request) -> Response:
    caller = caller_of(request)
    target = read_query(request, ScopeQuery)
    if target.user_id or target.agent_id or target.run_id:
        authorize_scope(caller, target.user_id, target.agent_id, target.run_id)
    memory = memory_of(request)
    report = await import_lines(
        memory, split_lines(request.stream()), import_authorizer(caller, target)
    )
    return json_response(report.as_dict())


# ---- OpenAPI and the API page ----------------------------------------------------------


async def openapi_json(request: Request) -> Response:
    spec = getattr(request.app.state, "openapi", None)
    if spec is None:
        spec = request.app.state.openapi = build_openapi()
    return JSONResponse(spec)


def render_api_page(spec: Mapping[str, Any]) -> str:
    """A readable, dependency-free HTML page of the OpenAPI document."""
    esc = html.escape
    parts = [
        '<!doctype html><html lang=en><meta charset=utf-8><link rel=icon href="data:,">',
        f"<title>{esc(spec['info']['title'])}</title>",
        '<link rel="stylesheet" href="/ui/style.css">',
        "<body class=docs><main>",
        f"<h1>{esc(spec['info']['title'])}</h1><p>{esc(spec['info']['description'])}</p>",
        "<p>Authenticate with <code>Authorization: Bearer KEY</code> or <code>X-API-Key</code>. "
        'Errors: <code>{"error": {"message", "type", "param", "code"}}</code>. '
        'Machine-readable: <a href="/openapi.json">/openapi.json</a>. '
        'Memory browser: <a href="/ui/">/ui/</a>.</p>',
    ]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            parts.append(
                f"<section class=op><h2><span class='m {esc(method)}'>{esc(method.upper())}"
                f"</span> <code>{esc(path)}</code></h2><p>{esc(op['summary'])}</p>"
            )
            params = op.get("parameters") or []
            if params:
                rows = "".join(
                    f"<li><code>{esc(p['name'])}</code> ({esc(p['in'])})"
                    f"{' — ' + esc(p['description']) if p.get('description') else ''}</li>"
                    for p in params
                )
                parts.append(f"<h3>Parameters</h3><ul>{rows}</ul>")
            body = op.get("requestBody", {}).get("content", {})
            for media, content in body.items():
                parts.append(f"<h3>Request body ({esc(media)})</h3>")
                parts.append(_schema_block(spec, content["schema"]))
            ok = op["responses"]["200"].get("content", {})
            for media, content in ok.items():
                parts.append(f"<h3>Response ({esc(media)})</h3>")
                parts.append(_schema_block(spec, content["schema"]))
            parts.append("</section>")
    parts.append("<section class=op><h2>Models</h2>")
    for name in sorted(spec["components"]["schemas"]):
        parts.append(_schema_block(spec, {"$ref": f"#/components/schemas/{name}"}))
    parts.append("</section></main></body></html>")
    return "".join(parts)


def _schema_block(spec: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    """A model as a table of its fields (name, type, required, description), raw JSON folded."""
    ref = schema.get("$ref") or schema.get("items", {}).get("$ref")
    if ref is None:
        return f"<p><code>{html.escape(_type_name(schema))}</code></p>"
    name = ref.rsplit("/", 1)[-1]
    resolved = spec["components"]["schemas"].get(name, {})
    prefix = "array of " if "items" in schema else ""
    required = set(resolved.get("required", []))
    rows = []
    for prop_name, prop in resolved.get("properties", {}).items():
        note = prop.get("description") or ""
        if "default" in prop and prop["default"] not in (None, [], {}):
            note = f"default {json.dumps(prop['default'])}. {note}".strip()
        rows.append(
            f"<tr><td><code>{html.escape(prop_name)}</code></td>"
            f"<td>{html.escape(_type_name(prop))}</td>"
            f"<td>{'yes' if prop_name in required else ''}</td>"
            f"<td>{html.escape(note)}</td></tr>"
        )
    return (
        f"<p>{prefix}<strong>{html.escape(name)}</strong></p>"
        "<table><tr><th>field</th><th>type</th><th>required</th><th>notes</th></tr>"
        + "".join(rows)
        + "</table><details><summary>JSON schema</summary>"
        f"<pre>{html.escape(json.dumps(resolved, indent=2))}</pre></details>"
    )


def _type_name(schema: Mapping[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(_type_name(s) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type_name(schema.get('items', {}))}"
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    return str(kind)


async def api_page(request: Request) -> Response:
    spec = getattr(request.app.state, "openapi", None)
    if spec is None:
        spec = request.app.state.openapi = build_openapi()
    return Response(render_api_page(spec), media_type="text/html; charset=utf-8")


async def to_browser(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=307)


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
    ("/search", search_memories, ["POST"]),
    ("/reset", reset_memories, ["POST"]),
    ("/auth/me", whoami, ["GET"]),
]


def memory_routes() -> list[BaseRoute]:
    """The memory API at ``/`` and ``/v1`` (with and without a trailing slash, as Mem0's
    clients send both), ``/openapi.json``, ``/docs``, and the browser at ``/ui``."""
    routes: list[BaseRoute] = []
    for prefix in ("", "/v1"):
        for path, handler, methods in _MEMORY_ROUTES:
            routes.append(Route(prefix + path, handler, methods=methods))
            routes.append(Route(prefix + path + "/", handler, methods=methods))
    routes += [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", api_page, methods=["GET"]),
        Route("/", to_browser, methods=["GET"]),
        Mount("/ui", StaticFiles(directory=STATIC_DIR, html=True), name="ui"),
    ]
    return routes


__all__ = [
    "ImportReport",
    "authorize_scope",
    "export_lines",
    "import_authorizer",
    "import_lines",
    "may_see",
    "memory_routes",
    "split_lines",
]
