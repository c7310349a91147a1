"""Any provider through LiteLLM, in the calling API's shape: ``litellm.acompletion`` for Chat
Completions, ``litellm.aresponses`` for Responses, ``litellm.anthropic_messages`` for
Anthropic Messages. LiteLLM translates to and from the provider's own API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from memory_core.litellm_loader import get_litellm

from .errors import shaped_error_body
from .provider_params import litellm_body
from .replies import Api, ReplyCollector, collector_for, sse_event
from .upstream import (
    MAX_ERROR_CHARS,
    UpstreamCall,
    UpstreamResponse,
    error_shape,
    stream_error_event,
)

log = logging.getLogger("proxy.upstream")

_CALLS = {"chat": "acompletion", "responses": "aresponses", "messages": "anthropic_messages"}


def _plain(value: Any, api: Api) -> dict[str, Any]:
    """A LiteLLM result (pydantic model or dict) as a JSON-ready dict (typed events' enum
    ``type`` as its string value)."""
    if isinstance(value, Mapping):
        return dict(value)
    mode = "python" if api == "chat" else "json"
    dumped = value.model_dump(mode=mode, exclude_none=True)
    return dumped if isinstance(dumped, dict) else {}


class LiteLLMUpstream:
    """Any provider through LiteLLM, translated to and from the calling API's shape."""

    kind = "litellm"

    def __init__(self, *, forward_client_key: bool) -> None:
        self._forward_client_key = forward_client_key

    async def complete(self, call: UpstreamCall) -> UpstreamResponse:
        litellm = get_litellm()
        # The body may override the config's sampling defaults, and brings no other field.
        kwargs = {
            **call.route.params,
            **litellm_body(call.body, call.route.deployment.client_params, call.api),
        }
        kwargs["model"] = call.route.model
        if call.client_key and self._forward_client_key and not call.route.params.get("api_key"):
            kwargs["api_key"] = call.client_key
        kwargs.pop("upstream", None)
        kwargs.pop("anthropic_version", None)
        if call.api == "responses" and "max_tokens" in kwargs:  # the config's default
            kwargs.setdefault("max_output_tokens", kwargs.pop("max_tokens"))
        if "num_retries" not in call.route.params and "max_retries" not in call.route.params:
            # litellm retries twice by default: one client request would reach the provider
            # three times (and take 3x the deployment timeout). Retry only when configured.
            kwargs["num_retries"] = kwargs["max_retries"] = 0
        if call.api == "messages":
            # An OpenAI-shaped model reached by an Anthropic client: LiteLLM translates to Chat
            # Completions (every OpenAI-compatible server has it; its Responses adapter needs
            # extra packages and a /responses route many servers lack).
            litellm.use_chat_completions_url_for_anthropic_messages = True  # type: ignore[attr-defined]
        collector = collector_for(call.api)
        headers = {"content-type": "application/json"}
        try:
            response = await getattr(litellm, _CALLS[call.api])(**kwargs)
        except Exception as exc:  # litellm raises many provider-specific types; map them all here
            status, error_headers, error = litellm_error(exc, call.api)
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
            payload = _plain(response, call.api)
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


def _public_model(api: Api, payload: dict[str, Any], model: Any) -> None:
    """Name the public model in a stream event (the provider's name stays inside)."""
    if api == "chat":
        payload["model"] = model
        return
    inner = payload.get("response") if api == "responses" else payload.get("message")
    if isinstance(inner, dict) and "model" in inner:
        inner["model"] = model


async def _litellm_stream(
    response: Any, collector: ReplyCollector, call: UpstreamCall
) -> AsyncIterator[bytes]:
    public_model = call.body.get("model")
    try:
        async for chunk in response:
            if isinstance(chunk, bytes):  # anthropic_messages relays SSE bytes as they came
                collector.feed_sse_bytes(chunk)
                yield chunk
                continue
            payload = _plain(chunk, call.api)
            _public_model(call.api, payload, public_model)
            collector.feed_chunk(payload)
            event = None if call.api == "chat" else str(payload.get("type", "")) or None
            yield sse_event(payload, event)
        if call.api == "chat":
            collector.finished = True
            yield b"data: [DONE]\n\n"
    except Exception as exc:  # provider errors mid-stream: end the stream with an error event
        collector.finished = False
        status, _, body = litellm_error(exc, call.api)
        log.warning("litellm stream failed (%s): %s", status, exc)
        if call.api == "responses":  # the Responses stream's own error event
            yield stream_error_event("responses", str(exc)[:MAX_ERROR_CHARS], status)
        else:
            yield sse_event(body, None if call.api == "chat" else "error")
    finally:
        close = getattr(response, "aclose", None)
        if close is not None:
            await close()


def litellm_error(exc: Exception, api: Api = "chat") -> tuple[int, dict[str, str], bytes]:
    status = getattr(exc, "status_code", None)
    if "timeout" in type(exc).__name__.lower():
        status = 504  # litellm.Timeout says 408, but the gateway timed out waiting upstream
    elif not isinstance(status, int) or status < 400:
        status = 502
    message = str(getattr(exc, "message", None) or exc)[:MAX_ERROR_CHARS]
    body = shaped_error_body(error_shape(api), status, message, "upstream_error", code=str(status))
    return status, {"content-type": "application/json"}, body


__all__ = ["LiteLLMUpstream", "litellm_error"]
