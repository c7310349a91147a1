"""``POST /v1/chat/completions``: the Chat Completions adapter of the memory pipeline."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from memory_core.messages import check_messages

from .errors import BadRequest
from .inject import inject_memory_block
from .pipeline import Conversation, parse_model_body, serve_api
from .replies import Api


def parse_chat_body(raw: bytes, *, max_depth: int) -> dict[str, Any]:
    """Parse once; reject what OpenAI would reject before anything else happens."""
    body = parse_model_body(raw, max_depth=max_depth)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty array", param="messages")
    check_messages(messages)  # InvalidInput: 400 naming the member, at the error edge
    return body


class ChatAdapter:
    """Chat Completions: the messages are already the pipeline's conversation; the block is a
    system message before the last user message (or first, with ``system_prefix``)."""

    api: Api = "chat"
    opaque_claims: tuple[str, ...] = ()

    def parse(self, raw: bytes, *, max_depth: int) -> dict[str, Any]:
        return parse_chat_body(raw, max_depth=max_depth)

    def conversation(self, body: dict[str, Any]) -> Conversation:
        messages: Conversation = body["messages"]
        return messages

    def inject(self, body: dict[str, Any], block: str, position: str) -> dict[str, Any]:
        return {**body, "messages": inject_memory_block(body["messages"], block, position=position)}


CHAT = ChatAdapter()


async def chat_completions(request: Request) -> Response:
    return await serve_api(request, CHAT)
