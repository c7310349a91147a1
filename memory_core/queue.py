"""Durable learning queue: an SQLite (WAL) outbox in the data directory.

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
import os
import random
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from .config import QueueConfig
from .errors import InvalidIdentity, InvalidInput, MemoryCoreError

log = logging.getLogger("memory_core.queue")
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    scope_key TEXT NOT NULL,
    payload BLOB NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires REAL,
    last_error TEXT,
    enqueued_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_scope ON jobs(scope_key, status, seq);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
"""

PERMANENT_ERRORS: tuple[type[Exception], ...] = (InvalidIdentity, InvalidInput)


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    scope_key: str
    payload: dict[str, Any]
    attempts: int
    enqueued_at: float


@dataclass(slots=True)
class QueueCounters:
    applied: int = 0
    retried: int = 0
    dead: int = 0
    lags: list[float] = field(default_factory=list)


Handler = Callable[[Job], Awaitable[None]]


def owner_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobStore:
    """Synchronous SQLite access; every method is one short transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            str(self.path), timeout=30, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _tx(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return result

    def enqueue(self, job_id: str, scope_key: str, payload: dict[str, Any]) -> bool:
        """Store a job; False if that id was already enqueued (idempotent)."""
        blob = orjson.dumps(payload)
        now = time.time()

        def work(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO jobs (id, scope_key, payload, enqueued_at) "
                "VALUES (?, ?, ?, ?)",
                (job_id, scope_key, blob, now),
            )
            return cursor.rowcount == 1

        return self._tx(work)

    def claim(self, owner: str, limit: int, lease_s: float, busy: Sequence[str]) -> list[Job]:
        """Lease up to ``limit`` jobs, each the head of its scope, none of whose scope is busy."""
        now = time.time()

        def work(conn: sqlite3.Connection) -> list[Job]:
            rows = conn.execute(
                """
                SELECT j.seq, j.id, j.scope_key, j.payload, j.attempts, j.enqueued_at
                FROM jobs j
                WHERE j.status IN ('pending', 'leased')
                  AND j.seq = (SELECT MIN(k.seq) FROM jobs k
                               WHERE k.scope_key = j.scope_key
                                 AND k.status IN ('pending', 'leased'))
                  AND (j.status = 'pending' OR j.lease_expires < ?)
                  AND j.not_before <= ?
                ORDER BY j.seq
                LIMIT ?
                """,
                (now, now, limit + len(busy)),
            ).fetchall()
            jobs: list[Job] = []
            busy_set = set(busy)
            for seq, job_id, scope_key, payload, attempts, enqueued_at in rows:
                if scope_key in busy_set or len(jobs) >= limit:
                    continue
                conn.execute(
                    "UPDATE jobs SET status='leased', lease_owner=?, lease_expires=?, "
                    "attempts=attempts+1 WHERE seq=?",
                    (owner, now + lease_s, seq),
                )
                jobs.append(
                    Job(job_id, scope_key, orjson.loads(payload), attempts + 1, enqueued_at)
                )
            return jobs

        return self._tx(work)

    def renew(self, owner: str, job_ids: Sequence[str], lease_s: float) -> None:
        if not job_ids:
            return
        expires = time.time() + lease_s

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE jobs SET lease_expires=? WHERE id=? AND lease_owner=? AND status='leased'",
                [(expires, job_id, owner) for job_id in job_ids],
            )

        self._tx(work)

    def complete(self, owner: str, job_id: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM jobs WHERE id=? AND lease_owner=?", (job_id, owner))

        self._tx(work)

    def fail(self, owner: str, job_id: str, error: str, retry_at: float | None) -> None:
        """Back to pending with a delay, or to dead-letter when ``retry_at`` is None."""

        def work(conn: sqlite3.Connection) -> None:
            if retry_at is None:
                conn.execute(
                    "UPDATE jobs SET status='dead', last_error=?, finished_at=?, "
                    "lease_owner=NULL, lease_expires=NULL WHERE id=? AND lease_owner=?",
                    (error[:4000], time.time(), job_id, owner),
                )
            else:
                conn.execute(
                    "UPDATE jobs SET status='pending', last_error=?, not_before=?, "
                    "lease_owner=NULL, lease_expires=NULL WHERE id=? AND lease_owner=?",
                    (error[:4000], retry_at, job_id, owner),
                )

        self._tx(work)

    def release(self, owner: str, job_ids: Sequence[str]) -> None:
        """Give leased jobs back untouched (shutdown): the attempt does not count."""

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE jobs SET status='pending', attempts=MAX(attempts-1, 0), "
                "lease_owner=NULL, lease_expires=NULL WHERE id=? AND lease_owner=?",
                [(job_id, owner) for job_id in job_ids],
            )

        self._tx(work)

    def recover_dead_owners(self) -> int:
        """Release leases held by processes of this host that no longer exist."""
        host = socket.gethostname()

        def work(conn: sqlite3.Connection) -> int:
            owners = [
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT lease_owner FROM jobs WHERE status='leased'"
                )
            ]
            released = 0
            for owner in owners:
                parts = (owner or "").split(":")
                if len(parts) == 3 and parts[0] == host and parts[1].isdigit():
                    if not _pid_alive(int(parts[1])):
                        cursor = conn.execute(
                            "UPDATE jobs SET status='pending', lease_owner=NULL, "
                            "lease_expires=NULL WHERE lease_owner=? AND status='leased'",
                            (owner,),
                        )
                        released += cursor.rowcount
            return released

        return self._tx(work)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(
                self._conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
            )
            oldest = self._conn.execute(
                "SELECT MIN(enqueued_at) FROM jobs WHERE status IN ('pending','leased')"
            ).fetchone()[0]
        return {
            "pending": int(counts.get("pending", 0)),
            "leased": int(counts.get("leased", 0)),
            "dead": int(counts.get("dead", 0)),
            "oldest_age_s": round(time.time() - oldest, 3) if oldest else 0.0,
        }

    def dead_jobs(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, scope_key, attempts, last_error, enqueued_at, finished_at "
                "FROM jobs WHERE status='dead' ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        keys = ("id", "scope_key", "attempts", "last_error", "enqueued_at", "finished_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def retry_dead(self, job_id: str | None = None) -> int:
        def work(conn: sqlite3.Connection) -> int:
            sql = "UPDATE jobs SET status='pending', attempts=0, not_before=0 WHERE status='dead'"
            args: tuple[Any, ...] = ()
            if job_id is not None:
                sql += " AND id=?"
                args = (job_id,)
            return conn.execute(sql, args).rowcount

        return self._tx(work)

    def purge_dead(self) -> int:
        return self._tx(lambda conn: conn.execute("DELETE FROM jobs WHERE status='dead'").rowcount)


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
            await self._handler(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the queue's boundary: every failure is recorded on the job
            await self._record_failure(job, exc)
        else:
            await self._db(self._store.complete, self._owner, job.id)
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
