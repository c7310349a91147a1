"""Chat messages as hostile input: their text, their shape, the markers memproxy puts in them,
and how much of an exchange learning may take. Pure functions, shared by the proxy and the
library (one definition of each marker)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import InvalidInput

MEMORY_BLOCK_OPEN = "<memories>"
MEMORY_BLOCK_CLOSE = "</memories>"
MEMORY_BLOCK = re.compile(r"<memories>.*?</memories>", re.DOTALL)
TASK_PROMPT_PREFIX = "### Task:"  # Open WebUI's background-task prompts begin so

# Part types of OpenAI's Chat Completions content arrays, and the member each must carry with
# its JSON type. Other types (a provider's own, through LiteLLM) pass if they are objects
# with a string ``type``.
_PART_MEMBERS: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "text": ("text", str),
    "input_text": ("text", str),
    "image_url": ("image_url", (dict, str)),
    "input_audio": ("input_audio", dict),
    "file": ("file", dict),
    "refusal": ("refusal", str),
}


def message_text(message: Mapping[str, Any]) -> str:
    """The plain text of a chat message (text parts joined; images and tool data ignored)."""
    content = message.get("content")
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, list):
        parts = [
            part["text"]
            for part in content
            if isinstance(part, Mapping)
            and part.get("type") in ("text", "input_text")
            and isinstance(part.get("text"), str)
        ]
        return "\n".join(p for p in parts if p).strip()
    return ""


def check_content(content: Any, where: str) -> None:
    """Refuse a message content that is not a string, null, or a list of well-typed parts
    (``InvalidInput`` naming the first bad member, e.g. ``messages[2].content[0].text``)."""
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidInput(
            f"{where} must be a string, null or an array of content parts", param=where
        )
    for index, part in enumerate(content):
        at = f"{where}[{index}]"
        if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
            raise InvalidInput(f"{at} must be an object with a string type", param=at)
        expected = _PART_MEMBERS.get(part["type"])
        if expected is None:
            continue
        member, kinds = expected
        value = part.get(member)
        if not isinstance(value, kinds):
            raise InvalidInput(
                f"{at}.{member} has the wrong type for a {part['type']!r} part",
                param=f"{at}.{member}",
            )
        if isinstance(value, Mapping) and part["type"] == "image_url":
            if not isinstance(value.get("url"), str):
                raise InvalidInput(
                    f"{at}.image_url.url must be a string", param=f"{at}.image_url.url"
                )


def check_messages(messages: Sequence[Any], where: str = "messages") -> None:
    """Every message an object with a string role and a well-typed content."""
    for index, message in enumerate(messages):
        at = f"{where}[{index}]"
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise InvalidInput(f"{at} must be an object with a role", param=at)
        check_content(message.get("content"), f"{at}.content")


def strip_memory_blocks(text: str) -> str:
    """Remove every recalled ``<memories>`` block from a text (never learn them back)."""
    return MEMORY_BLOCK.sub("", text).strip()


def cap_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


def cap_exchange(
    messages: Sequence[Mapping[str, Any]], *, max_user_chars: int, max_reply_chars: int
) -> list[dict[str, str]]:
    """The text of an exchange within a learning budget: user turns share ``max_user_chars``,
    the other turns (the reply) share ``max_reply_chars``; the newest turns are kept first,
    each cut at its end. Whatever a request holds, learning never takes more than these."""
    kept: list[dict[str, str]] = []
    budgets = {"user": max_user_chars, "other": max_reply_chars}
    for message in reversed(messages):
        role = str(message.get("role", "user"))
        text = message_text(message)
        side = "user" if role == "user" else "other"
        if not text or budgets[side] <= 0:
            continue
        text = cap_text(text, budgets[side])
        budgets[side] -= len(text)
        kept.append({"role": role, "content": text})
    kept.reverse()
    return kept


__all__ = [
    "MEMORY_BLOCK",
    "MEMORY_BLOCK_CLOSE",
    "MEMORY_BLOCK_OPEN",
    "TASK_PROMPT_PREFIX",
    "cap_exchange",
    "cap_text",
    "check_content",
    "check_messages",
    "message_text",
    "strip_memory_blocks",
]
