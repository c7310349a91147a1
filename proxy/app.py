"""The app factory: ``create_app(settings, *, upstream=..., memory=...)``; the lifespan owns
the HTTP client, the memory store and the learning workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from memory_core import AsyncMemory
from memory_core.errors import MemoryCoreError
from memory_core.export_store import ExportStore
from memory_core.litellm_loader import get_litellm
from memory_core.maintenance_lock import MaintenanceLock, RedisMaintenanceLock
from memory_core.queue import LearningQueue, open_job_store

from .auth import Authenticator, presented_key
from .change_events import ChangeEvents, change_job_kinds, watch_changes
from .chat import chat_completions
from .docs_routes import docs_routes
from .errors import EXCEPTION_HANDLERS, Forbidden, error_response
from .exports_api import export_routes
from .graph_api import graph_routes
from .guard import BrowserGuard
from .heap import freeze_startup_heap
from .inject import TokenCounter, default_token_counter
from .learning import ExtractionModels, Learner
from .learning_api import learning_routes
from .litellm_upstream import LiteLLMUpstream
from .logs import RequestIds
from .mcp_server import McpEndpoint
from .memories_api import memory_routes
from .messages_api import create_message
from .metrics import HttpMetrics, Metrics
from .model_routing import ModelRouter
from .profiles_api import profile_routes
from .responses_api import create_response
from .settings import Settings
from .state import AppState, state_of
from .tracing import ChatTracing, ServerSpans, build_tracer
from .upstream import (
    AnthropicUpstream,
    PassthroughUpstream,
    Upstream,
    UpstreamSet,
    deployment_timeout,
)
from .webhooks import WebhookSender

log = logging.getLogger("proxy")
EPOCH = "1970-01-01T00:00:00Z"


def queue_path(settings: Settings) -> Path:
    """The SQLite queue lives in the data dir; for object-store URIs, in ./data next to the
    process (replicas share ``memory.queue.backend: redis`` instead)."""
    uri = settings.memory.storage_uri
    if "://" in uri:
        return Path("data") / "queue.sqlite3"
    return Path(uri) / "queue.sqlite3"


def shared_maintenance_lock(settings: Settings) -> MaintenanceLock | None:
    """Replicas sharing a Redis queue also share who runs store maintenance."""
    queue = settings.memory.queue
    if queue.backend != "redis":
        return None
    return RedisMaintenanceLock(queue.redis_url, prefix=queue.redis_prefix)


def uses_env_proxy() -> bool:
    """True when an HTTP proxy is configured in the environment (any case of the names)."""
    names = ("http_proxy", "https_proxy", "all_proxy")
    return any(key.lower() in names and value for key, value in os.environ.items())


def shows_details(request: Request, state: AppState) -> bool:
    """Queue and metrics details: public in open local mode (or when configured), else for the
    admin key only (a wrong key is a 401 as everywhere)."""
    public_metrics = state.settings.server.public_metrics
    if public_metrics is None:
        public_metrics = not state.authenticator.enabled
    if public_metrics:
        return True
    if presented_key(request.headers) is None:
        return False
    return state.authenticator.authenticate(request.headers).admin


async def list_models(request: Request) -> Response:
    state = state_of(request)
    # Any valid key, when keys are configured: the model list names the deployments.
    state.authenticator.authenticate(request.headers)
    names = state.model_router.public_models()
    if "anthropic-version" in request.headers:  # the anthropic SDK's models.list()
        listed = [
            {"type": "model", "id": name, "display_name": name, "created_at": EPOCH}
            for name in names
        ]
        first, last = (names[0], names[-1]) if names else (None, None)
        return JSONResponse({"data": listed, "has_more": False, "first_id": first, "last_id": last})
    models = [
        {"id": name, "object": "model", "created": 0, "owned_by": "memproxy"} for name in names
    ]
    return JSONResponse({"object": "list", "data": models})


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    state = state_of(request)  # before the lifespan built it: 503 "not ready"
    checks: dict[str, Any] = {}
    if state.memory is not None:
        checks["store"] = state.memory.is_ready
    if state.queue is not None:
        checks["queue"] = await state.queue.fresh_stats()
    if not all(v is not False for v in checks.values()):
        return error_response(503, "not ready", "server_error")
    if not shows_details(request, state):
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "ready", **checks})


async def metrics_endpoint(request: Request) -> Response:
    state = state_of(request)
    if not shows_details(request, state):
        state.authenticator.authenticate(request.headers)  # no key: 401
        raise Forbidden("metrics need the admin API key (server.public_metrics)")
    if state.memory is not None:
        try:
            state.metrics.observe_store(await asyncio.wait_for(state.memory.store_stats(), 2.0))
        except (MemoryCoreError, TimeoutError) as exc:  # the store's gauges keep their values
            log.warning("store stats for /metrics failed: %r", exc)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")


def create_app(
    settings: Settings | None = None,
    *,
    upstream: Upstream | None = None,
    memory: AsyncMemory | None = None,
    queue: LearningQueue | None = None,
    count_tokens: TokenCounter | None = None,
    tracer_provider: Any | None = None,
    freeze_heap: bool = False,
) -> Starlette:
    """Build the proxy. Pass ``upstream``/``memory``/``queue`` to inject fakes or shared ones,
    ``tracer_provider`` an OpenTelemetry SDK provider (tests: an in-memory exporter);
    ``freeze_heap`` (the server process's own app): once started, exempt what the startup
    built from the garbage collector's passes (``heap.freeze_startup_heap``)."""
    settings = settings or Settings()
    tracing_settings = settings.server.tracing
    tracer = build_tracer(
        tracing_settings.enabled,
        tracing_settings.otlp_endpoint,
        tracing_settings.service_name,
        tracer_provider,
    )
    chat_tracing = ChatTracing(tracer) if tracing_settings.enabled or tracer_provider else None
    model_router = ModelRouter(settings.model_list)
    extraction = ExtractionModels(settings, model_router)
    metrics = Metrics()
    authenticator = Authenticator(settings.auth)
    mcp = McpEndpoint(settings) if settings.mcp.enabled else None
    webhook_sender = WebhookSender(settings.webhooks)  # a missing secret fails here

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if mcp is not None:
                await stack.enter_async_context(mcp.manager.run())
            await stack.enter_async_context(serve(app))
            yield

    @contextlib.asynccontextmanager
    async def serve(app: Starlette) -> AsyncIterator[None]:
        server = settings.server
        client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=30),
            timeout=deployment_timeout(server.request_timeout_s, connect=server.connect_timeout_s),
            cookie_jar=aiohttp.DummyCookieJar(),  # never carry one caller's cookies to the next
            # HTTP(S)_PROXY/NO_PROXY as httpx did; looked up per request, so only when set.
            trust_env=uses_env_proxy(),
        )
        passthrough = upstream or PassthroughUpstream(
            client, forward_client_key=server.forward_client_key
        )
        litellm_upstream = upstream or LiteLLMUpstream(forward_client_key=server.forward_client_key)
        anthropic = upstream or AnthropicUpstream(
            client, forward_client_key=server.forward_client_key
        )
        # Warm what the first request would otherwise pay for: litellm's import, the tokenizer.
        get_litellm()
        counter = count_tokens or default_token_counter()
        counter("warm up")
        maintenance_lock: MaintenanceLock | None = None
        mem = memory
        learning_queue = queue
        exports = None
        change_events: ChangeEvents | None = None
        if settings.memory.enabled:
            if mem is None:
                maintenance_lock = shared_maintenance_lock(settings)
                mem = AsyncMemory(settings.memory.core_config(), maintenance_lock=maintenance_lock)
            await mem.open()
            exports = ExportStore(
                settings.memory.storage_uri,
                storage_options=settings.memory.storage_options,
                read_consistency_interval_s=settings.memory.read_consistency_interval_s,
            )
            if learning_queue is None:
                learner = Learner(
                    mem,
                    extraction,
                    metrics,
                    tracer,
                    exports=exports,
                    max_attempts=settings.memory.queue.max_attempts,
                    kinds=change_job_kinds(mem, settings, extraction, webhook_sender),
                )
                learning_queue = LearningQueue(
                    open_job_store(settings.memory.queue, queue_path(settings)),
                    learner.handle,
                    settings.memory.queue,
                )
                await learning_queue.start()
                metrics.watch_queue(learning_queue.stats)
            change_events = watch_changes(mem, learning_queue, settings, extraction, metrics)
        app.state.memproxy = AppState(
            settings=settings,
            model_router=model_router,
            upstreams=UpstreamSet(passthrough, litellm_upstream, anthropic),
            authenticator=authenticator,
            metrics=metrics,
            memory=mem,
            queue=learning_queue,
            count_tokens=counter,
            extraction=extraction,
            exports=exports,
            tracing=chat_tracing,
        )
        if not authenticator.enabled:
            log.warning("no API keys configured: open local mode (bind %s)", server.host)
        if freeze_heap:
            log.info("startup heap frozen: %d objects", freeze_startup_heap())
        try:
            yield
        finally:
            if change_events is not None and mem is not None:
                mem.unwatch(change_events)
            if learning_queue is not None and queue is None:
                await learning_queue.stop()
            await client.close()
            if mem is not None and memory is None:
                await mem.close()
            if maintenance_lock is not None:
                await maintenance_lock.close()

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/responses", create_response, methods=["POST"]),
        Route("/responses", create_response, methods=["POST"]),
        Route("/v1/messages", create_message, methods=["POST"]),
        Route("/messages", create_message, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/models", list_models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *memory_routes(),
        *docs_routes(),
        *export_routes(),
        *learning_routes(),
        *graph_routes(),
        *profile_routes(),
    ]
    if mcp is not None:
        routes.append(Route("/mcp", mcp, methods=["GET", "POST", "DELETE"]))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[
            Middleware(RequestIds),
            Middleware(ServerSpans, tracer=tracer),
            Middleware(HttpMetrics, metrics=metrics),
            Middleware(
                BrowserGuard,
                check_host=not authenticator.enabled or bool(settings.server.allowed_hosts),
                allowed_hosts=settings.server.allowed_hosts,
                allowed_origins=settings.server.allowed_origins,
            ),
        ],
    )
    return app


__all__ = ["create_app", "queue_path"]
