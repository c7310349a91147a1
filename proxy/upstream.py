"""Forwarding to the LLM provider: raw relays to OpenAI-compatible and Anthropic endpoints, and
LiteLLM (``proxy.litellm_upstream``) for the rest and for translating between API shapes.

All implement ``Upstream.complete(call) -> UpstreamResponse``. Streams are relayed chunk by
chunk while a collector (``proxy.replies``) tees out the assistant text for learning.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson

from .errors import BadRequest, ErrorShape, UpstreamError, shaped_error_body
from .model_routing import OPENAI_COMPATIBLE_PREFIXES, ModelRoute
from .provider_params import check_passthrough_body, litellm_body
from .replies import Api, ReplyCollector, collector_for, sse_event

log = logging.getLogger("proxy.upstream")

DEFAULT_OPENAI_BASE = "https://api.openai.com/v1"
DEFAULT_ANTHROPIC_BASE = "https://api.anthropic.com"
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"
RELAYED_HEADERS = (
    "x-request-id",
    "openai-processing-ms",
    "openai-organization",
    "request-id",
    "anthropic-organization-id",
)
MAX_ERROR_CHARS = 2000
# The relative path of each API on an OpenAI-compatible base URL (which ends in /v1).
OPENAI_PATHS: dict[Api, str] = {"chat": "chat/completions", "responses": "responses"}
# ``anthropic-beta`` enables features of the same endpoint (no address, no credential): a
# comma-separated list of short names, relayed to Anthropic-shaped upstreams only.
_BETA_RE = re.compile(r"[A-Za-z0-9._-]{1,64}(\s*,\s*[A-Za-z0-9._-]{1,64}){0,15}")


def error_shape(api: Api) -> ErrorShape:
    return "anthropic" if api == "messages" else "openai"


def check_client_fields(kind: str, api: Api, route: ModelRoute, body: Mapping[str, Any]) -> None:
    """Refuse (400) body fields the upstream ``kind`` may not take from a client."""
    if kind == "litellm":
        litellm_body(body, route.deployment.client_params, api)
    else:
        check_passthrough_body(body)


@dataclass(slots=True)
class UpstreamCall:
    """What to send: the body in ``api``'s shape (model still the public name), where, which
    key, and the client's ``anthropic-beta`` features (validated)."""

    body: dict[str, Any]
    route: ModelRoute
    client_key: str | None = None
    api: Api = "chat"
    beta: str | None = None


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: dict[str, str]
    collector: ReplyCollector
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    kind: str = "passthrough"


class Upstream(Protocol):
    async def complete(self, call: UpstreamCall) -> UpstreamResponse: ...


def provider_model(model: str) -> str:
    """The model name the provider expects (LiteLLM's provider prefix removed)."""
    for prefix in (*OPENAI_COMPATIBLE_PREFIXES, "anthropic/"):
        if model.startswith(prefix):
            return model[len(prefix) :]
    return model


def client_beta(value: str | None) -> str | None:
    """The client's ``anthropic-beta`` header when it is a plain list of feature names."""
    if value is None or not value.strip():
        return None
    if not _BETA_RE.fullmatch(value.strip()):
        raise BadRequest("anthropic-beta must be a comma-separated list of feature names")
    return value.strip()


