"""The MCP tools over ``AsyncMemory``: one function per tool, the REST API's rules.

Every tool takes the authenticated ``Caller`` and the tool's arguments; the scope comes from
``authorize_scope`` (a bound key acts for its user, any other key names one with the
``user_id`` argument), ids go through ``may_see`` (a foreign id answers "not found" exactly
like an absent one), and inputs are bounded by the REST API's models. Results are a compact
text for the model plus the REST API's JSON as structured content.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent

from memory_core import AsyncMemory
from memory_core import errors as core
from memory_core.checks import normalize_messages
from memory_core.messages import cap_exchange
from memory_core.queue import LearningQueue
from memory_core.types import MemoryItem, Scope

from .api_models import AddRequest, ListQuery, SearchRequest, UpdateRequest
from .auth import Caller
from .errors import ProxyError
from .learning import ExtractionModels, learning_payload
from .memories_api import decode_cursor, encode_cursor, parse_model
from .memory_access import authorize_scope, may_see
from .metrics import Metrics

SOURCE = "mcp"  # metadata.source of memories stored through MCP
MAX_MESSAGES = 100
_SERVER_ERRORS = (core.StoreError, core.EmbedderError)


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """What ``add_memory`` stores a memory with (infer=false): its last day, immutability."""

    expiration_date: str | None = None
    immutable: bool = False


@dataclass(frozen=True, slots=True)
class MemoryTools:
    """What the tools need: the memory, the learning queue and the extraction model."""

    memory: AsyncMemory
    queue: LearningQueue | None
    extraction: ExtractionModels
    metrics: Metrics | None = None

    async def search_memories(
        self, caller: Caller, query: str, limit: int, user_id: str | None
    ) -> CallToolResult:
        body = parse_model(SearchRequest, {"query": query, "top_k": limit, "user_id": user_id})
        scope = user_scope(caller, body.user_id)
        result = await self.memory.search(body.query, user_id=scope.user_id, limit=body.top_k)
        items = result["results"]
        return answer(listing(items, empty="no memories found"), {"results": items})

    async def list_memories(
        self, caller: Caller, limit: int, cursor: str | None, user_id: str | None
    ) -> CallToolResult:
        query = parse_model(ListQuery, {"top_k": limit, "cursor": cursor, "user_id": user_id})
        scope = user_scope(caller, query.user_id)
        before = decode_cursor(query.cursor) if query.cursor else None
        result = await self.memory.get_all(
            user_id=scope.user_id, limit=query.top_k + 1, before=before
        )
        items = result["results"]
        next_cursor = encode_cursor(items[query.top_k - 1]) if len(items) > query.top_k else None
        text = listing(items[: query.top_k], empty="no memories")
        if next_cursor:
            text += f"\nmore: cursor={next_cursor}"
        return answer(text, {"results": items[: query.top_k], "next_cursor": next_cursor})

    async def add_memory(
        self,
        caller: Caller,
        text: str | None,
        messages: list[dict[str, Any]] | None,
        infer: bool,
        user_id: str | None,
        lifecycle: Lifecycle = Lifecycle(),
    ) -> CallToolResult:
        if (text is None) == (messages is None):
            raise ToolError("give exactly one of text or messages")
        if infer and lifecycle != Lifecycle():
            raise ToolError("expiration_date and immutable need infer=false")
        if messages is not None and not 0 < len(messages) <= MAX_MESSAGES:
            raise ToolError(f"messages must hold 1 to {MAX_MESSAGES} messages")
        given: Any = text if text is not None else messages
        body = parse_model(
            AddRequest,
            {
                "messages": given,
                "user_id": user_id,
                "infer": infer,
                "expiration_date": lifecycle.expiration_date,
                "immutable": lifecycle.immutable,
            },
        )
        scope = user_scope(caller, body.user_id)
        chat = [m for m in normalize_messages(body.messages) if m.get("role") != "system"]
        if not chat:
            raise ToolError("nothing to remember: no user or assistant text")
        if infer:
            return await self._enqueue(scope, chat)
        result = await self.memory.add(
            chat,
            user_id=scope.user_id,
            infer=False,
            metadata={"source": SOURCE},
            source=SOURCE,
            expiration_date=body.expiration_date,
            immutable=body.immutable,
        )
        added = result["results"]
        lines = [f"{r['event']} {r['id']}: {r['memory']}" for r in added]
        return answer("\n".join(lines) or "already remembered", {"results": added})

    async def _enqueue(self, scope: Scope, chat: list[dict[str, Any]]) -> CallToolResult:
        if self.queue is None or self.extraction.configured() is None:
            raise ToolError(
                "infer=true needs a learning model (memory.extraction_model or memory.llm); "
                "use infer=false to store the text as it is"
            )
        limits = self.memory.config.limits
        # Capped before enqueueing, as the chat route does (and again in add(infer=True)).
        exchange = cap_exchange(
            chat,
            max_user_chars=limits.max_exchange_user_chars,
            max_reply_chars=limits.max_exchange_reply_chars,
        )
        if not exchange:
            raise ToolError("nothing to learn: no user or assistant text")
        payload = learning_payload(scope.as_dict(), exchange, "")
        payload["source"] = SOURCE
        job_id = await self.queue.enqueue(scope.user_id or "", payload)
        if self.metrics is not None:
            self.metrics.enqueued.inc()
        return answer(
            f"queued for learning (job {job_id}); the facts appear once learned",
            {"queued": True, "job_id": job_id},
        )

    async def update_memory(self, caller: Caller, memory_id: str, text: str) -> CallToolResult:
        body = parse_model(UpdateRequest, {"text": text})
        await self.visible(caller, memory_id)
        item = await self.memory.update(memory_id, body.text, source=SOURCE)
        return answer(f"updated {item['id']}: {item['memory']}", dict(item))

    async def delete_memory(self, caller: Caller, memory_id: str) -> CallToolResult:
        await self.visible(caller, memory_id)
        await self.memory.delete(memory_id, source=SOURCE)
        return answer(f"deleted {memory_id}", {"deleted": memory_id})

    async def memory_history(self, caller: Caller, memory_id: str) -> CallToolResult:
        # Only live memories the key sees: history rows do not say whose memory it was.
        await self.visible(caller, memory_id)
        history = await self.memory.history(memory_id)
        lines = [
            f"{h['created_at']} {h['event']}: {h['old_memory'] or ''} -> {h['new_memory'] or ''}"
            for h in history
        ]
        return answer("\n".join(lines) or "no history", {"results": history})

    async def visible(self, caller: Caller, memory_id: str) -> MemoryItem:
        """The memory, or the same "not found" whether it is absent or someone else's."""
        item = await self.memory.get(memory_id)
        if not may_see(caller, item):
            raise core.NotFound(f"memory {memory_id} not found")
        return item


