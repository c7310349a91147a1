"""``POST /v1/chat/completions``: parse, identify, recall, inject, forward, learn afterwards."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from memory_core.bm25 import has_content_words
from memory_core.embedders import embed_timings
from memory_core.messages import check_messages

from .auth import presented_key
from .errors import BadRequest
from .identity import MemoryPlan, plan_memory, strip_proxy_fields
from .inject import (
    build_memory_block,
    inject_memory_block,
    pick_new_exchange,
    recall_query,
)
from .learning import learning_payload
from .request_body import parse_json, read_body
from .state import AppState, state_of
from .ui_tasks import task_recall_query
from .upstream import UpstreamCall, UpstreamResponse, check_client_fields

log = logging.getLogger("proxy.chat")


MAX_MODEL_CHARS = 256
_MODEL_RE = re.compile(r"[^\x00-\x20\x7f]+")


def parse_chat_body(raw: bytes, *, max_depth: int) -> dict[str, Any]:
    """Parse once; reject what OpenAI would reject before anything else happens."""
    body = parse_json(raw, max_depth=max_depth)
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", param="model")
    if len(model) > MAX_MODEL_CHARS or not _MODEL_RE.fullmatch(model):
        raise BadRequest(
            f"model must be 1-{MAX_MODEL_CHARS} printable characters without spaces",
            param="model",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty array", param="messages")
    check_messages(messages)  # InvalidInput: 400 naming the member, at the error edge
    return body


@dataclass(slots=True)
class RecallOutcome:
    messages: list[dict[str, Any]]
    status: str
    recalled: int
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds


async def recall_into(
    state: AppState, plan: MemoryPlan, messages: list[dict[str, Any]]
) -> RecallOutcome:
    """Search the user's memories and inject them; any memory failure degrades to passthrough."""
    recall = state.settings.memory.recall
    if state.memory is None or plan.identity is None:
        return RecallOutcome(messages, "no-user" if plan.identity is None else "off", 0)
    if plan.mode == "off":
        return RecallOutcome(messages, "off", 0)
    if plan.task is not None and not recall.recalls_for_task(plan.task):
        return RecallOutcome(messages, "ok", 0)
    if not plan.recall or recall.max_tokens == 0:
        return RecallOutcome(messages, "ok", 0)
    query = task_recall_query(messages) if plan.is_task else recall_query(messages)
    if not query or (recall.skip_small_talk and not has_content_words(query)):
        return RecallOutcome(messages, "ok", 0)
    identity = plan.identity
    embedding: list[float] = []
    token = embed_timings.set(embedding)
    started = time.perf_counter()
    try:
        found = await asyncio.wait_for(
            state.memory.search(
                query,
                user_id=identity.user_id,
                agent_id=identity.agent_id,
                limit=recall.limit,
                threshold=recall.threshold,
            ),
            timeout=recall.timeout_s,
        )
    except Exception as exc:  # memory never breaks chat: degrade to passthrough, say so
        log.warning("recall failed for a request, forwarding without memory: %r", exc)
        return RecallOutcome(messages, "degraded", 0)
    finally:
        embed_timings.reset(token)
    searched = time.perf_counter()
    block, count = build_memory_block(
        found["results"], max_tokens=recall.max_tokens, count_tokens=state.count_tokens
    )
    injected = (
        messages
        if block is None
        else inject_memory_block(messages, block, position=recall.position)
    )
    embed_s = sum(embedding)
    timings = {
        "embed": embed_s,
        "search": searched - started - embed_s,
        "inject": time.perf_counter() - searched,
    }
    return RecallOutcome(injected, "ok", count, timings)