@dataclass(slots=True)
class Target:
    """Where and how one raw call goes."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)


class PassthroughUpstream:
    """Raw relay to an OpenAI-compatible endpoint over one shared ``aiohttp.ClientSession``.

    aiohttp rather than httpx on this path: measured on loopback, an httpx round trip costs
    ~5x the CPU of an aiohttp one (connection-pool bookkeeping and anyio layers), which was
    most of the proxy's own overhead (BENCHMARKS.md, "Overhead").
    """

    kind = "passthrough"

    def __init__(self, client: aiohttp.ClientSession, *, forward_client_key: bool) -> None:
        self._client = client
        self._forward_client_key = forward_client_key

    def _api_key(self, call: UpstreamCall) -> str | None:
        api_key: str | None = call.route.params.get("api_key")
        if call.client_key and self._forward_client_key and not api_key:
            api_key = call.client_key
        return api_key

    def target(self, call: UpstreamCall) -> Target:
        base = str(call.route.params.get("api_base") or DEFAULT_OPENAI_BASE).rstrip("/")
        headers = {"content-type": "application/json"}
        api_key = self._api_key(call)
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        return Target(f"{base}/{OPENAI_PATHS[call.api]}", headers)

    def prepare_body(self, call: UpstreamCall) -> dict[str, Any]:
        params = call.route.params
        body = dict(call.body)
        body["model"] = provider_model(call.route.model)
        names = ("temperature", "top_p", "max_tokens" if call.api == "chat" else "")
        for name in names:
            if name and name in params and name not in body:
                body[name] = params[name]
        return body

    async def complete(self, call: UpstreamCall) -> UpstreamResponse:
        params = call.route.params
        body = self.prepare_body(call)
        target = self.target(call)
        headers = target.headers
        for name, value in (params.get("extra_headers") or {}).items():
            headers[str(name).lower()] = str(value)
        timeout = params.get("timeout")
        options: dict[str, Any] = {"timeout": deployment_timeout(float(timeout))} if timeout else {}
        try:
            response = await self._client.post(
                target.url, data=orjson.dumps(body), headers=headers, **options
            )
        except TimeoutError as exc:
            raise UpstreamError(
                f"upstream timed out: {type(exc).__name__}", status=504, code="upstream_timeout"
            ) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                f"upstream unreachable: {exc}", status=502, code="upstream_unreachable"
            ) from exc
        relayed = {h: response.headers[h] for h in RELAYED_HEADERS if h in response.headers}
        relayed["content-type"] = response.headers.get("content-type", "application/json")
        collector = collector_for(call.api)
        shape = error_shape(call.api)
        if response.status >= 400 or not body.get("stream"):
            try:
                raw = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise UpstreamError(f"upstream failed mid-response: {exc}", status=502) from exc
            finally:
                response.release()
            if response.status >= 400:
                error = shaped_upstream_error(raw, response.status, shape)
                return UpstreamResponse(response.status, relayed, collector, body=error)
            try:
                payload = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise UpstreamError("upstream returned invalid JSON", status=502) from exc
            if isinstance(payload, dict):
                collector.feed_completion(payload)
            return UpstreamResponse(response.status, relayed, collector, body=raw, kind=self.kind)
        return UpstreamResponse(
            response.status,
            relayed,
            collector,
            stream=_relay(response, collector, call.api),
            kind=self.kind,
        )


class AnthropicUpstream(PassthroughUpstream):
    """Raw relay of ``/v1/messages`` to an Anthropic-shaped endpoint (``x-api-key`` auth)."""

    kind = "anthropic"

    def target(self, call: UpstreamCall) -> Target:
        params = call.route.params
        base = str(params.get("api_base") or DEFAULT_ANTHROPIC_BASE).rstrip("/")
        base = base.removesuffix("/v1/messages").removesuffix("/v1")
        headers = {
            "content-type": "application/json",
            "anthropic-version": str(params.get("anthropic_version") or DEFAULT_ANTHROPIC_VERSION),
        }
        api_key = self._api_key(call)
        if api_key:
            headers["x-api-key"] = api_key
        if call.beta:
            headers["anthropic-beta"] = call.beta
        return Target(f"{base}/v1/messages", headers)

    def prepare_body(self, call: UpstreamCall) -> dict[str, Any]:
        body = dict(call.body)
        body["model"] = provider_model(call.route.model)
        return body


def deployment_timeout(seconds: float, *, connect: float = 10.0) -> aiohttp.ClientTimeout:
    """Per-read and connect timeouts (no cap on a whole stream's duration)."""
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=seconds)


def stream_error_event(api: Api, message: str, status: int = 502) -> bytes:
    """The event that ends a broken stream, in ``api``'s framing."""
    if api == "chat":
        return sse_event(shaped_error_body("openai", status, message, "upstream_error"))
    if api == "responses":
        payload = {"type": "error", "code": str(status), "message": message, "param": None}
        return sse_event(payload, "error")
    return sse_event(shaped_error_body("anthropic", status, message, "api_error"), "error")


async def _relay(
    response: aiohttp.ClientResponse, collector: ReplyCollector, api: Api
) -> AsyncIterator[bytes]:
    """Yield upstream bytes as they arrive; closing the generator closes the upstream stream."""
    try:
        async for data in response.content.iter_any():
            collector.feed_sse_bytes(data)
            yield data
    except (TimeoutError, aiohttp.ClientError) as exc:
        log.warning("upstream stream broke: %s", exc)
        collector.finished = False
        yield stream_error_event(api, "upstream stream broke")
    finally:
        # A fully read response goes back to the pool; a cut-short one closes its connection.
        response.release()


def shaped_upstream_error(raw: bytes, status: int, shape: ErrorShape) -> bytes:
    """Keep an upstream error body already in the caller's shape; wrap anything else."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        inner = payload["error"]
        is_anthropic = payload.get("type") == "error"
        if is_anthropic == (shape == "anthropic"):
            return raw
        message = str(inner.get("message") or f"upstream returned HTTP {status}")
        return shaped_error_body(shape, status, message[:500], "upstream_error", code=str(status))
    text = raw.decode("utf-8", "replace")[:500] or f"upstream returned HTTP {status}"
    return shaped_error_body(shape, status, text, "upstream_error", code=str(status))


class UpstreamSet:
    """Picks the implementation for one API call of a route."""

    def __init__(
        self, passthrough: Upstream, litellm: Upstream, anthropic: Upstream | None = None
    ) -> None:
        self.passthrough = passthrough
        self.litellm = litellm
        self.anthropic = anthropic or litellm

    def for_call(self, api: Api, route: ModelRoute) -> tuple[str, Upstream]:
        """(kind, upstream): raw where the endpoint speaks the caller's API, else LiteLLM."""
        if api == "messages":
            # Anthropic's own models are relayed raw even with ``upstream: litellm``: LiteLLM's
            # native Messages stream needs its proxy server's packages (fastapi, soundfile...).
            if route.kind == "anthropic" or route.model.startswith("anthropic/"):
                return "anthropic", self.anthropic
            return "litellm", self.litellm
        if route.kind == "passthrough":
            return "passthrough", self.passthrough
        return "litellm", self.litellm


__all__ = [
    "AnthropicUpstream",
    "PassthroughUpstream",
    "Upstream",
    "UpstreamCall",
    "UpstreamResponse",
    "UpstreamSet",
    "check_client_fields",
    "client_beta",
    "provider_model",
]