def user_scope(caller: Caller, user_id: str | None) -> Scope:
    """The user's scope, by the REST API's rules; MCP tools always act for one user."""
    if user_id is None and caller.bound_user is None:
        raise ToolError("this API key must name a user_id (the tool's user_id argument)")
    return authorize_scope(caller, {"user_id": user_id})


def listing(items: list[MemoryItem], *, empty: str) -> str:
    if not items:
        return empty
    lines = []
    for item in items:
        score = f" (score {item['score']:.2f})" if "score" in item else ""
        lines.append(f"- [{item['id']}] {item['memory']}{score}")
    return "\n".join(lines)


def answer(text: str, data: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


async def as_tool_error(call: Callable[[], Awaitable[CallToolResult]]) -> CallToolResult:
    """Run a tool; known failures become tool errors with the REST API's messages."""
    try:
        return await call()
    except ToolError:
        raise
    except ProxyError as exc:
        raise ToolError(exc.message) from None
    except _SERVER_ERRORS:
        # Store and embedder messages carry internals (SQL, paths): the log has them.
        raise ToolError("the memory store or embedder is unavailable (see the log)") from None
    except core.MemoryCoreError as exc:
        raise ToolError(str(exc)) from None


__all__ = ["SOURCE", "Lifecycle", "MemoryTools", "as_tool_error"]
