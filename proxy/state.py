"""The one object every route reads: what the app's lifespan builds once, set on the app as
``app.state.memproxy`` and read with ``state_of(request)``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from memory_core import AsyncMemory
from memory_core.export_store import ExportStore
from memory_core.queue import LearningQueue

from .auth import Authenticator
from .errors import NotReady
from .inject import TokenCounter
from .learning import ExtractionModels
from .metrics import Metrics
from .model_routing import ModelRouter
from .settings import Settings
from .tracing import ChatTracing
from .turn_recall import TurnRecalls
from .upstream import UpstreamSet


@dataclass(slots=True)
class AppState:
    """Everything the routes need. ``memory`` and ``queue`` are None with memory disabled;
    ``openapi`` is the API document, built on its first request."""

    settings: Settings
    model_router: ModelRouter
    upstreams: UpstreamSet
    authenticator: Authenticator
    metrics: Metrics
    memory: AsyncMemory | None
    queue: LearningQueue | None
    count_tokens: TokenCounter
    extraction: ExtractionModels
    exports: ExportStore | None = None
    openapi: dict[str, Any] | None = None
    tracing: ChatTracing | None = None  # None: tracing off
    turn_recalls: TurnRecalls = field(default_factory=TurnRecalls)


def state_of(request: Request) -> AppState:
    """The app's state; 503 until the lifespan has built it."""
    state: AppState | None = getattr(request.app.state, "memproxy", None)
    if state is None:
        raise NotReady("not ready")
    return state
