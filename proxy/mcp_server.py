"""The MCP server (official ``mcp`` SDK): the memory tools, and the Streamable HTTP endpoint
mounted at ``/mcp`` in the proxy's own Starlette app.

The endpoint sits behind the app's ``BrowserGuard`` (Origin and Host rules, as on every
route) and authenticates the key before the SDK sees a byte; each tool call authenticates
the request's headers again, so a tool never runs without a ``Caller``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import Field
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from memory_core import errors as core

from .auth import Caller
from .errors import MemoryDisabled, ProxyError, error_response
from .learning import ExtractionModels
from .mcp_tools import Lifecycle, MemoryTools, as_tool_error
from .request_body import read_body
from .settings import MCP_WRITE_TOOLS, Settings
from .state import state_of

# Who a tool call is for and what it works on: from the HTTP request, or fixed on stdio.
Resolver = Callable[[Context], Awaitable[tuple[MemoryTools, Caller]]]

UserId = Annotated[
    str | None,
    Field(
        default=None,
        max_length=128,
        description="whose memories; only for keys not bound to one user",
    ),
]
MemoryId = Annotated[str, Field(min_length=1, max_length=128, description="a memory's id")]
Text = Annotated[str, Field(min_length=1, max_length=10_000)]

INSTRUCTIONS = (
    "Long-term memory about the user. Search it before answering questions about the user; "
    "add durable facts, preferences and decisions the user states."
)


# Resources: templates, since what they list depends on who asks (static resources get no
# request context in the SDK, so they could not be authorized per caller).
USER_MEMORIES = "memory://users/{user_id}/memories"
ONE_MEMORY = "memory://memories/{memory_id}"
RESOURCE_LIMIT = 100


def build_mcp_server(exposed: list[str], resolve: Resolver, *, resources: bool = True) -> MCPServer:
    """An ``MCPServer`` with the ``exposed`` tools (and the ``memory://`` resource templates),
    each resolving its caller per call."""
    server: MCPServer = MCPServer(name="memproxy", instructions=INSTRUCTIONS)
    if resources:
        add_resources(server, resolve)

    async def search_memories(
        query: Text,
        ctx: Context,
        limit: Annotated[int, Field(ge=1, le=100)] = 10,
        user_id: UserId = None,
    ) -> CallToolResult:
        tools, caller = await resolve(ctx)
        return await as_tool_error(lambda: tools.search_memories(caller, query, limit, user_id))

    async def list_memories(
        ctx: Context,
        limit: Annotated[int, Field(ge=1, le=1000)] = 50,
        cursor: Annotated[str | None, Field(max_length=512)] = None,
        user_id: UserId = None,
    ) -> CallToolResult:
        tools, caller = await resolve(ctx)
        return await as_tool_error(lambda: tools.list_memories(caller, limit, cursor, user_id))

    async def add_memory(
        ctx: Context,
        text: Annotated[str | None, Field(max_length=10_000)] = None,
        messages: Annotated[list[dict[str, Any]] | None, Field(max_length=100)] = None,
        infer: bool = False,
        user_id: UserId = None,
        expiration_date: Annotated[
            str | None, Field(max_length=10, description="YYYY-MM-DD: last day it is recalled")
        ] = None,
        immutable: Annotated[
            bool, Field(description="learning may never change or delete it")
        ] = False,
    ) -> CallToolResult:
        tools, caller = await resolve(ctx)
        lifecycle = Lifecycle(expiration_date, immutable)
        return await as_tool_error(
            lambda: tools.add_memory(caller, text, messages, infer, user_id, lifecycle)
        )

    async def update_memory(id: MemoryId, text: Text, ctx: Context) -> CallToolResult:
        tools, caller = await resolve(ctx)
        return await as_tool_error(lambda: tools.update_memory(caller, id, text))

    async def delete_memory(id: MemoryId, ctx: Context) -> CallToolResult:
        tools, caller = await resolve(ctx)
        return await as_tool_error(lambda: tools.delete_memory(caller, id))

    async def memory_history(id: MemoryId, ctx: Context) -> CallToolResult:
        tools, caller = await resolve(ctx)
        return await as_tool_error(lambda: tools.memory_history(caller, id))

    descriptions: dict[str, tuple[Callable[..., Any], str]] = {
        "search_memories": (search_memories, "Find the user's memories relevant to a query."),
        "list_memories": (list_memories, "List the user's memories, newest first (paged)."),
        "add_memory": (
            add_memory,
            "Remember a text (infer=false: as given; infer=true: learn facts from it or "
            "from messages, in the background).",
        ),
        "update_memory": (update_memory, "Replace the text of one memory by id."),
        "delete_memory": (delete_memory, "Delete one memory by id."),
        "memory_history": (memory_history, "Show the changes made to one memory by id."),
    }
    for name in exposed:
        fn, description = descriptions[name]
        writes = name in MCP_WRITE_TOOLS
        annotations = ToolAnnotations(
            read_only_hint=not writes, destructive_hint=name == "delete_memory"
        )
        server.add_tool(fn, name=name, description=description, annotations=annotations)
    return server


def add_resources(server: MCPServer, resolve: Resolver) -> None:
    """``memory://users/{user_id}/memories`` (newest first) and ``memory://memories/{id}``,
    as JSON, by the tools' rules: the key must act for the user, a foreign id is not found."""

    @server.resource(
        USER_MEMORIES,
        name="user_memories",
        description=f"A user's memories, newest first (the latest {RESOURCE_LIMIT}).",
        mime_type="application/json",
    )
    async def user_memories(user_id: str, ctx: Context) -> str:
        async def read() -> dict[str, Any]:
            tools, caller = await resolve(ctx)
            listed = await tools.list_memories(caller, RESOURCE_LIMIT, None, user_id)
            return listed.structured_content or {}

        return await as_resource(read)

    @server.resource(
        ONE_MEMORY,
        name="memory",
        description="One memory by id.",
        mime_type="application/json",
    )
    async def one_memory(memory_id: str, ctx: Context) -> str:
        async def read() -> dict[str, Any]:
            tools, caller = await resolve(ctx)
            return dict(await tools.visible(caller, memory_id))

        return await as_resource(read)


async def as_resource(read: Callable[[], Awaitable[dict[str, Any]]]) -> str:
    """A resource's JSON; known failures become resource errors with the tools' messages."""

    async def as_result() -> CallToolResult:
        try:
            data = await read()
        except core.NotFound as exc:
            raise ResourceNotFoundError(str(exc)) from None
        return CallToolResult(content=[], structured_content=data)

    try:
        result = await as_tool_error(as_result)
    except ToolError as exc:
        raise ResourceError(str(exc)) from None
    return orjson.dumps(result.structured_content).decode()


async def http_resolve(ctx: Context) -> tuple[MemoryTools, Caller]:
    """The tools and caller of an HTTP tool call: the app's state and the request's key."""
    request = ctx.request_context.request
    if not isinstance(request, Request):
        raise ProxyError("no HTTP request")
    state = state_of(request)
    if state.memory is None:
        raise MemoryDisabled("memory is disabled in this proxy's config (memory.enabled)")
    caller = state.authenticator.authenticate(request.headers)
    return MemoryTools(state.memory, state.queue, state.extraction, state.metrics), caller


class McpEndpoint:
    """``/mcp``: authenticate, then hand the request to the SDK's session manager."""

    def __init__(self, settings: Settings) -> None:
        self.server = build_mcp_server(
            settings.mcp.exposed(), _guarded(http_resolve), resources=settings.mcp.resources
        )
        self.limits = settings.server.limits
        self.manager = StreamableHTTPSessionManager(
            self.server._lowlevel_server,
            stateless=True,
            json_response=True,
            # Origin and Host are the app's BrowserGuard's: one rule set for every route.
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            max_request_body_size=settings.server.limits.max_api_body_bytes,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            state_of(request).authenticator.authenticate(request.headers)
            if scope["method"] == "POST":
                # Read here, bounded in size and time like every route's body, then replayed.
                body = await read_body(
                    request,
                    limit=self.limits.max_api_body_bytes,
                    timeout_s=self.limits.body_timeout_s,
                )
                receive = replay(body, receive)
        except ProxyError as exc:
            response = error_response(exc.status, exc.message, exc.type, code=exc.code)
            await response(scope, receive, send)
            return
        await self.manager.handle_request(scope, receive, send)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the already read ``body`` once, then the client's events
    (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _guarded(resolve: Resolver) -> Resolver:
    """Authentication failures inside a tool call become tool errors, never tracebacks."""

    async def wrapped(ctx: Context) -> tuple[MemoryTools, Caller]:
        try:
            return await resolve(ctx)
        except ProxyError as exc:
            raise ToolError(exc.message) from None

    return wrapped


def fixed_resolver(tools: MemoryTools, caller: Caller) -> Resolver:
    """One caller for every call (stdio: the local user who launched the command)."""

    async def resolve(ctx: Context) -> tuple[MemoryTools, Caller]:
        return tools, caller

    return resolve


__all__ = ["ExtractionModels", "McpEndpoint", "build_mcp_server", "fixed_resolver"]
