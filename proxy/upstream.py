"""Forwarding to the LLM provider: a raw OpenAI-compatible relay, and LiteLLM for the rest.

Both implement ``Upstream.complete(call) -> UpstreamResponse``. Streams are relayed chunk by
chunk while a ``ReplyCollector`` tees out the assistant text for learning.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson

from memory_core.litellm_loader import get_litellm

from .errors import UpstreamError, error_body
from .model_routing import OPENAI_COMPATIBLE_PREFIXES, ModelRoute
from .provider_params import check_passthrough_body, litellm_body

log = logging.getLogger("proxy.upstream")

DEFAULT_OPENAI_BASE = "https://api.openai.com/v1"
RELAYED_HEADERS = ("x-request-id", "openai-processing-ms", "openai-organization")
MAX_ERROR_CHARS = 2000


def check_client_fields(route: ModelRoute, body: Mapping[str, Any]) -> None:
    """Refuse (400) body fields this route may not take from a client."""
    if route.kind == "litellm":
        litellm_body(body, route.deployment.client_params)
    else:
        check_passthrough_body(body)


@dataclass(slots=True)
class UpstreamCall:
    """What to send: the OpenAI-shaped body (model already public name), where, and which key."""

    body: dict[str, Any]
    route: ModelRoute
    client_key: str | None = None


class ReplyCollector:
    """Accumulates the assistant's text from a response or a stream of SSE chunks.

    Relayed SSE bytes are only kept while the stream runs; they are parsed when ``text`` or
    ``finished`` is first read (by the learner, after the response went out), so the relay
    does no JSON parsing per chunk, and none at all when the exchange is not learned.
    """

    def __init__(self) -> None:
        self.parts: list[str] = []
        self._finished = False
        self._buffer = b""
        self._pending: list[bytes] = []

    @property
    def text(self) -> str:
        self._parse_pending()
        return "".join(self.parts)

    @property
    def finished(self) -> bool:
        self._parse_pending()
        return self._finished

    @finished.setter
    def finished(self, value: bool) -> None:
        self._parse_pending()
        self._finished = value

    def feed_completion(self, payload: Mapping[str, Any]) -> None:
        choices = payload.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
            message = choices[0].get("message") or {}
            content = message.get("content") if isinstance(message, Mapping) else None
            if isinstance(content, str):
                self.parts.append(content)
        self._finished = True

    def feed_chunk(self, payload: Mapping[str, Any]) -> None:
        choices = payload.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content") if isinstance(delta, Mapping) else None
            if isinstance(content, str):
                self.parts.append(content)
            if choice.get("finish_reason"):
                self._finished = True

    def feed_sse_bytes(self, data: bytes) -> None:
        """Take raw SSE bytes as they arrive (lines may be split across reads)."""
        self._pending.append(data)

    def _parse_pending(self) -> None:
        if not self._pending:
            return
        data = self._buffer + b"".join(self._pending)
        self._pending.clear()
        *lines, self._buffer = data.split(b"\n")
        for line in lines:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            value = line[5:].strip()
            if value == b"[DONE]":
                self._finished = True
                continue
            try:
                payload = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(payload, dict):
                self.feed_chunk(payload)


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
    for prefix in OPENAI_COMPATIBLE_PREFIXES:
        if model.startswith(prefix):
            return model[len(prefix) :]
    return model


class PassthroughUpstream:
    """Raw relay to an OpenAI-compatible endpoint over one shared ``aiohttp.ClientSession``.

    aiohttp rather than httpx on this path: measured on loopback, an httpx round trip costs
    ~5x the CPU of an aiohttp one (connection-pool bookkeeping and anyio layers), which was
    most of the proxy's own overhead (BENCHMARKS.md, "Overhead").
    """

    def __init__(self, client: aiohttp.ClientSession, *, forward_client_key: bool) -> None:
        self._client = client
        self._forward_client_key = forward_client_key

    async def complete(self, call: UpstreamCall) -> UpstreamResponse:
        params = call.route.params
        base = str(params.get("api_base") or DEFAULT_OPENAI_BASE).rstrip("/")
        body = dict(call.body)
        body["model"] = provider_model(call.route.model)
        for name in ("temperature", "max_tokens", "top_p"):
            if name in params and name not in body:
                body[name] = params[name]
        headers = {"content-type": "application/json"}
        api_key: str | None = params.get("api_key")
        if call.client_key and self._forward_client_key and not api_key:
            api_key = call.client_key
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        for name, value in (params.get("extra_headers") or {}).items():
            headers[str(name).lower()] = str(value)
        timeout = params.get("timeout")
        options: dict[str, Any] = {"timeout": deployment_timeout(float(timeout))} if timeout else {}
        try:
            response = await self._client.post(
                f"{base}/chat/completions", data=orjson.dumps(body), headers=headers, **options
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
        collector = ReplyCollector()
        if response.status >= 400 or not body.get("stream"):
            try:
                raw = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise UpstreamError(f"upstream failed mid-response: {exc}", status=502) from exc
            finally:
                response.release()
            if response.status >= 400:
                return UpstreamResponse(
                    response.status,
                    relayed,
                    collector,
                    body=_openai_error(raw, response.status),
                )
            try:
                payload = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise UpstreamError("upstream returned invalid JSON", status=502) from exc
            if isinstance(payload, dict):
                collector.feed_completion(payload)
            return UpstreamResponse(response.status, relayed, collector, body=raw)
        return UpstreamResponse(
            response.status, relayed, collector, stream=_relay(response, collector)
        )


def deployment_timeout(seconds: float, *, connect: float = 10.0) -> aiohttp.ClientTimeout:
    """Per-read and connect timeouts (no cap on a whole stream's duration)."""
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=seconds)


