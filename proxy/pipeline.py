"""The one memory pipeline every API route runs: identify → recall → inject → forward → learn.

An ``ApiAdapter`` knows one API's request shape (parse and validate it, read it as a
chat-shaped conversation, put the memory block in); everything else — identity, memory modes,
recall (once per user turn), forwarding, diagnostics headers and learning (once per user turn,
from its final answer) — happens here, the same for Chat Completions, Responses and Messages.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from memory_core.bm25 import has_content_words
from memory_core.embedders import embed_timings
from memory_core.media import new_turn_images
from memory_core.types import MemoryItem

from .auth import presented_key
from .errors import BadRequest
from .identity import MemoryPlan, plan_memory, strip_proxy_fields
from .inject import build_memory_block, continues_tool_loop, pick_new_exchange, recall_query
from .learning import learning_payload
from .replies import Api
from .request_body import parse_json, read_body
from .state import AppState, state_of
from .turn_recall import RecalledBlock
from .ui_tasks import task_recall_query
from .upstream import UpstreamCall, UpstreamResponse, check_client_fields, client_beta

log = logging.getLogger("proxy.pipeline")

MAX_MODEL_CHARS = 256
_MODEL_RE = re.compile(r"[^\x00-\x20\x7f]+")
Conversation = list[dict[str, Any]]
T = TypeVar("T")


class ApiAdapter(Protocol):
    """One API's request shape. ``conversation`` is the request read as Chat Completions
    messages (role and content; tool calls as ``tool_calls``, results as ``tool`` messages),
    the one view recall, learning and task detection read."""

    api: Api
    opaque_claims: tuple[str, ...]  # identity claims that are free-form fields of this API

    def parse(self, raw: bytes, *, max_depth: int) -> dict[str, Any]: ...

    def conversation(self, body: dict[str, Any]) -> Conversation: ...

    def inject(self, body: dict[str, Any], block: str, position: str) -> dict[str, Any]: ...


def parse_model_body(raw: bytes, *, max_depth: int) -> dict[str, Any]:
    """Parse once; a JSON object with a printable ``model``, else 400."""
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
    return body


@dataclass(slots=True)
class RecallOutcome:
    block: str | None
    status: str
    recalled: int
    source: str = "none"  # "search" | "reused" (a later step of an agent loop) | "none"
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds


async def recall_block(
    state: AppState, plan: MemoryPlan, conversation: Sequence[dict[str, Any]]
) -> RecallOutcome:
    """The memory block for this request; any memory failure degrades to passthrough."""
    recall = state.settings.memory.recall
    if state.memory is None or plan.identity is None:
        return RecallOutcome(None, "no-user" if plan.identity is None else "off", 0)
    if plan.mode == "off":
        return RecallOutcome(None, "off", 0)
    if plan.task is not None and not recall.recalls_for_task(plan.task):
        return RecallOutcome(None, "ok", 0)
    if not plan.recall or recall.max_tokens == 0:
        return RecallOutcome(None, "ok", 0)
    query = task_recall_query(conversation) if plan.is_task else recall_query(conversation)
    if not query or (recall.skip_small_talk and not has_content_words(query)):
        return RecallOutcome(None, "ok", 0)
    identity = plan.identity
    if continues_tool_loop(conversation):
        reused = state.turn_recalls.get(identity, query)
        if reused is not None:
            return RecallOutcome(reused.block, "ok", reused.count, "reused")
    memory = state.memory
    with_profile = recall.profile is not False and state.settings.memory.profile.enabled

    async def recalled() -> tuple[list[MemoryItem], list[dict[str, Any]], str | None]:
        searching = None
        if recall.profile != "instead" or not with_profile:
            searching = memory.search(
                query,
                user_id=identity.user_id,
                agent_id=identity.agent_id,
                app_id=identity.app_id,  # apps are apart; runs of one user share memories
                limit=recall.limit,
                threshold=recall.threshold,
            )
        profile = memory.profile(user_id=identity.user_id) if with_profile else None
        found, stored = await asyncio.gather(_or_none(searching), _or_none(profile))
        relations = (found or {}).get("relations", [])[: memory.config.graph.block_relations]
        return (found or {}).get("results", []), relations, stored["profile"] if stored else None

    embedding: list[float] = []
    token = embed_timings.set(embedding)
    started = time.perf_counter()
    try:
        memories, relations, profile = await asyncio.wait_for(recalled(), timeout=recall.timeout_s)
    except Exception as exc:  # memory never breaks chat: degrade to passthrough, say so
        log.warning("recall failed for a request, forwarding without memory: %r", exc)
        return RecallOutcome(None, "degraded", 0, "search")
    finally:
        embed_timings.reset(token)
    searched = time.perf_counter()
    block, count = build_memory_block(
        memories,
        max_tokens=recall.max_tokens,
        count_tokens=state.count_tokens,
        profile=profile,
        relations=relations,
    )
    state.turn_recalls.put(identity, query, RecalledBlock(block, count))
    embed_s = sum(embedding)
    timings = {"embed": embed_s, "search": searched - started - embed_s}
    return RecallOutcome(block, "ok", count, "search", timings)


async def _or_none(pending: Awaitable[T] | None) -> T | None:
    return None if pending is None else await pending


async def serve_api(request: Request, adapter: ApiAdapter) -> Response:
    """Run one request of ``adapter``'s API through the memory pipeline."""
    state = state_of(request)
    started = time.perf_counter()
    headers = request.headers
    caller = state.authenticator.authenticate(headers)  # before a byte of the body is read
    limits = state.settings.server.limits
    raw = await read_body(request, limit=limits.max_body_bytes, timeout_s=limits.body_timeout_s)
    body = adapter.parse(raw, max_depth=limits.max_json_depth)
    conversation = adapter.conversation(body)
    plan = plan_memory(
        body, headers, caller, state.settings.chat_ui, conversation, adapter.opaque_claims
    )
    route = state.model_router.resolve(body["model"])
    kind, upstream = state.upstreams.for_call(adapter.api, route)
    outgoing = strip_proxy_fields(body)
    check_client_fields(kind, adapter.api, route, outgoing)
    beta = client_beta(headers.get("anthropic-beta")) if kind == "anthropic" else None
    parsed = time.perf_counter()
    outcome = await recall_block(state, plan, conversation)
    if outcome.block is not None:
        injecting = time.perf_counter()
        outgoing = adapter.inject(outgoing, outcome.block, state.settings.memory.recall.position)
        outcome.timings["inject"] = time.perf_counter() - injecting
    overhead_ms = (time.perf_counter() - started) * 1000
    metrics = state.metrics
    recalled = outcome.recalled if outcome.status == "ok" else None
    metrics.observe_recall(overhead_ms / 1000, outcome.timings, recalled)
    if outcome.source != "none":
        metrics.recalls.labels(adapter.api, outcome.source).inc()
    memory_headers = {
        "x-memory-status": outcome.status,
        "x-memory-recalled": str(outcome.recalled),
        "x-memory-recall": outcome.source,
        "x-memory-overhead-ms": f"{overhead_ms:.2f}",
        "x-memory-mode": plan.mode,
    }
    if plan.task is not None:
        memory_headers["x-memory-task"] = plan.task
    client_key = None if state.authenticator.enabled else presented_key(headers)
    forwarding = time.perf_counter()
    call = UpstreamCall(outgoing, route, client_key, adapter.api, beta)
    result = await upstream.complete(call)
    answered = time.perf_counter()
    metrics.observe_chat(
        model=route.deployment.model_name,
        status=result.status,
        memory_status=outcome.status,
        upstream=result.kind,
        seconds=answered - started,
    )
    if state.tracing is not None:
        state.tracing.stages(
            started=parsed,
            stages=outcome.timings,
            forwarding=forwarding,
            answered=answered,
            model=route.deployment.model_name,
            litellm_model=route.model,
            status=result.status,
            recalled=outcome.recalled,
            memory_status=outcome.status,
        )
    response_headers = {**result.headers, **memory_headers, "x-memory-upstream": result.kind}
    response_headers["server-timing"] = server_timing(
        {"parse": parsed - started, **outcome.timings, "forward": answered - forwarding}
    )
    learn = _learner(state, plan, body, conversation, result) if result.status < 400 else None
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
    before the final bytes go out: clients close the connection as soon as they read the last
    event, and one that disconnects earlier cancels this generator (nothing learned)."""
    async for data in stream:
        if learn is not None and result.collector.finished:
            await learn()
            learn = None
        yield data
    if learn is not None and result.collector.finished:
        await learn()  # the finishing event was the stream's last bytes (typed-event APIs)


def _learner(
    state: AppState,
    plan: MemoryPlan,
    body: dict[str, Any],
    conversation: Conversation,
    result: UpstreamResponse,
) -> Callable[[], Awaitable[None]] | None:
    if state.queue is None or not plan.learn or plan.identity is None:
        return None
    identity = plan.identity
    queue = state.queue
    metrics = state.metrics
    memory = state.settings.memory
    limits = memory.limits
    learn_images = memory.multimodal.enabled

    async def learn() -> None:
        collector = result.collector
        if not collector.finished or collector.tool_calls:
            # An aborted stream has nothing complete; a tool-call step is not the turn's
            # answer (the loop's final step learns the turn, once).
            return
        exchange = pick_new_exchange(
            conversation, collector.text, limits=limits, tool_results=memory.learn_tool_results
        )
        images = new_turn_images(conversation, memory.multimodal) if learn_images else []
        if not exchange and not images:
            return
        payload = learning_payload(identity.scope.as_dict(), exchange, body["model"])
        if images:
            payload["images"] = images
        try:
            await queue.enqueue(identity.queue_key, payload)
        except Exception as exc:  # memory never breaks chat: the answer goes out regardless
            log.error("could not enqueue an exchange for learning: %r", exc)
            return
        metrics.enqueued.inc()

    return learn
