"""Optional OpenTelemetry traces (``server.tracing.enabled``, off by default; OTLP over HTTP).

A chat request is one server span (``POST /v1/chat/completions``) with a child span per stage
— ``memory.embed``, ``memory.search``, ``memory.inject`` and the upstream call ``chat {model}``
(GenAI semantic conventions: ``gen_ai.operation.name``, ``gen_ai.request.model``,
``gen_ai.provider.name``) — made from the stage timings the route measures anyway. The
exchange's learning job carries the W3C ``traceparent`` in its payload: its span
(``memory.learn``) and its LLM calls join the chat's trace, whichever replica runs it.
Spans never hold message or memory texts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

__all__ = ["ChatTracing", "ServerSpans", "TracedChatLLM", "Tracer", "build_tracer", "job_span"]

from memory_core.errors import ConfigError
from memory_core.extraction import ChatLLM
from memory_core.llm_client import CallOptions, prompt_budget

TRACER_NAME = "memproxy"
_NO_TRACER = trace.NoOpTracer()


def build_tracer(
    enabled: bool, endpoint: str | None, service_name: str, provider: Any | None = None
) -> Tracer:
    """The app's tracer: a no-op one unless enabled; ``provider`` (tests: an SDK provider
    with an in-memory exporter) overrides the OTLP exporter."""
    if provider is not None:
        return provider.get_tracer(TRACER_NAME)  # type: ignore[no-any-return]
    if not enabled:
        return _NO_TRACER
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigError(
            "server.tracing.enabled needs the OpenTelemetry SDK: pip install 'memproxy[tracing]'"
        ) from exc

    sdk_provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    # No endpoint: the exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, else localhost.
    sdk_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return sdk_provider.get_tracer(TRACER_NAME)


def provider_of(litellm_model: str) -> str:
    """``openai/gpt-4o`` → ``openai`` (GenAI ``gen_ai.provider.name``)."""
    return litellm_model.split("/", 1)[0] if "/" in litellm_model else "openai"


class ChatTracing:
    """The request path's stage spans, from ``time.perf_counter()`` marks."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def stages(
        self,
        *,
        started: float,
        stages: Mapping[str, float],
        forwarding: float,
        answered: float,
        model: str,
        litellm_model: str,
        status: int,
        recalled: int,
        memory_status: str,
    ) -> None:
        """Child spans of the current (server) span for the stages that ran."""
        if not trace.get_current_span().is_recording():
            return
        # perf_counter seconds → epoch nanoseconds, taken now: the wall clock may be stepped.
        offset_ns = time.time_ns() - time.perf_counter_ns()

        def ns(perf_s: float) -> int:
            return int(perf_s * 1e9) + offset_ns

        mark = started
        for name, seconds in stages.items():
            span = self.tracer.start_span(f"memory.{name}", start_time=ns(mark))
            if name == "search":
                span.set_attribute("memory.recalled", recalled)
            span.end(end_time=ns(mark + max(seconds, 0.0)))
            mark += max(seconds, 0.0)
        span = self.tracer.start_span(
            f"chat {model}", kind=SpanKind.CLIENT, start_time=ns(forwarding)
        )
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": model,
                "gen_ai.provider.name": provider_of(litellm_model),
                "http.response.status_code": status,
                "memory.status": memory_status,
            }
        )
        if status >= 400:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=ns(answered))


def trace_carrier() -> dict[str, str]:
    """The current trace context as W3C headers, for a learning job's payload."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextmanager
def job_span(
    tracer: Tracer, carrier: Mapping[str, str] | None, attributes: dict[str, Any]
) -> Iterator[Any]:
    """``memory.learn``: the learning job's span, in the trace of the chat that queued it."""
    context = propagate.extract(dict(carrier or {}))
    with tracer.start_as_current_span(
        "memory.learn", context=context, kind=SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield span


class TracedChatLLM:
    """A ``ChatLLM`` whose calls are ``chat {model}`` spans (GenAI conventions)."""

    def __init__(self, inner: ChatLLM, tracer: Tracer, model: str) -> None:
        self._inner = inner
        self._tracer = tracer
        self._model = model
        self.prompt_chars = prompt_budget(inner)  # the pipeline sizes prompts by the model's

    async def complete(self, messages: list[dict[str, Any]], *, call: CallOptions) -> str:
        with self._tracer.start_as_current_span(
            f"chat {self._model}", kind=SpanKind.CLIENT
        ) as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": self._model,
                    "gen_ai.provider.name": provider_of(self._model),
                }
            )
            return await self._inner.complete(messages, call=call)


class ServerSpans:
    """ASGI middleware: one server span per HTTP request (``METHOD route-template``), the
    current span while the route runs; ``traceparent`` from the client is honoured."""

    def __init__(self, app: Any, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or isinstance(self.tracer, trace.NoOpTracer):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        context = propagate.extract(
            {k: v for k, v in headers.items() if k in ("traceparent", "tracestate")}
        )
        method = str(scope.get("method", ""))[:16]
        with self.tracer.start_as_current_span(
            method, context=context, kind=SpanKind.SERVER
        ) as span:

            async def traced_send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            try:
                await self.app(scope, receive, traced_send)
            finally:
                template = str(getattr(scope.get("route"), "path", "unmatched"))
                span.update_name(f"{method} {template}")
                span.set_attributes({"http.request.method": method, "http.route": template})