async def _relay(
    response: aiohttp.ClientResponse, collector: ReplyCollector
) -> AsyncIterator[bytes]:
    """Yield upstream bytes as they arrive; closing the generator closes the upstream stream."""
    try:
        async for data in response.content.iter_any():
            collector.feed_sse_bytes(data)
            yield data
    except (TimeoutError, aiohttp.ClientError) as exc:
        log.warning("upstream stream broke: %s", exc)
        collector.finished = False
        yield b"data: " + error_body("upstream stream broke", "upstream_error") + b"\n\n"
    finally:
        # A fully read response goes back to the pool; a cut-short one closes its connection.
        response.release()


def _openai_error(raw: bytes, status: int) -> bytes:
    """Keep an upstream error body already in OpenAI's shape; wrap anything else."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return raw
    text = raw.decode("utf-8", "replace")[:500] or f"upstream returned HTTP {status}"
    return error_body(text, "upstream_error", code=str(status))


class LiteLLMUpstream:
    """Any provider through ``litellm.acompletion``, translated to and from OpenAI's shape."""

    def __init__(self, *, forward_client_key: bool) -> None:
        self._forward_client_key = forward_client_key

    async def complete(self, call: UpstreamCall) -> UpstreamResponse:
        litellm = get_litellm()
        # The body may override the config's sampling defaults, and brings no other field.
        kwargs = {
            **call.route.params,
            **litellm_body(call.body, call.route.deployment.client_params),
        }
        kwargs["model"] = call.route.model
        if call.client_key and self._forward_client_key and not call.route.params.get("api_key"):
            kwargs["api_key"] = call.client_key
        kwargs.pop("upstream", None)
        if "num_retries" not in call.route.params and "max_retries" not in call.route.params:
            # litellm retries twice by default: one client request would reach the provider
            # three times (and take 3x the deployment timeout). Retry only when configured.
            kwargs["num_retries"] = kwargs["max_retries"] = 0
        collector = ReplyCollector()
        headers = {"content-type": "application/json"}
        try:
            response = await litellm.acompletion(**kwargs)
        except Exception as exc:  # litellm raises many provider-specific types; map them all here
            status, error_headers, error = _litellm_error(exc)
            # Provider errors carry a status; anything else may be our bug: keep its traceback.
            log.warning(
                "litellm call for %s failed with %s: %s",
                call.route.model,
                status,
                exc,
                exc_info=not hasattr(exc, "status_code"),
            )
            return UpstreamResponse(status, error_headers, collector, body=error, kind="litellm")
        if not call.body.get("stream"):
            payload = response.model_dump(exclude_none=True)
            payload["model"] = call.body.get("model", payload.get("model"))
            collector.feed_completion(payload)
            return UpstreamResponse(
                200, headers, collector, body=orjson.dumps(payload), kind="litellm"
            )
        headers["content-type"] = "text/event-stream"
        return UpstreamResponse(
            200,
            headers,
            collector,
            stream=_litellm_stream(response, collector, call),
            kind="litellm",
        )


async def _litellm_stream(
    response: Any, collector: ReplyCollector, call: UpstreamCall
) -> AsyncIterator[bytes]:
    public_model = call.body.get("model")
    try:
        async for chunk in response:
            payload = chunk.model_dump(exclude_none=True)
            payload["model"] = public_model
            collector.feed_chunk(payload)
            yield b"data: " + orjson.dumps(payload) + b"\n\n"
        collector.finished = True
        yield b"data: [DONE]\n\n"
    except Exception as exc:  # provider errors mid-stream: end the stream with an error event
        collector.finished = False
        status, _, body = _litellm_error(exc)
        log.warning("litellm stream failed (%s): %s", status, exc)
        yield b"data: " + body + b"\n\n"
    finally:
        close = getattr(response, "aclose", None)
        if close is not None:
            await close()


def _litellm_error(exc: Exception) -> tuple[int, dict[str, str], bytes]:
    status = getattr(exc, "status_code", None)
    if "timeout" in type(exc).__name__.lower():
        status = 504  # litellm.Timeout says 408, but the gateway timed out waiting upstream
    elif not isinstance(status, int) or status < 400:
        status = 502
    message = str(getattr(exc, "message", None) or exc)[:MAX_ERROR_CHARS]
    return (
        status,
        {"content-type": "application/json"},
        error_body(message, "upstream_error", code=str(status)),
    )


class UpstreamSet:
    """Picks the implementation for a route."""

    def __init__(self, passthrough: Upstream, litellm: Upstream) -> None:
        self.passthrough = passthrough
        self.litellm = litellm

    def for_route(self, route: ModelRoute) -> Upstream:
        return self.passthrough if route.kind == "passthrough" else self.litellm
