"""The proxy's YAML config, validated: ``model_list`` (LiteLLM's format), ``memory``, ``server``,
``auth``, ``queue``."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from memory_core.config import (
    LLMConfig,
    MemoryConfig,
    QueueConfig,
    format_validation_error,
    load_yaml,
    resolve_env_refs,
)
from memory_core.errors import ConfigError

from .guard import is_loopback_host
from .webhooks import WebhookSettings

UpstreamKind = Literal["auto", "passthrough", "litellm", "anthropic"]
InjectionPosition = Literal["before_last_user", "system_prefix"]
# Chat-UI background tasks the proxy recognises (proxy/identity.py classifies them).
TaskKind = Literal[
    "title",
    "tags",
    "follow_ups",
    "search_query",
    "autocomplete",
    "emoji",
    "image_prompt",
    "function_calling",
    "moa",
    "other",
]


class Deployment(BaseModel):
    """One ``model_list`` entry: a public model name and the LiteLLM params behind it."""

    model_config = ConfigDict(extra="allow")

    model_name: str = Field(min_length=1)
    litellm_params: dict[str, Any]
    upstream: UpstreamKind = "auto"
    # Body fields besides OpenAI's that clients may pass through LiteLLM (e.g. top_k);
    # never one that steers the call (proxy/provider_params.py).
    client_params: list[str] = Field(default_factory=list)

    @field_validator("client_params")
    @classmethod
    def _not_steering(cls, value: list[str]) -> list[str]:
        from .provider_params import is_steering

        steering = [name for name in value if is_steering(name)]
        if steering:
            raise ValueError(f"client_params may not list {', '.join(steering)}")
        return value

    @model_validator(mode="after")
    def _needs_model(self) -> Deployment:
        if not isinstance(self.litellm_params.get("model"), str):
            raise ValueError("litellm_params.model is required")
        return self


class RecallSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=8, ge=1, le=100)
    threshold: float | None = Field(default=0.75, ge=-1, le=1)
    max_tokens: int = Field(default=400, ge=0)
    position: InjectionPosition = "before_last_user"
    timeout_s: float = Field(default=2.0, gt=0)
    # Background tasks (titles, tags, ...) get no memories unless listed here (or ``true``: all).
    recall_for_tasks: bool | list[TaskKind] = False
    # A turn of stop words and small talk only ("ok", "thanks!", "and?") recalls nothing.
    skip_small_talk: bool = True
    # The user's profile in the block (memory.profile): true: first, then the memories that
    # still fit the same max_tokens; "instead": the profile alone (no search).
    profile: bool | Literal["instead"] = False

    def recalls_for_task(self, task: str) -> bool:
        if isinstance(self.recall_for_tasks, bool):
            return self.recall_for_tasks
        return task in self.recall_for_tasks


class ProxyMemorySettings(MemoryConfig):
    """memory_core's keys plus what only the proxy needs."""

    enabled: bool = True
    extraction_model: str | None = None
    recall: RecallSettings = Field(default_factory=RecallSettings)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    # Agent loops: learn the tool results of a turn too (by default only the user's words and
    # the final answer; tool payloads are often large, third-party and not about the user).
    learn_tool_results: bool = False

    def core_config(self) -> MemoryConfig:
        return MemoryConfig.model_validate(
            self.model_dump(
                exclude={"enabled", "extraction_model", "recall", "queue", "learn_tool_results"}
            )
        )


class RequestLimits(BaseModel):
    """Bounds on every request (docs/security.md lists each with its default)."""

    model_config = ConfigDict(extra="forbid")

    # Chat bodies (images travel inline as base64) and memory API JSON bodies; both are
    # counted while they are read, after the API key was checked.
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_api_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_import_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    # One limit for parsing and for forwarding (orjson serialises at most 254 levels).
    max_json_depth: int = Field(default=64, ge=4, le=250)
    # The request line and headers: their size, and how long a client may take to send them.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    header_timeout_s: float = Field(default=10.0, gt=0)
    # The whole body must arrive within this (a slow client cannot hold a worker forever);
    # an import (up to max_import_bytes) within import_timeout_s.
    body_timeout_s: float = Field(default=60.0, gt=0)
    import_timeout_s: float = Field(default=900.0, gt=0)


