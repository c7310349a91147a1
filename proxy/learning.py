"""The learning job: what the queue runs for each finished exchange."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from memory_core import AsyncMemory, LLMConfig
from memory_core.config import MAX_LLM_ATTEMPTS
from memory_core.errors import InvalidInput
from memory_core.export_store import ExportStore
from memory_core.extraction import ChatLLM, LiteLLMChat
from memory_core.learning_report import LearningReport
from memory_core.llm_client import ShiftedAttempts
from memory_core.queue import Handler, Job

from .export_jobs import EXPORT_JOB, run_export
from .logs import request_id
from .metrics import Metrics
from .model_routing import ModelRouter
from .settings import Settings
from .tracing import TracedChatLLM, Tracer, job_span, trace_carrier

log = logging.getLogger("proxy.learning")
# Queue try n of a job starts its LLM attempts at (n - 1) * this (``llm.attempts`` <= it).
QUEUE_ATTEMPT_STRIDE = MAX_LLM_ATTEMPTS


def learning_payload(
    identity: dict[str, str | None], messages: list[dict[str, str]], model: str
) -> dict[str, Any]:
    return {
        "scope": identity,
        "messages": messages,
        "model": model,
        "timestamp": time.time(),
        "request_id": request_id.get(),  # the job's log lines carry the chat's request id
        "trace": trace_carrier(),  # and its spans join the chat's trace
    }


class ExtractionSource(Protocol):
    """Which LLM learns from a chat made with ``model`` (``ExtractionModels``; the learning
    benchmark gives one fixed model)."""

    def for_chat_model(self, model: str) -> ChatLLM: ...

    def model_name(self, chat_model: str) -> str:
        """The LiteLLM model string ``for_chat_model(chat_model)`` calls (traces)."""
        ...


class ExtractionModels:
    """The one answer to "which LLM extracts facts": ``memory.llm``, else the
    ``memory.extraction_model`` deployment, else (for a learned chat) the chat's own model.
    Each client is built once and reused."""

    def __init__(self, settings: Settings, model_router: ModelRouter) -> None:
        self._model_router = model_router
        config = settings.extraction_llm()
        self._configured: ChatLLM | None = LiteLLMChat(config) if config is not None else None
        self._configured_model = config.model if config is not None else None
        self._by_chat_model: dict[str, ChatLLM] = {}

    def configured(self) -> ChatLLM | None:
        """The configured extraction model, if any (the memory API and the CLI use only it)."""
        return self._configured

    def model_name(self, chat_model: str) -> str:
        """The LiteLLM model string ``for_chat_model(chat_model)`` calls (traces)."""
        return self._configured_model or self._model_router.resolve(chat_model).model

    def for_chat_model(self, model: str) -> ChatLLM:
        """The configured extraction model, else the model the chat used."""
        if self._configured is not None:
            return self._configured
        llm = self._by_chat_model.get(model)
        if llm is None:
            route = self._model_router.resolve(model)
            if route.params.get("api_key") is None and route.kind == "passthrough":
                raise InvalidInput(
                    f"no provider key to learn with model {model!r}: set memory.extraction_model"
                )
            llm = LiteLLMChat(LLMConfig.model_validate({**route.params, "model": route.model}))
            self._by_chat_model[model] = llm
        return llm


class Learner:
    """Applies queued exchanges with ``AsyncMemory.add(infer=True)``, idempotent by job id,
    and runs queued structured exports; each job's outcome is its stored result."""

    def __init__(
        self,
        memory: AsyncMemory,
        extraction: ExtractionSource,
        metrics: Metrics,
        tracer: Tracer | None = None,
        *,
        exports: ExportStore | None = None,
        max_attempts: int = 10,
        kinds: Mapping[str, Handler] | None = None,
    ) -> None:
        self._memory = memory
        self._extraction = extraction
        self._metrics = metrics
        self._tracer = tracer
        self._exports = exports
        self._max_attempts = max_attempts
        self._kinds = dict(kinds or {})  # other job kinds: webhook deliveries, profiles

    async def handle(self, job: Job) -> dict[str, Any]:
        token = request_id.set(job.payload.get("request_id") or f"job-{job.id}")
        try:
            if self._tracer is None:
                return await self._apply(job)
            attributes = {"memory.job_id": job.id, "memory.job_attempt": job.attempts}
            with job_span(self._tracer, job.payload.get("trace"), attributes):
                return await self._apply(job)
        finally:
            request_id.reset(token)

    def _llm(self, chat_model: str) -> ChatLLM:
        llm = self._extraction.for_chat_model(chat_model)
        if self._tracer is None:
            return llm
        return TracedChatLLM(llm, self._tracer, self._extraction.model_name(chat_model))

    async def _apply(self, job: Job) -> dict[str, Any]:
        """Learn from one queued exchange; its ``LearningReport`` is the job's stored result."""
        payload = job.payload
        other = self._kinds.get(str(payload.get("kind")))
        if other is not None:
            return await other(job) or {}
        if payload.get("kind") == EXPORT_JOB:
            if self._exports is None:
                raise InvalidInput("exports need the memory store's exports table")
            # POST /v1/exports requires a configured extraction model: that is the one here.
            llm = self._llm("")
            await run_export(job, self._memory, self._exports, llm, self._max_attempts)
            return {"export_id": payload.get("export_id")}
        if payload.get("kind") is not None:  # a kind this process has no handler for
            raise InvalidInput(f"no handler for {str(payload.get('kind'))[:40]!r} jobs")
        scope = payload.get("scope") or {}
        messages = list(payload["messages"])
        images = payload.get("images") or []
        if images:  # the new turn's images, learned with its words (memory_core.ingest)
            parts = [{"type": "image_url", "image_url": {"url": url}} for url in images]
            messages.append({"role": "user", "content": parts})
        report = LearningReport()
        llm = self._llm(str(payload.get("model", "")))
        try:
            result = await self._memory.add(
                messages,
                user_id=scope.get("user_id"),
                agent_id=scope.get("agent_id"),
                run_id=scope.get("run_id"),
                app_id=scope.get("app_id"),
                infer=True,
                timestamp=payload.get("timestamp"),
                job_id=job.id,
                source=payload.get("source"),
                # A queue retry continues the attempt count: other temperatures and seeds than
                # the tries before it, never the same call again.
                llm=ShiftedAttempts(llm, (job.attempts - 1) * QUEUE_ATTEMPT_STRIDE),
                report=report,
            )
        except Exception:  # counted, then re-raised for the queue to retry or dead-letter
            self._metrics.extraction.labels("error").inc()
            self._metrics.record_learning(report, finished=False)
            raise
        self._metrics.extraction.labels("ok").inc()
        self._metrics.record_learning(report, finished=True)
        self._metrics.lag.observe(max(0.0, time.time() - job.enqueued_at))
        events = [str(r.get("event")) for r in result["results"]] or ["NONE"]
        log.info("job %s %s: %s", job.id, report.status, " ".join(events))
        return report.to_dict()
