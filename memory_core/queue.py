"""The durable learning queue: async workers over the SQLite (WAL) outbox (``job_store.py``).

Guarantees: an enqueued job survives ``kill -9`` (enqueue is one committed transaction);
jobs of one scope (user/agent/run) run one at a time in enqueue order; different scopes run
concurrently up to a bound; failures retry with exponential backoff and jitter, then go to the
dead-letter state with the error kept; leases with expiry stop two processes sharing the data
dir from running the same job, and hand a dead process's jobs to the living. Delivery is
at-least-once; handlers make re-processing idempotent by job id.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .config import QueueConfig
from .errors import InvalidIdentity, InvalidInput, MemoryCoreError
from .job_store import Job, JobStore, owner_identity

log = logging.getLogger("memory_core.queue")
T = TypeVar("T")
# Bad input never gets better by retrying: such a job goes straight to the dead letters.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (InvalidIdentity, InvalidInput)


@dataclass(slots=True)
class QueueCounters:
    applied: int = 0
    retried: int = 0
    dead: int = 0
    lags: list[float] = field(default_factory=list)


# A handler returns the job's outcome (logged in ``job_results``), or None.
Handler = Callable[[Job], Awaitable[dict[str, Any] | None]]


class LearningQueue:
    """Async front of ``JobStore``: enqueue from the request path, workers in the background."""

    def __init__(
        self,
        path: str | Path,
        handler: Handler | None = None,
        settings: QueueConfig | None = None,
    ) -> None:
        self.settings = settings or QueueConfig()
        self._store = JobStore(path)
        self._handler = handler
        self._owner = owner_identity()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="queue-db")
        self._wakeup = asyncio.Event()
        self._running: dict[str, tuple[Job, asyncio.Task[None]]] = {}
        self._dispatcher: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopping = False
        self.counters = QueueCounters()

    @property
    def store(self) -> JobStore:
        return self._store

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def enqueue(
        self, scope_key: str, payload: dict[str, Any], job_id: str | None = None
    ) -> str:
        """Persist a job (one committed transaction) and wake the workers; returns its id."""
        job_id = job_id or uuid.uuid4().hex
        await self._db(self._store.enqueue, job_id, scope_key, payload)
        self._wakeup.set()
        return job_id

    async def start(self) -> None:
        """Recover jobs of dead processes and start the dispatcher (needs a handler)."""
        if self._handler is None:
            raise RuntimeError("LearningQueue.start() needs a handler")
        recovered = await self._db(self._store.recover_dead_owners)
        if recovered:
            log.info("recovered %d in-flight jobs from dead processes", recovered)
        loop = asyncio.get_running_loop()
        self._dispatcher = loop.create_task(self._dispatch())
        self._heartbeat = loop.create_task(self._renew_leases())

    async def _dispatch(self) -> None:
        while not self._stopping:
            free = self.settings.concurrency - len(self._running)
            jobs: list[Job] = []
            if free > 0:
                busy = [job.scope_key for job, _ in self._running.values()]
                try:
                    jobs = await self._db(
                        self._store.claim, self._owner, free, self.settings.lease_s, busy
                    )
                except sqlite3.Error as exc:
                    log.error("queue claim failed: %s", exc)
            for job in jobs:
                task = asyncio.get_running_loop().create_task(self._run(job))
                self._running[job.id] = (job, task)
            if self._stopping:
                break
            if jobs and len(self._running) < self.settings.concurrency:
                continue
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.settings.poll_s)
            except TimeoutError:
                pass

    async def _run(self, job: Job) -> None:
        assert self._handler is not None
        try:
            result = await self._handler(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the queue's boundary: every failure is recorded on the job
            await self._record_failure(job, exc)
        else:
            await self._db(self._store.complete, self._owner, job.id, result)
            self.counters.applied += 1
            self.counters.lags.append(time.time() - job.enqueued_at)
            del self.counters.lags[:-1000]
        finally:
            self._running.pop(job.id, None)
            self._wakeup.set()

    async def _record_failure(self, job: Job, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        permanent = isinstance(exc, PERMANENT_ERRORS)
        if permanent or job.attempts >= self.settings.max_attempts:
            log.error("job %s dead after %d attempts: %s", job.id, job.attempts, error)
            await self._db(self._store.fail, self._owner, job.id, error, None)
            self.counters.dead += 1
            return
        delay = min(
            self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (job.attempts - 1)
        ) * random.uniform(0.5, 1.0)
        if not isinstance(exc, MemoryCoreError):
            log.exception("job %s failed unexpectedly (attempt %d)", job.id, job.attempts)
        else:
            log.warning(
                "job %s failed (attempt %d), retry in %.1fs: %s", job.id, job.attempts, delay, error
            )
        await self._db(self._store.fail, self._owner, job.id, error, time.time() + delay)
        self.counters.retried += 1

    async def _renew_leases(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.settings.lease_s / 3)
            ids = list(self._running)
            try:
                await self._db(self._store.renew, self._owner, ids, self.settings.lease_s)
            except sqlite3.Error as exc:
                log.error("lease renewal failed: %s", exc)

    def stats(self) -> dict[str, Any]:
        data = self._store.stats()
        data["running_here"] = len(self._running)
        data["applied"] = self.counters.applied
        data["retried"] = self.counters.retried
        return data

    async def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until no job is pending or leased (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = await self._db(self._store.stats)
            if stats["pending"] == 0 and stats["leased"] == 0:
                return True
            await asyncio.sleep(0.05)
        return False

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop claiming, let running jobs finish within the grace period, release the rest."""
        self._stopping = True
        self._wakeup.set()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._dispatcher is not None:
            # Not cancelled: a claim in flight completes in the DB thread regardless, and the
            # jobs it leased must be tracked (run or released below), not stranded.
            try:
                await self._dispatcher
            except Exception:
                log.exception("queue dispatcher failed")
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        tasks = [task for _, task in self._running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        leftover = [job_id for job_id, (_, task) in self._running.items() if not task.done()]
        for job_id in leftover:
            self._running[job_id][1].cancel()
        if leftover:
            await self._db(self._store.release, self._owner, leftover)
            log.info("released %d running jobs for the next start", len(leftover))
        await self._db(self._store.close)
        self._executor.shutdown(wait=True)


__all__ = ["Handler", "Job", "JobStore", "LearningQueue", "QueueCounters"]
