"""OpenTelemetry traces (issue 18), recorded with the SDK's in-memory exporter.

A chat through a real server: one server span with a child per stage (embed, search, inject,
the upstream ``chat`` call with GenAI attributes); its learning job's span and LLM calls are
in the same trace. No span attribute holds a message or memory text.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from memory_core import AsyncMemory
from proxy import Settings, create_app
from tests.conftest import SharedEmbedder
from tests.fake_upstream import FakeUpstream
from tests.queue_procs import post_chat
from tests.servers import ServerThread, learn_state, wait_learned


@pytest.fixture
def traced(
    tmp_path: Any, fake_llm: FakeUpstream, embedder: SharedEmbedder
) -> Iterator[tuple[ServerThread, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = Settings.model_validate(
        {
            "model_list": [
                {
                    "model_name": "fake-model",
                    "litellm_params": {
                        "model": "openai/fake-model",
                        "api_base": fake_llm.url,
                        "api_key": "sk-fake",
                    },
                }
            ],
            "memory": {"storage_uri": str(tmp_path / "data"), "extraction_model": "fake-model"},
        }
    )
    memory = AsyncMemory(settings.memory.core_config(), embedder=embedder)
    with ServerThread(create_app(settings, memory=memory, tracer_provider=provider)) as server:
        yield server, exporter
    provider.shutdown()


def spans_named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def test_chat_stages_and_learning_job_share_one_trace(
    traced: tuple[ServerThread, InMemorySpanExporter],
) -> None:
    server, exporter = traced
    user = f"trace-{uuid.uuid4().hex[:6]}"
    secret_text = f"I live in Timbuktu{uuid.uuid4().hex[:4]}"
    before = learn_state(server)
    with httpx.Client(timeout=60) as client:
        response = post_chat(client, server.base_url, user, secret_text)
    assert response.status_code == 200
    wait_learned(server, before)
    deadline = time.monotonic() + 10
    while not spans_named(list(exporter.get_finished_spans()), "memory.learn"):
        assert time.monotonic() < deadline, "the learning job's span never ended"
        time.sleep(0.05)
    spans = list(exporter.get_finished_spans())
    [root] = spans_named(spans, "POST /v1/chat/completions")
    trace_id = root.context.trace_id
    children = [
        s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id
    ]
    # The learning job is a child too (it follows the chat), ending after it.
    stages = [s for s in children if s.name != "memory.learn"]
    names = {s.name for s in stages}
    assert {"memory.embed", "memory.search", "chat fake-model"} <= names, names
    # The user's first chat recalls nothing, so nothing is injected (no inject stage).
    assert response.headers["x-memory-recalled"] == "0" and "memory.inject" not in names
    [upstream] = [s for s in stages if s.name == "chat fake-model"]
    assert upstream.attributes is not None
    assert upstream.attributes["gen_ai.operation.name"] == "chat"
    assert upstream.attributes["gen_ai.request.model"] == "fake-model"
    assert upstream.attributes["gen_ai.provider.name"] == "openai"
    for stage in stages:  # the stages lie inside the request, in order
        assert root.start_time <= stage.start_time <= stage.end_time <= root.end_time
    # The learning job joined the chat's trace, with its LLM calls below it.
    [job] = spans_named(spans, "memory.learn")
    assert job.context.trace_id == trace_id
    calls = [s for s in spans if s.parent is not None and s.parent.span_id == job.context.span_id]
    assert calls and all(s.name == "chat openai/fake-model" for s in calls), [s.name for s in calls]
    assert all(s.context.trace_id == trace_id for s in calls)
    for span in spans:  # no text of the conversation anywhere in a span
        assert secret_text not in repr(dict(span.attributes or {})), span.name


def test_traceparent_from_the_client_is_continued(
    traced: tuple[ServerThread, InMemorySpanExporter],
) -> None:
    server, exporter = traced
    trace_id = uuid.uuid4().hex
    parent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    response = httpx.get(f"{server.url}/models", headers={"traceparent": parent}, timeout=30)
    assert response.status_code == 200
    [span] = spans_named(list(exporter.get_finished_spans()), "GET /v1/models")
    assert f"{span.context.trace_id:032x}" == trace_id


def test_tracing_is_off_by_default() -> None:
    from opentelemetry.trace import NoOpTracer

    from proxy.tracing import build_tracer

    assert isinstance(build_tracer(False, None, "memproxy"), NoOpTracer)
    assert Settings().server.tracing.enabled is False
