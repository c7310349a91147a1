"""``POST /v1/messages``: the Anthropic Messages adapter of the memory pipeline.

The request is read as chat messages for recall and learning: ``system`` as a system message,
text blocks as the turn's words, ``tool_use`` blocks as tool calls and ``tool_result`` blocks
as tool messages; the turn's image blocks are kept for learning (``memory.multimodal``),
documents are not read.

Where the block goes, and why (docs/apis.md): Anthropic caches the prompt prefix up to each
``cache_control`` breakpoint, in the order tools → system → messages, and clients put their
breakpoints on ``system``, tools and the last block of the newest user message. The block
is appended as one more text block at the end of the last user turn that has words (not a
turn of only tool results): tools, ``system`` and every block the client sent stay
byte-identical, so each breakpoint the client set still covers exactly its own prefix, and
the entry written at this turn is found again at the next one. An agent loop's later steps
reuse the same block in the same place (it is before the ``tool_use``, never between it and
its result).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .errors import BadRequest
from .pipeline import Conversation, parse_model_body, serve_api
from .replies import Api

_ROLES = ("user", "assistant")


def _check_blocks(content: Any, where: str) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise BadRequest(f"{where} must be a string or an array of content blocks", param=where)
    for index, block in enumerate(content):
        at = f"{where}[{index}]"
        if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
            raise BadRequest(f"{at} must be an object with a string type", param=at)
        if block["type"] == "text" and not isinstance(block.get("text"), str):
            raise BadRequest(f"{at}.text must be a string", param=f"{at}.text")
        if block["type"] == "tool_result":
            inner = block.get("content")
            if inner is not None:
                _check_blocks(inner, f"{at}.content")


def parse_messages_body(raw: bytes, *, max_depth: int) -> dict[str, Any]:
    """Parse once; reject what Anthropic would reject before anything else happens."""
    body = parse_model_body(raw, max_depth=max_depth)
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadRequest("max_tokens: a positive integer is required", param="max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty array", param="messages")
    for index, message in enumerate(messages):
        at = f"messages[{index}]"
        if not isinstance(message, Mapping) or message.get("role") not in _ROLES:
            raise BadRequest(f"{at} must be an object with role user or assistant", param=at)
        _check_blocks(message.get("content"), f"{at}.content")
    system = body.get("system")
    if system is not None:
        _check_blocks(system, "system")
    return body


def _texts(content: Any) -> list[dict[str, str]]:
    """The text blocks of a content (a string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [
        {"type": "text", "text": block["text"]}
        for block in (content if isinstance(content, list) else [])
        if block.get("type") == "text"
    ]


def messages_conversation(body: Mapping[str, Any]) -> Conversation:
    """The request as chat messages (``tool_use`` as ``tool_calls``, results as ``tool``)."""
    conversation: Conversation = []
    system = body.get("system")
    if system:
        conversation.append({"role": "system", "content": _texts(system)})
    for message in body["messages"]:
        content = message.get("content")
        blocks = content if isinstance(content, list) else []
        if message["role"] == "assistant":
            calls = [
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input")).decode(),
                    },
                }
                for block in blocks
                if block.get("type") == "tool_use"
            ]
            turn: dict[str, Any] = {"role": "assistant", "content": _texts(content)}
            if calls:
                turn["tool_calls"] = calls
            conversation.append(turn)
            continue
        for block in blocks:
            if block.get("type") == "tool_result":
                inner = block.get("content")
                text = "\n".join(part["text"] for part in _texts(inner)) if inner else ""
                conversation.append(
                    {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}
                )
        words = _texts(content)
        # Image blocks stay in the user's turn: learning may look at the new turn's images.
        images = [block for block in blocks if block.get("type") == "image"]
        if words or images or not blocks:
            conversation.append({"role": "user", "content": words + images})
    return conversation


def _has_words(message: Any) -> bool:
    if not isinstance(message, Mapping) or message.get("role") != "user":
        return False
    content = message.get("content")
    if isinstance(content, str):
        return True
    return any(
        isinstance(block, Mapping) and block.get("type") != "tool_result"
        for block in (content if isinstance(content, list) else [])
    )


def inject_messages_block(body: Mapping[str, Any], block: str, position: str) -> dict[str, Any]:
    """A new body with the block as the last text block of the last user turn with words
    (first block of ``system`` with ``system_prefix``, which costs the system prompt's cache)."""
    memory_block = {"type": "text", "text": block}
    if position == "system_prefix":
        system = body.get("system")
        blocks = _texts(system) if isinstance(system, str) else list(system or [])
        return {**body, "system": [memory_block, *blocks]}
    messages = list(body["messages"])
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if _has_words(message):
            content = message["content"]
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            messages[index] = {**message, "content": [*blocks, memory_block]}
            return {**body, "messages": messages}
    return {**body, "messages": [*messages, {"role": "user", "content": [memory_block]}]}


class MessagesAdapter:
    api: Api = "messages"
    # Anthropic's metadata.user_id is any opaque string (Claude Code sends a JSON object of
    # device and session ids): only a value that is a valid id is an identity claim.
    opaque_claims: tuple[str, ...] = ("metadata.user_id",)

    def parse(self, raw: bytes, *, max_depth: int) -> dict[str, Any]:
        return parse_messages_body(raw, max_depth=max_depth)

    def conversation(self, body: dict[str, Any]) -> Conversation:
        return messages_conversation(body)

    def inject(self, body: dict[str, Any], block: str, position: str) -> dict[str, Any]:
        return inject_messages_block(body, block, position)


MESSAGES = MessagesAdapter()


async def create_message(request: Request) -> Response:
    return await serve_api(request, MESSAGES)
