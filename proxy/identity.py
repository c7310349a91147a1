"""Who a chat request is for, and what memory may do with it (DESIGN.md §2 steps 2-4).

Also the chat-UI specifics that decide these (docs/chat-uis.md): Open WebUI's forwarded user
headers and its temporary chats. Its signed user JWT is verified in ``openwebui_jwt``, and
background tasks, which are never learned from, are recognised in ``ui_tasks``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from memory_core.errors import InvalidIdentity
from memory_core.types import Scope, validate_id

from .auth import Caller
from .errors import BadRequest, Forbidden
from .openwebui_jwt import signed_user_claim
from .settings import ChatUISettings, OpenWebUISettings, TaskKind
from .ui_tasks import background_task

Mode = Literal["off", "read", "write", "auto"]
MODES: tuple[Mode, ...] = ("off", "read", "write", "auto")
# Fields the proxy understands and removes before forwarding; everything else passes through.
PROXY_FIELDS = ("user_id", "agent_id", "run_id", "app_id", "memory")
DEFAULT_CHAT_UI = ChatUISettings()


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    agent_id: str | None = None
    run_id: str | None = None
    app_id: str | None = None

    @property
    def scope(self) -> Scope:
        return Scope(self.user_id, self.agent_id, self.run_id, self.app_id)

    @property
    def queue_key(self) -> str:
        return self.user_id


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """What memory does for one request. ``task``: the chat-UI background task it is, if any."""

    identity: Identity | None
    mode: Mode
    task: TaskKind | None = None

    @property
    def is_task(self) -> bool:
        return self.task is not None

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
    except InvalidIdentity as exc:
        raise BadRequest(str(exc), param=source) from exc


def _is_id(value: Any) -> bool:
    try:
        return isinstance(value, str) and validate_id(value, "id") == value
    except InvalidIdentity:
        return False


def _openwebui_header_claim(
    headers: Mapping[str, str], openwebui: OpenWebUISettings, caller: Caller
) -> tuple[str, str | None]:
    """The plain X-OpenWebUI-User-Id (or -Email) header, if this caller's headers are trusted."""
    name = "X-OpenWebUI-User-Id" if openwebui.user_id_from == "id" else "X-OpenWebUI-User-Email"
    if not openwebui.trusts_headers_of(caller.name, caller.may_assert_users):
        return name, None
    return name, headers.get(name.lower())


def resolve_user(
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    caller: Caller,
    chat_ui: ChatUISettings | None = None,
    opaque: Collection[str] = (),
) -> str | None:
    """Whose memory this is. An anchored identity wins: the API key's bound user, else a
    verified Open WebUI user JWT; any other claim that differs from it is refused (403).
    Otherwise the claims (body user_id; X-User-Id; X-OpenWebUI-User-Id when trusted; body
    user; safety_identifier; metadata.user_id) must agree: two that name different users are
    refused (403). A claim named in ``opaque`` is the provider's free-form field on this
    route: a value that is no valid id is not a claim (rather than a 400)."""
    openwebui = (chat_ui or DEFAULT_CHAT_UI).openwebui
    signed_claim = signed_user_claim(headers, openwebui)
    signed = None
    if signed_claim is not None:
        source, value = signed_claim
        signed = _claim(value, source)
    bound = caller.bound_user
    if bound is not None and signed is not None and signed != bound:
        raise Forbidden("this API key is bound to another user than the Open WebUI user JWT names")
    anchor = bound if bound is not None else signed
    anchor_source = "this API key is bound to" if bound is not None else "the user JWT names"
    metadata = body.get("metadata")
    claims = [
        ("user_id", body.get("user_id")),
        ("X-User-Id", headers.get("x-user-id")),
        _openwebui_header_claim(headers, openwebui, caller),
        ("user", body.get("user")),
        ("safety_identifier", body.get("safety_identifier")),
        ("metadata.user_id", metadata.get("user_id") if isinstance(metadata, Mapping) else None),
    ]
    first: str | None = None
    first_source = ""
    for source, value in claims:
        if source in opaque and not _is_id(value):
            continue
        claimed = _claim(value, source)
        if claimed is None:
            continue
        if anchor is not None and claimed != anchor:
            raise Forbidden(f"{anchor_source} another user than {source} claims")
        if first is None:
            first, first_source = claimed, source
        elif claimed != first:
            raise Forbidden(f"{first_source} and {source} name different users")
    if anchor is not None:
        if bound is None:  # signed by Open WebUI: no assertion by the key, but the key's scope
            caller.check_user(anchor)
        return anchor
    if first is not None and not caller.may_assert_users:
        raise Forbidden("this API key may not assert user ids")
    if first is not None:
        caller.check_user(first)
    return first


def resolve_mode(body: Mapping[str, Any], headers: Mapping[str, str]) -> Mode:
    """Body ``memory`` (object with ``mode``, a mode string, or a bool) over ``X-Memory-Mode``."""
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


def plan_memory(
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    caller: Caller,
    chat_ui: ChatUISettings | None = None,
    conversation: Sequence[Mapping[str, Any]] | None = None,
    opaque: Collection[str] = (),
) -> MemoryPlan:
    """``conversation``: the request read as chat messages (default: the body's ``messages``);
    ``opaque``: claims that are free-form provider fields on this route (``resolve_user``)."""
    chat_ui = chat_ui or DEFAULT_CHAT_UI
    user_id = resolve_user(body, headers, caller, chat_ui, opaque)
    mode = resolve_mode(body, headers)
    if user_id is None:
        return MemoryPlan(identity=None, mode=mode)
    agent_id = _claim(body.get("agent_id") or headers.get("x-agent-id"), "agent_id")
    run_id = _claim(body.get("run_id") or headers.get("x-run-id"), "run_id")
    app_id = _claim(body.get("app_id") or headers.get("x-app-id"), "app_id")
    openwebui = chat_ui.openwebui
    chat_id = headers.get(openwebui.chat_id_header.lower(), "")
    if chat_id.startswith(openwebui.temporary_chat_prefix):
        # Open WebUI's temporary chats: recall, never learn.
        if mode == "auto":
            mode = "read"
        elif mode == "write":
            mode = "off"
    messages = body.get("messages") if conversation is None else conversation
    task = (
        background_task(messages, chat_ui.extra_task_prefixes)
        if isinstance(messages, list)
        else None
    )
    return MemoryPlan(identity=Identity(user_id, agent_id, run_id, app_id), mode=mode, task=task)


def strip_proxy_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy without the proxy's own fields."""
    return {key: value for key, value in body.items() if key not in PROXY_FIELDS}
