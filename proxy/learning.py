"""The learning job: what the queue runs for each finished exchange."""

from __future__ import annotations

import logging
import time
from typing import Any

from memory_core import AsyncMemory, LLMConfig
from memory_core.errors import InvalidInput
from memory_core.extraction import ChatLLM, LiteLLMChat
from memory_core.queue import Job

from .metrics import Metrics
from .model_routing import ModelRouter
from .settings import Settings

log = logging.getLogger("proxy.learning")


def learning_payload(
    identity: dict[str, str | None], messages: list[dict[str, str]], model: str
) -> dict[str, Any]:
    return {"scope": identity, "messages": messages, "model": model, "timestamp": time.time()}


class Learner:
    """Applies queued exchanges with ``AsyncMemory.add(infer=True)``, idempotent by job id."""

    def __init__(
        self,
        memory: AsyncMemory,
        settings: Settings,
        model_router: ModelRouter,
        metrics: Metrics,
    ) -> None:
        self._memory = memory
        self._model_router = model_router
        self._metrics = metrics
        self._configured = settings.extraction_llm()
        self._llms: dict[str, ChatLLM] = {}

    def llm_for(self, model: str) -> ChatLLM:
        """The configured extraction model, else the model the chat used."""
        key = "" if self._configured is not None else model
        llm = self._llms.get(key)
        if llm is None:
            if self._configured is not None:
                config = self._configured
            else:
                route = self._model_router.resolve(model)
                if route.params.get("api_key") is None and route.kind == "passthrough":
                    raise InvalidInput(
                        f"no provider key to learn with model {model!r}: "
                        "set memory.extraction_model"
                    )
                config = LLMConfig.model_validate({**route.params, "model": route.model})
            llm = LiteLLMChat(config)
            self._llms[key] = llm
        return llm

    async def handle(self, job: Job) -> None:
        payload = job.payload
        scope = payload.get("scope") or {}
        try:
            result = await self._memory.add(
                payload["messages"],
                user_id=scope.get("user_id"),
                agent_id=scope.get("agent_id"),
                run_id=scope.get("run_id"),
                infer=True,
                timestamp=payload.get("timestamp"),
                job_id=job.id,
                llm=self.llm_for(str(payload.get("model", ""))),
            )
        except Exception:
            self._metrics.extraction.labels("error").inc()
            raise
        self._metrics.extraction.labels("ok").inc()
        self._metrics.lag.observe(max(0.0, time.time() - job.enqueued_at))
        events = [r.get("event") for r in result["results"]]
        log.debug("job %s applied: %s", job.id, events)
