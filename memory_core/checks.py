"""Checks on what callers give the library: messages, metadata, limits, ids, texts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import InvalidInput, NotFound
from .messages import check_messages
from .types import IDENTITY_FIELDS, Message

MAX_MEMORY_CHARS = 10_000
# Identity lives in columns: metadata naming it would move memories between users.
RESERVED_METADATA = IDENTITY_FIELDS

MessagesInput = str | Mapping[str, Any] | Sequence[Mapping[str, Any] | str]


def normalize_messages(messages: MessagesInput) -> list[Message]:
    """Accept a string, one message, or a list of messages/strings; return chat messages."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if isinstance(messages, Mapping):
        messages = [messages]
    if not isinstance(messages, Sequence):
        raise InvalidInput("messages must be a string, a message object or a list of them")
    result: list[Message] = []
    for message in messages:
        if isinstance(message, str):
            result.append({"role": "user", "content": message})
        elif isinstance(message, Mapping):
            item = {"role": "user", **message}
            if isinstance(item.get("content"), Mapping):  # Mem0's one-part form (an image...)
                item["content"] = [item["content"]]
            result.append(item)
        else:
            raise InvalidInput("each message must be a string or an object with role and content")
    check_messages(result)
    return result


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Caller metadata, refusing identity keys (they would move memories between users)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidInput("metadata must be an object")
    clash = [key for key in RESERVED_METADATA if key in metadata]
    if clash:
        raise InvalidInput(f"metadata may not set {', '.join(clash)}; pass them as arguments")
    return dict(metadata)


def memory_text(text: str) -> str:
    """A memory's stored text: stripped and cut to ``MAX_MEMORY_CHARS``."""
    return text.strip()[:MAX_MEMORY_CHARS]


def check_limit(limit: int, *, maximum: int = 1000) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= maximum:
        raise InvalidInput(f"limit must be an integer from 1 to {maximum}")
    return limit


def check_memory_id(memory_id: str) -> str:
    if not isinstance(memory_id, str) or not 1 <= len(memory_id) <= 128 or "\x00" in memory_id:
        raise NotFound("memory not found")
    return memory_id


__all__ = [
    "MAX_MEMORY_CHARS",
    "RESERVED_METADATA",
    "MessagesInput",
    "check_limit",
    "check_memory_id",
    "check_metadata",
    "memory_text",
    "normalize_messages",
]
