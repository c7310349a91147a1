"""Chat-UI background tasks (docs/chat-uis.md): the one-shot calls Open WebUI and LibreChat
make besides the chat (titles, tags, follow-ups, ...), which are never learned from, and what
such a task is about when it recalls."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from memory_core.messages import TASK_PROMPT_PREFIX, message_text

from .settings import TaskKind

# How background tasks begin (the only user message, or the only message). ``None``: an Open
# WebUI "### Task:" prompt, named by its first line (see ``_OPENWEBUI_TASK_WORDS``).
TASK_PREFIXES: tuple[tuple[str, TaskKind | None], ...] = (
    (TASK_PROMPT_PREFIX, None),
    ("Your task is to reflect the speaker's likely facial expression", "emoji"),
    ("You have been provided with a set of responses from various models", "moa"),
    ("Provide a concise, 5-word-or-less title for the conversation", "title"),  # LibreChat
    ("Please generate a concise, 5-word-or-less title for the conversation", "title"),
    ("Analyze this conversation and provide:", "title"),  # LibreChat's structured titles
)
# Open WebUI's prompt-based tool selection ("Function Calling: Default") is a system prompt.
SYSTEM_TASK_PREFIXES: tuple[tuple[str, TaskKind], ...] = (("Available Tools:", "function_calling"),)
_OPENWEBUI_TASK_WORDS: tuple[tuple[str, TaskKind], ...] = (
    ("autocomplet", "autocomplete"),
    ("follow-up", "follow_ups"),
    ("follow up", "follow_ups"),
    ("useful messages", "follow_ups"),
    ("tags", "tags"),
    ("search quer", "search_query"),
    ("image generation", "image_prompt"),
    ("title", "title"),
)


def _openwebui_task_kind(text: str) -> TaskKind:
    """Name an Open WebUI "### Task:" prompt by its first line of instructions."""
    rest = text.lstrip()[len(TASK_PROMPT_PREFIX) :].lstrip()
    first_line = rest.split("\n", 1)[0].lower()
    for word, kind in _OPENWEBUI_TASK_WORDS:
        if word in first_line:
            return kind
    return "other"


def background_task(messages: Sequence[Any], extra_prefixes: Sequence[str] = ()) -> TaskKind | None:
    """The chat-UI background task a request is, or None for a real chat turn.

    A task is a one-shot call: no assistant or tool turns, at most one user message, and that
    message (or, without one, the last message) starts with a known task prompt; or its first
    message is Open WebUI's tool-selection system prompt.
    """
    dicts = [m for m in messages if isinstance(m, Mapping)]
    roles = [m.get("role") for m in dicts]
    if not dicts or any(role in ("assistant", "tool", "function") for role in roles):
        return None
    users = [m for m in dicts if m.get("role") == "user"]
    if len(users) > 1:
        return None
    text = message_text(dict(users[0] if users else dicts[-1])).lstrip()
    for prefix, kind in TASK_PREFIXES:
        if text.startswith(prefix):
            return kind if kind is not None else _openwebui_task_kind(text)
    if any(prefix and text.startswith(prefix) for prefix in extra_prefixes):
        return "other"
    if roles[0] in ("system", "developer"):
        system = message_text(dict(dicts[0])).lstrip()
        for prefix, kind in SYSTEM_TASK_PREFIXES:
            if system.startswith(prefix):
                return kind
    return None


_QUOTED_RE = re.compile(r"<(chat_history|text)>(.*?)</\1>", re.DOTALL)


def task_recall_query(messages: Sequence[Any]) -> str:
    """What a background task is about, for recall: the conversation its prompt quotes (Open
    WebUI's ``<chat_history>`` and autocomplete's ``<text>``, LibreChat's "Conversation:"),
    else the whole prompt."""
    dicts = [m for m in messages if isinstance(m, Mapping)]
    users = [m for m in dicts if m.get("role") == "user"]
    source = users[-1] if users else (dicts[-1] if dicts else None)
    text = message_text(dict(source)) if source is not None else ""
    quoted = [body.strip() for _, body in _QUOTED_RE.findall(text) if body.strip()]
    if quoted:
        return "\n".join(quoted)
    _, marker, conversation = text.rpartition("Conversation:")
    return conversation.strip() if marker and conversation.strip() else text.strip()
