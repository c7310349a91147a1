"""The app factory: ``create_app(settings, *, upstream=..., memory=...)``; the lifespan owns
the HTTP client, the memory store and the learning workers."""

from __future__ import annotations

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
from memory_core.litellm_loader import get_litellm
from memory_core.queue import LearningQueue

from .auth import Authenticator, presented_key
from .chat import ChatDeps, chat_completions
from .errors import EXCEPTION_HANDLERS, Forbidden, error_response
from .guard import BrowserGuard
from .inject import TokenCounter, default_token_counter
from .learning import Learner
from .memories_api import memory_routes
from .metrics import Metrics
from .settings import Settings
from .upstream import (
    LiteLLMUpstream,
    PassthroughUpstream,
    Router,
    Upstream,
    UpstreamSet,
    deployment_timeout,
)

log = logging.getLogger("proxy")


def queue_path(settings: Settings) -> Path | None:
    """The queue lives in the data dir; for object-store URIs, in ./data next to the process."""
    uri = settings.memory.storage_uri
    if "://" in uri:
        return Path("data") / "queue.sqlite3"
    return Path(uri) / "queue.sqlite3"


def uses_env_proxy() -> bool:
    """True when an HTTP proxy is configured in the environment (any case of the names)."""
    names = ("http_proxy", "https_proxy", "all_proxy")
    return any(key.lower() in names and value for key, value in os.environ.items())


def create_app(
    settings: Settings | None = None,
    *,
    upstream: Upstream | None = None,
    memory: AsyncMemory | None = None,
    queue: LearningQueue | None = None,
    count_tokens: TokenCounter | None = None,
) -> Starlette:
    """Build the proxy. Pass ``upstream``/``memory``/``queue`` to inject fakes or shared ones."""
    settings = settings or Settings()
    router = Router(settings.model_list)
    metrics = Metrics()
    authenticator = Authenticator(settings.auth)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
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
        # Warm what the first request would otherwise pay for: litellm's import, the tokenizer.
        get_litellm()
        counter = count_tokens or default_token_counter()
        counter("warm up")
        mem = memory
        learning_queue = queue
        if settings.memory.enabled:
            if mem is None:
                mem = AsyncMemory(settings.memory.core_config())
            await mem.open()
            if learning_queue is None:
                path = queue_path(settings)
                assert path is not None
                learning_queue = LearningQueue(
                    path, Learner(mem, settings, router, metrics).handle, settings.memory.queue
                )
                await learning_queue.start()
                metrics.watch_queue(learning_queue.stats)
        app.state.chat = ChatDeps(
            settings=settings,
            router=router,
            upstreams=UpstreamSet(passthrough, litellm_upstream),
            authenticator=authenticator,
            metrics=metrics,
            memory=mem,
            queue=learning_queue,
            count_tokens=counter,
        )
        app.state.settings = settings
        app.state.memory = mem
        app.state.queue = learning_queue
        app.state.metrics = metrics
        app.state.authenticator = authenticator
        if not authenticator.enabled:
            log.warning("no API keys configured: open local mode (bind %s)", server.host)
        try:
            yield
        finally:
            if learning_queue is not None and queue is None:
                await learning_queue.stop()
            await client.close()
            if mem is not None and memory is None:
                await mem.close()

    def require_key(request: Request) -> None:
        """Any valid key, when keys are configured (the model list names the deployments)."""
        authenticator.authenticate(request.headers)

    public_metrics = settings.server.public_metrics
    if public_metrics is None:
        public_metrics = not authenticator.enabled

    def shows_details(request: Request) -> bool:
        """Queue and metrics details: public in open local mode (or when configured), else
        for the admin key only (a wrong key is a 401 as everywhere)."""
        if public_metrics:
            return True
        if presented_key(request.headers) is None:
            return False
        return authenticator.authenticate(request.headers).admin

    async def list_models(request: Request) -> Response:
        require_key(request)
        models = [
            {"id": name, "object": "model", "created": 0, "owned_by": "memproxy"}
            for name in router.public_models()
        ]
        return JSONResponse({"object": "list", "data": models})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        deps: ChatDeps | None = getattr(request.app.state, "chat", None)
        checks: dict[str, Any] = {}
        if deps is not None and deps.memory is not None:
            checks["store"] = deps.memory.is_ready
        if deps is not None and deps.queue is not None:
            checks["queue"] = deps.queue.stats()
        ok = deps is not None and all(v is not False for v in checks.values())
        if not ok:
            return error_response(503, "not ready", "server_error")
        if not shows_details(request):
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "ready", **checks})

    async def metrics_endpoint(request: Request) -> Response:
        if not shows_details(request):
            authenticator.authenticate(request.headers)  # no key: 401
            raise Forbidden("metrics need the admin API key (server.public_metrics)")
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/models", list_models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *memory_routes(),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[
            Middleware(
                BrowserGuard,
                check_host=not authenticator.enabled or bool(settings.server.allowed_hosts),
                allowed_hosts=settings.server.allowed_hosts,
                allowed_origins=settings.server.allowed_origins,
            )
        ],
    )
    app.state.settings = settings
    return app


__all__ = ["create_app", "queue_path"]
