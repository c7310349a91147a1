"""Who a chat request is for, and what memory may do with it (DESIGN.md §2 steps 2-4).

Also the chat-UI specifics (docs/chat-uis.md): Open WebUI's forwarded user headers and its
signed HS256 user JWT, its temporary chats, and the background tasks of Open WebUI and
LibreChat (titles, tags, follow-ups, ...), which are never learned from.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from memory_core.errors import InvalidIdentity
from memory_core.messages import TASK_PROMPT_PREFIX, message_text
from memory_core.types import Scope, validate_id

from .auth import Caller
from .errors import BadRequest, Forbidden, Unauthorized
from .settings import ChatUISettings, OpenWebUISettings, TaskKind

Mode = Literal["off", "read", "write", "auto"]
MODES: tuple[Mode, ...] = ("off", "read", "write", "auto")
# Fields the proxy understands and removes before forwarding; everything else passes through.
PROXY_FIELDS = ("user_id", "agent_id", "run_id", "memory")
DEFAULT_CHAT_UI = ChatUISettings()

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


# ---------------------------------------------------------------------------------------------
# Open WebUI's signed user header (FORWARD_USER_INFO_HEADER_JWT_SECRET): HS256, stdlib only
# ---------------------------------------------------------------------------------------------


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def verify_hs256(
    token: str,
    secret: bytes,
    *,
    issuer: str | None = None,
    leeway_s: float = 30.0,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of a JWT signed with HS256 and ``secret``; ``Unauthorized`` for anything else
    (another algorithm, a bad signature, no or a past ``exp``, a future ``nbf``/``iat``, another
    issuer)."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise Unauthorized("user JWT is malformed")
    try:
        header = orjson.loads(_b64url(parts[0]))
        signature = _b64url(parts[2])
        signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    except ValueError as exc:  # binascii.Error, JSONDecodeError and UnicodeError are ValueErrors
        raise Unauthorized("user JWT is malformed") from exc
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise Unauthorized("user JWT must be signed with HS256")
    expected = hmac.new(secret, signing_input, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise Unauthorized("user JWT signature does not match the configured secret")
    try:
        claims = orjson.loads(_b64url(parts[1]))
    except ValueError as exc:
        raise Unauthorized("user JWT is malformed") from exc
    if not isinstance(claims, dict):
        raise Unauthorized("user JWT is malformed")
    now = time.time() if now is None else now
    exp = _number(claims.get("exp"))
    if exp is None:
        raise Unauthorized("user JWT has no expiry")
    if now > exp + leeway_s:
        raise Unauthorized("user JWT has expired")
    for field in ("nbf", "iat"):
        stamp = _number(claims.get(field))
        if stamp is not None and stamp > now + leeway_s:
            raise Unauthorized(f"user JWT {field} is in the future")
    if issuer is not None and claims.get("iss") != issuer:
        raise Unauthorized("user JWT has another issuer")
    return claims


def openwebui_signed_user(headers: Mapping[str, str], openwebui: OpenWebUISettings) -> str | None:
    """The user of a verified Open WebUI user JWT; None without a header or a configured secret."""
    token = headers.get(openwebui.jwt_header.lower())
    if not token or openwebui.jwt_secret is None:
        return None
    claims = verify_hs256(
        token.strip(),
        openwebui.jwt_secret.get_secret_value().encode("utf-8"),
        issuer=openwebui.jwt_issuer,
        leeway_s=openwebui.jwt_leeway_s,
    )
    claim = "sub" if openwebui.user_id_from == "id" else "email"
    return _claim(claims.get(claim), f"{openwebui.jwt_header} {claim}")


def _openwebui_header_claim(
    headers: Mapping[str, str], openwebui: OpenWebUISettings, caller: Caller
) -> tuple[str, str | None]:
    """The plain X-OpenWebUI-User-Id (or -Email) header, if this caller's headers are trusted."""
    name = "X-OpenWebUI-User-Id" if openwebui.user_id_from == "id" else "X-OpenWebUI-User-Email"
    if not openwebui.trusts_headers_of(caller.name, caller.may_assert_users):
        return name, None
    return name, headers.get(name.lower())


# ---------------------------------------------------------------------------------------------
# Identity and mode
# ---------------------------------------------------------------------------------------------


def resolve_user(
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    caller: Caller,
    chat_ui: ChatUISettings | None = None,
) -> str | None:
    """Whose memory this is. An anchored identity wins: the API key's bound user, else a
    verified Open WebUI user JWT; any other claim that differs from it is refused (403).
    Otherwise the claims (body user_id; X-User-Id; X-OpenWebUI-User-Id when trusted; body
    user; metadata.user_id) must agree: two that name different users are refused (403)."""
    openwebui = (chat_ui or DEFAULT_CHAT_UI).openwebui
    signed = openwebui_signed_user(headers, openwebui)
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
        ("metadata.user_id", metadata.get("user_id") if isinstance(metadata, Mapping) else None),
    ]
    first: str | None = None
    first_source = ""
    for source, value in claims:
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


# ---------------------------------------------------------------------------------------------
# Background tasks
# ---------------------------------------------------------------------------------------------


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


def is_background_task(messages: list[Any]) -> bool:
    """Chat-UI background tasks (Open WebUI's title/tags/follow-ups..., LibreChat's titles)."""
    return background_task(messages) is not None


def plan_memory(
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    caller: Caller,
    chat_ui: ChatUISettings | None = None,
) -> MemoryPlan:
    chat_ui = chat_ui or DEFAULT_CHAT_UI
    user_id = resolve_user(body, headers, caller, chat_ui)
    mode = resolve_mode(body, headers)
    if user_id is None:
        return MemoryPlan(identity=None, mode=mode)
    agent_id = _claim(body.get("agent_id") or headers.get("x-agent-id"), "agent_id")
    run_id = _claim(body.get("run_id") or headers.get("x-run-id"), "run_id")
    openwebui = chat_ui.openwebui
    chat_id = headers.get(openwebui.chat_id_header.lower(), "")
    if chat_id.startswith(openwebui.temporary_chat_prefix):
        # Open WebUI's temporary chats: recall, never learn.
        if mode == "auto":
            mode = "read"
        elif mode == "write":
            mode = "off"
    messages = body.get("messages")
    task = (
        background_task(messages, chat_ui.extra_task_prefixes)
        if isinstance(messages, list)
        else None
    )
    return MemoryPlan(identity=Identity(user_id, agent_id, run_id), mode=mode, task=task)


def strip_proxy_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy without the proxy's own fields."""
    return {key: value for key, value in body.items() if key not in PROXY_FIELDS}
