"""Who a chat request is for, and what memory may do with it (DESIGN.md §2 steps 2-4)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from memory_core.prompts import message_text
from memory_core.types import Scope, validate_id

from .auth import Caller
from .errors import BadRequest, Forbidden

Mode = Literal["off", "read", "write", "auto"]
MODES: tuple[Mode, ...] = ("off", "read", "write", "auto")
# Fields the proxy understands and removes before forwarding; everything else passes through.
PROXY_FIELDS = ("user_id", "agent_id", "run_id", "memory")
TASK_PREFIX = "### Task:"


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    agent_id: str | None = None
    run_id: str | None = None

    @property
    def scope(self) -> Scope:
        return Scope(self.user_id, self.agent_id, self.run_id)

    @property
    def queue_key(self) -> str:
        return self.user_id


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """What memory does for one request."""

    identity: Identity | None
    mode: Mode
    is_task: bool = False

    @property
    def recall(self) -> bool:
        return self.identity is not None and self.mode in ("read", "auto")

    @property
    def learn(self) -> bool:
        return self.identity is not None and self.mode in ("write", "auto") and not self.is_task


def _claim(value: Any, source: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{source} must be a string", param=source)
    try:
        return validate_id(value, source)
    except ValueError as exc:  # pragma: no cover - validate_id raises InvalidIdentity
        raise BadRequest(str(exc), param=source) from exc


def resolve_user(body: Mapping[str, Any], headers: Mapping[str, str], caller: Caller) -> str | None:
    """First hit wins: key binding; body user_id; X-User-Id; X-OpenWebUI-User-Id; body user;
    metadata.user_id. A bound key overrides claims, and a differing claim is refused."""
    metadata = body.get("metadata")
    claims = [
        ("user_id", body.get("user_id")),
        ("X-User-Id", headers.get("x-user-id")),
        ("X-OpenWebUI-User-Id", headers.get("x-openwebui-user-id")),
        ("user", body.get("user")),
        ("metadata.user_id", metadata.get("user_id") if isinstance(metadata, Mapping) else None),
    ]
    bound = caller.bound_user
    first: str | None = None
    for source, value in claims:
        claimed = _claim(value, source)
        if claimed is None:
            continue
        if bound is not None and claimed != bound:
            raise Forbidden(f"this API key is bound to another user than {source} claims")
        if first is None:
            first = claimed
    if bound is not None:
        return bound
    if first is not None and not caller.may_assert_users:
        raise Forbidden("this API key may not assert user ids")
    if first is not None:
        caller.check_user(first)
    return first


def resolve_mode(body: Mapping[str, Any], headers: Mapping[str, str]) -> Mode:
    raw: Any = headers.get("x-memory-mode")
    memory = body.get("memory")
    if isinstance(memory, Mapping) and memory.get("mode") is not None:
        raw = memory.get("mode")
    elif isinstance(memory, str | bool):
        raw = (
            {True: "auto", False: "off"}.get(memory, memory) if isinstance(memory, bool) else memory
        )
    if raw is None:
        return "auto"
    mode = str(raw).strip().lower()
    if mode not in MODES:
        raise BadRequest(f"memory mode must be one of {', '.join(MODES)}", param="memory.mode")
    return mode


def is_background_task(messages: list[Any]) -> bool:
    """Chat-UI background tasks (Open WebUI's title/tags/follow-ups...) start with ### Task:."""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return message_text(dict(message)).lstrip().startswith(TASK_PREFIX)
    return False


def plan_memory(body: Mapping[str, Any], headers: Mapping[str, str], caller: Caller) -> MemoryPlan:
    user_id = resolve_user(body, headers, caller)
    mode = resolve_mode(body, headers)
    if user_id is None:
        return MemoryPlan(identity=None, mode=mode)
    agent_id = _claim(body.get("agent_id") or headers.get("x-agent-id"), "agent_id")
    run_id = _claim(body.get("run_id") or headers.get("x-run-id"), "run_id")
    chat_id = headers.get("x-openwebui-chat-id", "")
    if chat_id.startswith("local:") and mode == "auto":
        mode = "read"  # Open WebUI's temporary chats: recall, never learn
    messages = body.get("messages")
    is_task = isinstance(messages, list) and is_background_task(messages)
    return MemoryPlan(identity=Identity(user_id, agent_id, run_id), mode=mode, is_task=is_task)


def strip_proxy_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy without the proxy's own fields."""
    return {key: value for key, value in body.items() if key not in PROXY_FIELDS}
