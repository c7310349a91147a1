"""The durable learning queue: async workers over a ``JobStore`` — the embedded SQLite (WAL)
outbox (``job_store.py``) or, shared by replicas, Redis Streams (``redis_job_store.py``).

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
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from .config import QueueConfig
from .errors import InvalidIdentity, InvalidInput, MemoryCoreError, QueueStoreError
from .job_store import SqliteJobStore
from .jobs import Job, JobStore, owner_identity

log = logging.getLogger("memory_core.queue")
T = TypeVar("T")
# Bad input never gets better by retrying: such a job goes straight to the dead letters.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (InvalidIdentity, InvalidInput)


class Deferred(MemoryCoreError):
    """Raised by a handler to run the job again at ``until`` (epoch s) without counting a
    failure: a debounced job waits for the burst it covers to end. It keeps its place at the
    head of its scope."""

    def __init__(self, until: float) -> None:
        super().__init__(f"deferred until {until:.3f}")
        self.until = until


@dataclass(slots=True)
class QueueCounters:
    applied: int = 0
    retried: int = 0
    dead: int = 0
    lags: list[float] = field(default_factory=list)


# A handler returns the job's outcome (logged in ``job_results``), or None.
Handler = Callable[[Job], Awaitable[dict[str, Any] | None]]


def open_job_store(settings: QueueConfig, sqlite_path: str | Path) -> JobStore:
    """The configured backend: the SQLite file at ``sqlite_path``, or Redis."""
    if settings.backend == "redis":
        from .redis_job_store import RedisJobStore

        return RedisJobStore(
            settings.redis_url,
            prefix=settings.redis_prefix,
            max_in_flight=settings.max_in_flight,
            results_kept=settings.results_kept,
            results_max_age_s=settings.results_max_age_s,
        )
    return SqliteJobStore(
        sqlite_path,
        max_in_flight=settings.max_in_flight,
        results_kept=settings.results_kept,
        results_max_age_s=settings.results_max_age_s,
    )


class LearningQueue:
    """Async front of a ``JobStore``: enqueue from the request path, workers in the background.

    ``store`` is a backend, or the path of an SQLite queue file."""

    def __init__(
        self,
        store: JobStore | str | Path,
        handler: Handler | None = None,
        settings: QueueConfig | None = None,
    ) -> None:
        self.settings = settings or QueueConfig()
        self._store = (
            open_job_store(self.settings.model_copy(update={"backend": "sqlite"}), store)
            if isinstance(store, str | Path)
            else store
        )
        self._handler = handler
        self._owner = owner_identity()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="queue-db")
        self._wakeup = asyncio.Event()
        self._running: dict[str, tuple[Job, asyncio.Task[None]]] = {}
        self._dispatcher: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopping = False
        self.counters = QueueCounters()
        self._snapshot: dict[str, Any] = {"pending": 0, "leased": 0, "dead": 0, "oldest_age_s": 0.0}
        self._snapshot_at = 0.0

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
        await self._persist(
            self.settings.enqueue_retry_s, self._store.enqueue, job_id, scope_key, payload
        )
        self._wakeup.set()
        return job_id

    async def _persist(self, retry_s: float, fn: Callable[..., T], *args: Any) -> T:
        """Call the store, retrying for ``retry_s`` while it is unreachable (a restart)."""
        deadline = time.monotonic() + retry_s
        pause = 0.05
        while True:
            try:
                return await self._db(fn, *args)
            except QueueStoreError:
                if time.monotonic() + pause > deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)

    async def start(self) -> None:
        """Recover jobs of dead processes and start the dispatcher (needs a handler)."""
        if self._handler is None:
            raise RuntimeError("LearningQueue.start() needs a handler")
        try:
            recovered = await self._persist(
                self.settings.enqueue_retry_s, self._store.recover_dead_owners
            )
        except QueueStoreError as exc:  # unreachable now: the leases expire and are taken over
            log.error("queue recovery at start failed: %s", exc)
            recovered = 0
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
                except QueueStoreError as exc:
                    log.error("queue claim failed: %s", exc)
            for job in jobs:
                task = asyncio.get_running_loop().create_task(self._run(job))
                self._running[job.id] = (job, task)
            if self._stopping:
                break
            await self._refresh_snapshot()
            if jobs and len(self._running) < self.settings.concurrency:
                continue
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.settings.poll_s)
            except TimeoutError:
                pass

    async def _refresh_snapshot(self) -> None:
        if self._store.local or time.monotonic() - self._snapshot_at < 1.0:
            return
        self._snapshot_at = time.monotonic()
        try:
            self._snapshot = await self._db(self._store.stats)
        except QueueStoreError as exc:
            log.error("queue stats failed: %s", exc)

    async def _run(self, job: Job) -> None:
        assert self._handler is not None
        try:
            result = await self._handler(job)
        except asyncio.CancelledError:
            raise
        except Deferred as exc:
            await self._record(job, str(exc), exc.until)
        except Exception as exc:  # the queue's boundary: every failure is recorded on the job
            await self._record_failure(job, exc)
        else:
            try:
                # Until the lease ends, retry: past it, the job runs again (idempotent).
                await self._persist(
                    self.settings.lease_s / 2, self._store.complete, self._owner, job.id, result
                )
            except QueueStoreError as exc:
                log.error("job %s applied but not completed (it will run again): %s", job.id, exc)
                return
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
            await self._record(job, error, None)
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
        await self._record(job, error, time.time() + delay)
        self.counters.retried += 1

    async def _record(self, job: Job, error: str, retry_at: float | None) -> None:
        try:
            await self._persist(
                self.settings.lease_s / 2, self._store.fail, self._owner, job.id, error, retry_at
            )
        except QueueStoreError as exc:
            log.error("could not record the failure of job %s (it will run again): %s", job.id, exc)

    async def _renew_leases(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.settings.lease_s / 3)
            ids = list(self._running)
            try:
                await self._db(self._store.renew, self._owner, ids, self.settings.lease_s)
            except QueueStoreError as exc:
                log.error("lease renewal failed: %s", exc)

    def stats(self) -> dict[str, Any]:
        """Backend counts (a remote backend's as of the last refresh, at most ~1 s old: this
        runs on the event loop) plus this process's counters."""
        if self._store.local:
            try:
                self._snapshot = self._store.stats()
            except QueueStoreError as exc:
                log.error("queue stats failed: %s", exc)
        data: dict[str, Any] = {"backend": self._store.backend, **self._snapshot}
        data["running_here"] = len(self._running)
        data["applied"] = self.counters.applied
        data["retried"] = self.counters.retried
        return data

    async def fresh_stats(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """``stats()`` with the backend's counts read now (within ``timeout_s``; else the
        last ones, marked ``"stale": True``)."""
        try:
            self._snapshot = await asyncio.wait_for(self._db(self._store.stats), timeout_s)
        except (QueueStoreError, TimeoutError) as exc:
            log.error("queue stats failed: %r", exc)
            return {**self.stats(), "stale": True}
        return self.stats()

    async def results(
        self,
        limit: int = 20,
        *,
        scope_key: str | None = None,
        before: str | None = None,
        job_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """The learning log, newest first (``JobStore.results``), read off the event loop."""
        return await self._db(
            partial(self._store.results, limit, job_id, scope_key=scope_key, before=before)
        )

    async def dead_job(self, job_id: str) -> dict[str, Any] | None:
        return await self._db(self._store.dead_job, job_id)

    async def retry_dead(self, job_id: str) -> bool:
        """Requeue one dead job (its attempts start again); False if it is not dead."""
        retried = await self._db(self._store.retry_dead, job_id)
        if retried:
            self._wakeup.set()
        return bool(retried)

    async def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until no job is pending or leased (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = await self._db(self._store.stats)
            self._snapshot = stats
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
            except Exception:  # shutting down: a dispatcher crash is logged, never re-raised
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


__all__ = [
    "Deferred",
    "Handler",
    "Job",
    "JobStore",
    "LearningQueue",
    "QueueCounters",
    "SqliteJobStore",
    "open_job_store",
]
