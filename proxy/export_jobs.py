"""The queue's export job (queued by ``POST /v1/exports``, see ``exports_api.py``)."""

from __future__ import annotations

from memory_core import AsyncMemory
from memory_core.errors import MemoryCoreError
from memory_core.export_store import ExportStore
from memory_core.extraction import ChatLLM
from memory_core.queue import PERMANENT_ERRORS, Job
from memory_core.types import Scope

EXPORT_JOB = "export"  # the payload "kind" of an export job (learning jobs have none)


async def run_export(
    job: Job, memory: AsyncMemory, exports: ExportStore, llm: ChatLLM, max_attempts: int
) -> None:
    """The queue's export job: fill, validate, store; each failure recorded on the export
    (``retrying``, then ``failed`` with the error when the queue gives up)."""
    export_id = str(job.payload["export_id"])
    record = await exports.get(export_id)
    if record["status"] == "completed":
        return  # at-least-once delivery: a repeated job is a no-op
    await exports.set_status(export_id, "running", attempts=job.attempts)
    scope = Scope.of(record)
    try:
        data = await memory.export_structured(
            record["schema"],
            user_id=scope.user_id,
            agent_id=scope.agent_id,
            run_id=scope.run_id,
            app_id=scope.app_id,
            instructions=record["instructions"],
            filters=record["filters"],
            llm=llm,
        )
    except MemoryCoreError as exc:
        final = isinstance(exc, PERMANENT_ERRORS) or job.attempts >= max_attempts
        await exports.set_status(
            export_id,
            "failed" if final else "retrying",
            error=str(exc)[:4000],
            attempts=job.attempts,
        )
        raise
    await exports.set_status(export_id, "completed", result=data, attempts=job.attempts)


__all__ = ["EXPORT_JOB", "run_export"]