async def chat_completions(request: Request) -> Response:
    state = state_of(request)
    started = time.perf_counter()
    headers = request.headers
    caller = state.authenticator.authenticate(headers)  # before a byte of the body is read
    limits = state.settings.server.limits
    raw = await read_body(request, limit=limits.max_body_bytes, timeout_s=limits.body_timeout_s)
    body = parse_chat_body(raw, max_depth=limits.max_json_depth)
    plan = plan_memory(body, headers, caller, state.settings.chat_ui)
    route = state.model_router.resolve(body["model"])
    outgoing = strip_proxy_fields(body)
    check_client_fields(route, outgoing)
    parsed = time.perf_counter()
    outcome = await recall_into(state, plan, body["messages"])
    outgoing["messages"] = outcome.messages
    overhead_ms = (time.perf_counter() - started) * 1000
    state.metrics.overhead.observe(overhead_ms / 1000)
    if outcome.recalled:
        state.metrics.recalled.inc(outcome.recalled)
    memory_headers = {
        "x-memory-status": outcome.status,
        "x-memory-recalled": str(outcome.recalled),
        "x-memory-overhead-ms": f"{overhead_ms:.2f}",
        "x-memory-mode": plan.mode,
    }
    if plan.task is not None:
        memory_headers["x-memory-task"] = plan.task
    client_key = None if state.authenticator.enabled else presented_key(headers)
    upstream = state.upstreams.for_route(route)
    forwarding = time.perf_counter()
    result = await upstream.complete(UpstreamCall(outgoing, route, client_key))
    answered = time.perf_counter()
    state.metrics.latency.observe(answered - started)
    state.metrics.requests.labels(str(result.status), outcome.status, result.kind).inc()
    response_headers = {**result.headers, **memory_headers, "x-memory-upstream": result.kind}
    response_headers["server-timing"] = server_timing(
        {"parse": parsed - started, **outcome.timings, "forward": answered - forwarding}
    )
    learn = _learner(state, plan, body, result) if result.status < 400 else None
    if result.stream is not None:
        response_headers.pop("content-length", None)
        response_headers["cache-control"] = "no-cache"
        return StreamingResponse(
            _delivered(result, result.stream, learn),
            status_code=result.status,
            headers=response_headers,
            media_type=result.headers.get("content-type", "text/event-stream"),
        )
    if learn is not None:
        # One small committed transaction before answering: an answered exchange is never lost.
        await learn()
    return Response(result.body or b"", status_code=result.status, headers=response_headers)


def server_timing(stages: dict[str, float]) -> str:
    """``Server-Timing`` value (ms) for the proxy's stages; ``forward`` is until the upstream
    answered (its headers, for a stream)."""
    return ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in stages.items())


async def _delivered(
    result: UpstreamResponse,
    stream: AsyncIterator[bytes],
    learn: Callable[[], Awaitable[None]] | None,
) -> AsyncIterator[bytes]:
    """Relay the stream. Once the upstream has finished the reply, the exchange is enqueued
    before the final bytes go out: clients close the connection as soon as they read
    ``[DONE]``, and one that disconnects earlier cancels this generator (nothing learned)."""
    async for data in stream:
        if learn is not None and result.collector.finished:
            await learn()
            learn = None
        yield data


def _learner(
    state: AppState, plan: MemoryPlan, body: dict[str, Any], result: UpstreamResponse
) -> Callable[[], Awaitable[None]] | None:
    if state.queue is None or not plan.learn or plan.identity is None:
        return None
    identity = plan.identity
    queue = state.queue
    metrics = state.metrics
    limits = state.settings.memory.limits

    async def learn() -> None:
        if not result.collector.finished:
            return  # aborted or broken stream: nothing complete to learn from
        exchange = pick_new_exchange(body["messages"], result.collector.text, limits=limits)
        if not exchange:
            return
        payload = learning_payload(identity.scope.as_dict(), exchange, body["model"])
        try:
            await queue.enqueue(identity.queue_key, payload)
        except Exception as exc:  # memory never breaks chat: the answer goes out regardless
            log.error("could not enqueue an exchange for learning: %r", exc)
            return
        metrics.enqueued.inc()

    return learn