class TracingSettings(BaseModel):
    """OpenTelemetry traces over OTLP/HTTP (proxy/tracing.py); off by default."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    # e.g. http://collector:4318/v1/traces; unset: OTEL_EXPORTER_OTLP_ENDPOINT or localhost.
    otlp_endpoint: str | None = None
    service_name: str = Field(default="memproxy", min_length=1, max_length=100)


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    forward_client_key: bool = True
    request_timeout_s: float = Field(default=600.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    allow_open_non_loopback: bool = False
    log_level: str = "info"
    # "text" lines, or one JSON object per line (proxy/logs.py); both carry the request id.
    log_format: Literal["text", "json"] = "text"
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    # Web pages that may call the proxy from a browser (CORS, preflight included), as
    # "scheme://host[:port]"; every other Origin gets 403. The server's own origin always may.
    allowed_origins: list[str] = Field(default_factory=list)
    # Host header names accepted besides loopback ones (DNS rebinding). Checked in open mode,
    # and in every mode once the list is set.
    allowed_hosts: list[str] = Field(default_factory=list)
    # /metrics and /ready's details without the admin key; None: only in open local mode.
    public_metrics: bool | None = None
    limits: RequestLimits = Field(default_factory=RequestLimits)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        cleaned = []
        for origin in value:
            origin = origin.strip().rstrip("/").lower()
            if origin != "*" and not re.fullmatch(r"https?://[^/\s?#]+", origin):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port]) or *")
            cleaned.append(origin)
        return cleaned

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        return [host.strip().lower() for host in value if host.strip()]


class ApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    key_sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    users: list[str] = Field(default_factory=list)
    admin: bool = False
    may_assert_users: bool = True


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[ApiKey] = Field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)


class OpenWebUISettings(BaseModel):
    """How Open WebUI's forwarded user info (``ENABLE_FORWARD_USER_INFO_HEADERS``) is read."""

    model_config = ConfigDict(extra="forbid")

    # Plain X-OpenWebUI-User-* headers are claims only when trusted: from keys that may assert
    # users and, when ``trusted_keys`` is set, whose name is listed. Untrusted ones are ignored.
    trust_user_headers: bool = True
    trusted_keys: list[str] | None = None
    user_id_from: Literal["id", "email"] = "id"
    # FORWARD_USER_INFO_HEADER_JWT_SECRET of Open WebUI: verifies its signed HS256 header.
    jwt_secret: SecretStr | None = None
    jwt_header: str = Field(default="X-OpenWebUI-User-Jwt", min_length=1)
    jwt_issuer: str | None = "open-webui"
    jwt_leeway_s: float = Field(default=30.0, ge=0)
    chat_id_header: str = Field(default="X-OpenWebUI-Chat-Id", min_length=1)
    temporary_chat_prefix: str = Field(default="local:", min_length=1)

    def trusts_headers_of(self, key_name: str, may_assert_users: bool) -> bool:
        if not (self.trust_user_headers and may_assert_users):
            return False
        return self.trusted_keys is None or key_name in self.trusted_keys


class ChatUISettings(BaseModel):
    """Chat-UI integration (docs/chat-uis.md): Open WebUI identity, extra task markers."""

    model_config = ConfigDict(extra="forbid")

    openwebui: OpenWebUISettings = Field(default_factory=OpenWebUISettings)
    # More prefixes marking a request as a background task (custom task prompt templates).
    extra_task_prefixes: list[str] = Field(default_factory=list)


MCP_TOOLS = (
    "search_memories",
    "list_memories",
    "memory_history",
    "add_memory",
    "update_memory",
    "delete_memory",
)
MCP_WRITE_TOOLS = frozenset({"add_memory", "update_memory", "delete_memory"})


class McpSettings(BaseModel):
    """The MCP server at ``/mcp`` (and ``memproxy mcp`` on stdio)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    tools: list[str] = Field(default_factory=lambda: list(MCP_TOOLS))
    read_only: bool = False
    resources: bool = True

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(MCP_TOOLS))
        if unknown:
            raise ValueError(f"unknown MCP tools {unknown}; known: {list(MCP_TOOLS)}")
        return value

    def exposed(self) -> list[str]:
        """The tools served: the configured ones, minus the writing ones when read-only."""
        return [t for t in self.tools if not (self.read_only and t in MCP_WRITE_TOOLS)]


class Settings(BaseModel):
    """The whole proxy config."""

    model_config = ConfigDict(extra="forbid")

    model_list: list[Deployment] = Field(default_factory=list)
    memory: ProxyMemorySettings = Field(default_factory=ProxyMemorySettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    chat_ui: ChatUISettings = Field(default_factory=ChatUISettings)
    mcp: McpSettings = Field(default_factory=McpSettings)
    webhooks: list[WebhookSettings] = Field(default_factory=list, max_length=20)

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> Settings:
        """Read YAML from ``path`` (or ``$MEMPROXY_CONFIG``); empty config when neither is set."""
        path = path or os.environ.get("MEMPROXY_CONFIG")
        data = load_yaml(path) if path else {}
        return cls.from_dict(data, **overrides)

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> Settings:
        data = dict(data)
        # Provider keys may be left unset: the client's own key is forwarded instead.
        data["model_list"] = resolve_env_refs(data.get("model_list") or [], strict=False)
        data["webhooks"] = resolve_env_refs(data.get("webhooks") or [])
        for section in ("memory", "server", "auth", "chat_ui"):
            if section in data:
                data[section] = resolve_env_refs(data[section] or {})
        try:
            settings = cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc)) from exc
        for key, value in overrides.items():
            if value is not None:
                setattr(settings.server, key, value)
        return settings

    def extraction_llm(self) -> LLMConfig | None:
        """The LLM for learning: ``memory.llm``, else the ``extraction_model`` deployment."""
        if self.memory.llm is not None:
            return self.memory.llm
        name = self.memory.extraction_model
        if name is None:
            return None
        for deployment in self.model_list:
            if deployment.model_name == name:
                return LLMConfig.model_validate(deployment.litellm_params)
        raise ConfigError(f"memory.extraction_model {name!r} is not a model_list model_name")

    def check_bind(self) -> None:
        """Refuse to serve an open (keyless) proxy beyond loopback unless explicitly allowed."""
        if self.auth.enabled or self.server.allow_open_non_loopback:
            return
        host = self.server.host
        if not is_loopback_host(host.strip("[]").lower()):
            raise ConfigError(
                f"refusing to bind {host} without API keys: configure auth.keys, or set "
                "server.allow_open_non_loopback: true"
            )
