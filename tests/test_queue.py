"""memory_core.queue: the JobStore backends (the SQLite outbox, Redis Streams on a real
redis-server) and the async workers; each test runs on both backends unless it reads the
SQLite file itself."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from memory_core import queue as queue_module
from memory_core.config import QueueConfig
from memory_core.errors import ExtractionError, InvalidIdentity, InvalidInput
from memory_core.queue import Job, JobStore, LearningQueue, SqliteJobStore
from memory_core.redis_job_store import RedisJobStore

FAST = dict(backoff_base_s=0.01, backoff_max_s=0.05, poll_s=0.02, shutdown_grace_s=1.0)


def settings(**overrides: Any) -> QueueConfig:
    return QueueConfig(**{**FAST, **overrides})


def dead_pid() -> int:
    for pid in range(999_999, 900_000, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise AssertionError("no free pid found")


def row_of(path: Path, job_id: str) -> dict[str, Any] | None:
    conn = sqlite3.connect(path)
    try:
        conn.row_factory = sqlite3.Row
        found = conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return dict(found) if found else None
    finally:
        conn.close()


def job_row(store: JobStore, job_id: str) -> dict[str, Any] | None:
    """A job's stored state on either backend: status, attempts, lease_owner, last_error."""
    if isinstance(store, SqliteJobStore):
        return row_of(store.path, job_id)
    assert isinstance(store, RedisJobStore)
    raw = store._redis.hgetall(store._key(f"job:{job_id}"))
    if not raw:
        return None
    row = {key.decode(): value.decode() for key, value in raw.items()}
    return {
        "status": row["status"],
        "attempts": int(row["attempts"]),
        "lease_owner": row.get("owner"),
        "last_error": row.get("last_error"),
    }


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "queue.sqlite3"


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, db_path: Path) -> Any:
    """Opens another handle on this test's queue (same file / same Redis prefix)."""
    opened: list[JobStore] = []

    def make(max_in_flight: int | None = None) -> JobStore:
        job_store: JobStore
        if request.param == "redis":
            server = request.getfixturevalue("redis_server")
            prefix = request.getfixturevalue("redis_prefix")
            job_store = RedisJobStore(server.url, prefix=prefix, max_in_flight=max_in_flight)
        else:
            job_store = SqliteJobStore(db_path, max_in_flight=max_in_flight)
        opened.append(job_store)
        return job_store

    yield make
    for job_store in opened:
        job_store.close()


@pytest.fixture
def store(make_store: Any) -> JobStore:
    return make_store()  # type: ignore[no-any-return]


@pytest.fixture
def sqlite_store(db_path: Path) -> Any:
    job_store = SqliteJobStore(db_path)
    yield job_store
    job_store.close()


# ---- JobStore ----------------------------------------------------------------------------


def test_enqueue_claim_complete(store: JobStore) -> None:
    assert store.enqueue("j1", "user:u1", {"text": "hello", "n": [1, 2]}) is True
    assert store.stats()["pending"] == 1

    jobs = store.claim("owner-a", 10, 60.0, [])
    assert len(jobs) == 1
    job = jobs[0]
    assert (job.id, job.scope_key, job.payload, job.attempts) == (
        "j1",
        "user:u1",
        {"text": "hello", "n": [1, 2]},
        1,
    )
    assert abs(job.enqueued_at - time.time()) < 5
    stats = store.stats()
    assert (stats["pending"], stats["leased"]) == (0, 1)
    assert store.claim("owner-b", 10, 60.0, []) == []  # leased, lease not expired

    store.complete("owner-b", "j1")  # not the owner: nothing happens
    assert store.stats()["leased"] == 1
    store.complete("owner-a", "j1")
    assert store.stats() == {"pending": 0, "leased": 0, "dead": 0, "oldest_age_s": 0.0}
    assert job_row(store, "j1") is None


def test_finished_jobs_are_logged_with_their_outcome(db_path: Path) -> None:
    store = SqliteJobStore(db_path, results_kept=3)
    try:
        for n in range(5):
            store.enqueue(f"j{n}", f"s{n}", {})
        store.claim("o", 10, 60.0, [])
        store.complete("o", "j0", {"status": "nothing_learned", "rejected": {"placeholder": 2}})
        store.complete("o", "j1", {"status": "applied", "applied": {"ADD": 1}})
        store.complete("other-owner", "j2", {"status": "applied"})  # not its job: no row
        store.fail("o", "j3", "ExtractionError: provider down", None)
        store.fail("o", "j4", "ExtractionError: retry me", time.time() + 60)  # not finished
        rows = store.results()
        assert [(r["id"], r["status"], r["error"]) for r in rows] == [
            ("j3", "dead", "ExtractionError: provider down"),
            ("j1", "applied", None),
            ("j0", "nothing_learned", None),
        ]
        assert rows[2]["result"] == {"status": "nothing_learned", "rejected": {"placeholder": 2}}
        assert rows[0]["result"] is None and rows[0]["attempts"] == 1
        assert rows[0]["finished_at"] >= rows[0]["enqueued_at"]
        assert [r["id"] for r in store.results(job_id="j1")] == ["j1"]
        store.claim("o", 10, 60.0, [])
        store.complete("o", "j2", {"status": "applied"})
        assert [r["id"] for r in store.results()] == ["j2", "j3", "j1"]  # the newest 3 kept
    finally:
        store.close()


def test_enqueue_is_idempotent_by_job_id(store: JobStore) -> None:
    assert store.enqueue("j1", "s", {"v": 1}) is True
    assert store.enqueue("j1", "s", {"v": 2}) is False
    jobs = store.claim("o", 10, 60.0, [])
    assert [j.payload for j in jobs] == [{"v": 1}]


def test_claim_takes_only_the_head_of_each_scope(store: JobStore) -> None:
    for job_id, scope in [("a1", "A"), ("a2", "A"), ("b1", "B"), ("a3", "A"), ("c1", "C")]:
        store.enqueue(job_id, scope, {})
    assert [j.id for j in store.claim("o", 10, 60.0, ["C"])] == ["a1", "b1"]
    # the heads are leased: their scopes are blocked until they finish
    assert [j.id for j in store.claim("o", 10, 60.0, [])] == ["c1"]
    store.complete("o", "a1")
    assert [j.id for j in store.claim("o", 10, 60.0, [])] == ["a2"]


def test_claim_respects_limit_and_order(store: JobStore) -> None:
    for n in range(5):
        store.enqueue(f"j{n}", f"s{n}", {})
    assert [j.id for j in store.claim("o", 2, 60.0, [])] == ["j0", "j1"]
    assert [j.id for j in store.claim("o", 2, 60.0, ["s2"])] == ["j3", "j4"]


def test_expired_lease_can_be_taken_over(store: JobStore) -> None:
    store.enqueue("j1", "s", {})
    assert [j.attempts for j in store.claim("dead-worker", 1, -1.0, [])] == [1]
    taken = store.claim("live-worker", 1, 60.0, [])
    assert [(j.id, j.attempts) for j in taken] == [("j1", 2)]
    store.complete("dead-worker", "j1")  # the old owner lost the job
    assert store.stats()["leased"] == 1
    store.complete("live-worker", "j1")
    assert store.stats()["leased"] == 0


def test_renew_extends_only_own_leases(sqlite_store: JobStore, db_path: Path) -> None:
    store = sqlite_store
    store.enqueue("j1", "s", {})
    store.claim("o", 1, 1.0, [])
    before = row_of(db_path, "j1")["lease_expires"]  # type: ignore[index]
    store.renew("other", ["j1"], 100.0)
    assert row_of(db_path, "j1")["lease_expires"] == before  # type: ignore[index]
    store.renew("o", ["j1"], 100.0)
    assert row_of(db_path, "j1")["lease_expires"] > before + 50  # type: ignore[index]


def test_fail_with_retry_delays_the_job_and_blocks_its_scope(store: JobStore) -> None:
    store.enqueue("j1", "s", {})
    store.enqueue("j2", "s", {})
    store.claim("o", 1, 60.0, [])
    store.fail("o", "j1", "ExtractionError: bad json", time.time() + 60)
    assert store.stats()["pending"] == 2
    # j1 waits for its backoff and j2 must not overtake it
    assert store.claim("o", 10, 60.0, []) == []
    store.enqueue("k1", "other", {})
    assert [j.id for j in store.claim("o", 10, 60.0, [])] == ["k1"]


def test_fail_with_past_retry_is_claimable_again(store: JobStore) -> None:
    store.enqueue("j1", "s", {})
    store.claim("o", 1, 60.0, [])
    store.fail("o", "j1", "boom", time.time() - 1)
    assert job_row(store, "j1")["last_error"] == "boom"  # type: ignore[index]
    assert [(j.id, j.attempts) for j in store.claim("o", 1, 60.0, [])] == [("j1", 2)]


def test_dead_letter_keeps_error_and_unblocks_scope(store: JobStore) -> None:
    store.enqueue("j1", "s", {})
    store.enqueue("j2", "s", {})
    store.claim("o", 1, 60.0, [])
    store.fail("o", "j1", "x" * 5000, None)
    dead = store.dead_jobs()
    assert [(d["id"], d["scope_key"], d["attempts"]) for d in dead] == [("j1", "s", 1)]
    assert dead[0]["last_error"] == "x" * 4000  # truncated, kept
    assert dead[0]["finished_at"] is not None
    assert store.stats()["dead"] == 1
    assert [j.id for j in store.claim("o", 10, 60.0, [])] == ["j2"]


def test_retry_dead_and_purge_dead(store: JobStore) -> None:
    for job_id in ("j1", "j2", "j3"):
        store.enqueue(job_id, job_id, {})
    for job in store.claim("o", 10, 60.0, []):
        store.fail("o", job.id, "bad", None)
    assert store.stats()["dead"] == 3
    assert store.retry_dead("j2") == 1
    assert store.retry_dead("nope") == 0
    assert [(j.id, j.attempts) for j in store.claim("o", 10, 60.0, [])] == [("j2", 1)]
    assert store.retry_dead() == 2
    assert store.stats()["pending"] == 2
    for job in store.claim("o", 10, 60.0, []):
        store.fail("o", job.id, "bad again", None)
    assert store.purge_dead() == 2
    assert store.dead_jobs() == []
    assert store.stats()["leased"] == 1  # j2 is untouched


def test_max_in_flight_bounds_all_processes_together(make_store: Any) -> None:
    first, second = make_store(max_in_flight=2), make_store(max_in_flight=2)
    for n in range(5):
        first.enqueue(f"j{n}", f"scope-{n}", {})
    assert len(first.claim("a", 10, 60.0, [])) == 2
    assert second.claim("b", 10, 60.0, []) == []  # the cap is shared, not per process
    first.complete("a", "j0")
    assert [job.id for job in second.claim("b", 10, 60.0, [])] == ["j2"]
    assert first.stats()["leased"] == 2


def test_release_does_not_count_the_attempt(store: JobStore) -> None:
    store.enqueue("j1", "s", {})
    store.claim("o", 1, 60.0, [])
    store.release("someone-else", ["j1"])
    assert store.stats()["leased"] == 1
    store.release("o", ["j1"])
    assert store.stats()["pending"] == 1
    assert [j.attempts for j in store.claim("o", 1, 60.0, [])] == [1]


def test_recover_dead_owners(store: JobStore) -> None:
    host = socket.gethostname()
    dead_owner = f"{host}:{dead_pid()}:x"
    live_owner = f"{host}:{os.getpid()}:y"
    remote_owner = f"some-other-host:{dead_pid()}:z"
    for job_id, owner in [("d", dead_owner), ("l", live_owner), ("r", remote_owner)]:
        store.enqueue(job_id, job_id, {})
        assert [j.id for j in store.claim(owner, 1, 3600.0, [])] == [job_id]
    assert store.recover_dead_owners() == 1
    stats = store.stats()
    assert (stats["pending"], stats["leased"]) == (1, 2)
    assert [j.id for j in store.claim("new", 10, 60.0, [])] == ["d"]
    assert store.recover_dead_owners() == 0


def test_stats_oldest_age(store: JobStore) -> None:
    store.enqueue("j1", "s", {})
    time.sleep(0.05)
    assert store.stats()["oldest_age_s"] >= 0.04


def test_enqueued_job_survives_kill_9(db_path: Path) -> None:
    """Enqueue is one committed transaction: a SIGKILL right after it loses nothing."""
    package = Path(queue_module.__file__).parent
    script = (
        "import os, signal, sys, types\n"
        # load memory_core.queue without the package __init__ (lancedb etc.: slow to import)
        f"pkg = types.ModuleType('memory_core'); pkg.__path__ = [{str(package)!r}]\n"
        "sys.modules['memory_core'] = pkg\n"
        "from memory_core.queue import SqliteJobStore\n"
        "s = SqliteJobStore(sys.argv[1])\n"
        "assert s.enqueue('survivor', 'user:u1', {'text': 'remember me'})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(db_path)], timeout=60)
    assert proc.returncode == -9
    reopened = SqliteJobStore(db_path)
    try:
        jobs = reopened.claim("o", 10, 60.0, [])
        assert [(j.id, j.payload) for j in jobs] == [("survivor", {"text": "remember me"})]
    finally:
        reopened.close()


# ---- LearningQueue -----------------------------------------------------------------------


class Recorder:
    """A handler that records start/end per job and can be told to fail."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.events: list[tuple[str, str, float, float]] = []
        self.calls: dict[str, int] = defaultdict(int)
        self.attempts: dict[str, list[int]] = defaultdict(list)
        self.active = 0
        self.max_active = 0
        self.fail_with: dict[str, list[Exception]] = {}

    async def __call__(self, job: Job) -> None:
        self.calls[job.id] += 1
        self.attempts[job.id].append(job.attempts)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        start = time.monotonic()
        try:
            await asyncio.sleep(self.delay)
            errors = self.fail_with.get(job.id)
            if errors:
                raise errors.pop(0)
        finally:
            self.active -= 1
            self.events.append((job.scope_key, job.id, start, time.monotonic()))


async def run_until_idle(queue: LearningQueue, timeout: float = 20.0) -> None:
    assert await queue.wait_idle(timeout=timeout), queue.stats()
    # a job's handler may have finished while its completion is still being recorded
    for _ in range(100):
        if not queue.stats()["running_here"]:
            return
        await asyncio.sleep(0.01)


async def test_start_needs_a_handler(make_store: Any) -> None:
    queue = LearningQueue(make_store())
    with pytest.raises(RuntimeError, match="handler"):
        await queue.start()
    await queue.stop()


async def test_queue_runs_jobs_and_enqueue_is_idempotent(make_store: Any) -> None:
    handler = Recorder()
    queue = LearningQueue(make_store(), handler, settings())
    await queue.start()
    try:
        first = await queue.enqueue("user:u1", {"n": 1}, job_id="job-1")
        again = await queue.enqueue("user:u1", {"n": 2}, job_id="job-1")
        generated = await queue.enqueue("user:u1", {"n": 3})
        assert first == again == "job-1"
        assert generated != "job-1" and len(generated) == 32
        await run_until_idle(queue)
        assert dict(handler.calls) == {"job-1": 1, generated: 1}
        assert queue.counters.applied == 2
        assert queue.stats()["applied"] == 2
        assert len(queue.counters.lags) == 2 and all(lag >= 0 for lag in queue.counters.lags)
        # a completed job id may be enqueued again later (it was deleted on success)
        await queue.enqueue("user:u1", {"n": 4}, job_id="job-1")
        await run_until_idle(queue)
        assert handler.calls["job-1"] == 2
    finally:
        await queue.stop()


async def test_per_scope_fifo_under_concurrency(make_store: Any) -> None:
    handler = Recorder(delay=0.01)
    queue = LearningQueue(make_store(), handler, settings(concurrency=3))
    order: dict[str, list[str]] = defaultdict(list)
    # enqueue before start so the dispatcher sees everything at once
    for n in range(8):
        for scope in ("user:a", "user:b", "user:c", "user:d", "agent:x"):
            job_id = await queue.enqueue(scope, {"n": n}, job_id=f"{scope}-{n}")
            order[scope].append(job_id)
    await queue.start()
    try:
        await run_until_idle(queue)
    finally:
        await queue.stop()
    assert len(handler.events) == 40
    by_scope: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    for scope, job_id, start, end in sorted(handler.events, key=lambda e: e[2]):
        by_scope[scope].append((job_id, start, end))
    for scope, runs in by_scope.items():
        assert [job_id for job_id, _, _ in runs] == order[scope], scope
        for (_, _, end), (_, next_start, _) in zip(runs, runs[1:], strict=False):
            assert next_start >= end, f"two jobs of {scope} overlapped"
    assert 1 < handler.max_active <= 3


async def test_jobs_enqueued_while_running_keep_scope_order(make_store: Any) -> None:
    handler = Recorder(delay=0.005)
    queue = LearningQueue(make_store(), handler, settings(concurrency=4))
    await queue.start()
    try:
        ids = []
        for n in range(15):
            ids.append(await queue.enqueue("user:u1", {"n": n}, job_id=f"j{n:02d}"))
            await queue.enqueue(f"user:other{n % 3}", {"n": n})
            if n % 4 == 0:
                await asyncio.sleep(0.01)
        await run_until_idle(queue)
    finally:
        await queue.stop()
    mine = [e for e in sorted(handler.events, key=lambda e: e[2]) if e[0] == "user:u1"]
    assert [e[1] for e in mine] == ids
    for before, after in zip(mine, mine[1:], strict=False):
        assert after[2] >= before[3]


async def test_retries_with_backoff_then_success(make_store: Any) -> None:
    handler = Recorder()
    handler.fail_with["j1"] = [ExtractionError("bad json"), RuntimeError("socket closed")]
    queue = LearningQueue(make_store(), handler, settings(backoff_base_s=0.05, backoff_max_s=1.0))
    await queue.start()
    try:
        await queue.enqueue("user:u1", {}, job_id="j1")
        await run_until_idle(queue)
    finally:
        await queue.stop()
    assert handler.attempts["j1"] == [1, 2, 3]
    assert queue.counters.retried == 2
    assert queue.counters.applied == 1
    assert queue.counters.dead == 0
    starts = [start for _, job_id, start, _ in handler.events if job_id == "j1"]
    ends = [end for _, job_id, _, end in handler.events if job_id == "j1"]
    # backoff: base * 2**(attempt-1) * jitter in [0.5, 1]
    assert starts[1] - ends[0] >= 0.05 * 0.5 - 0.005
    assert starts[2] - ends[1] >= 0.10 * 0.5 - 0.005
    assert job_row(make_store(), "j1") is None


async def test_dead_letter_after_max_attempts(make_store: Any) -> None:
    handler = Recorder()
    handler.fail_with["bad"] = [RuntimeError(f"boom {n}") for n in range(10)]
    queue = LearningQueue(make_store(), handler, settings(max_attempts=3))
    await queue.start()
    try:
        await queue.enqueue("user:u1", {}, job_id="bad")
        await queue.enqueue("user:u1", {}, job_id="next")  # same scope, queued behind
        await run_until_idle(queue)
        assert handler.calls["bad"] == 3
        assert handler.calls["next"] == 1  # a dead job does not block its scope forever
        dead = queue.store.dead_jobs()
        assert [(d["id"], d["attempts"]) for d in dead] == [("bad", 3)]
        assert dead[0]["last_error"] == "RuntimeError: boom 2"
        assert queue.counters.dead == 1
        assert queue.counters.retried == 2
        assert queue.stats()["dead"] == 1
    finally:
        await queue.stop()


@pytest.mark.parametrize(
    "error", [InvalidInput("metadata may not set user_id"), InvalidIdentity("bad id")]
)
async def test_permanent_errors_go_dead_immediately(make_store: Any, error: Exception) -> None:
    handler = Recorder()
    handler.fail_with["j1"] = [error]
    queue = LearningQueue(make_store(), handler, settings(max_attempts=6))
    await queue.start()
    try:
        await queue.enqueue("user:u1", {}, job_id="j1")
        await run_until_idle(queue)
        assert handler.calls["j1"] == 1
        dead = queue.store.dead_jobs()
        assert [d["id"] for d in dead] == ["j1"]
        assert dead[0]["last_error"] == f"{type(error).__name__}: {error}"
        assert queue.counters.retried == 0
    finally:
        await queue.stop()


async def test_retry_dead_runs_the_job_again(make_store: Any) -> None:
    handler = Recorder()
    handler.fail_with["j1"] = [InvalidInput("nope")]
    queue = LearningQueue(make_store(), handler, settings())
    await queue.start()
    try:
        await queue.enqueue("user:u1", {}, job_id="j1")
        await run_until_idle(queue)
        assert queue.stats()["dead"] == 1
        assert queue.store.retry_dead("j1") == 1
        await queue.enqueue("user:u1", {}, job_id="wake")  # wakes the dispatcher
        await run_until_idle(queue)
        assert handler.attempts["j1"] == [1, 1]  # attempts were reset
        assert queue.stats()["dead"] == 0
        assert queue.store.purge_dead() == 0
    finally:
        await queue.stop()


async def test_stop_releases_running_jobs_for_the_next_start(make_store: Any) -> None:
    started = asyncio.Event()
    cancelled: list[str] = []

    async def stuck(job: Job) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(job.id)
            raise

    queue = LearningQueue(make_store(), stuck, settings())
    await queue.start()
    await queue.enqueue("user:u1", {"text": "x"}, job_id="j1")
    await queue.enqueue("user:u1", {"text": "y"}, job_id="j2")
    await asyncio.wait_for(started.wait(), 5)
    await queue.stop(grace_s=0.05)
    await asyncio.sleep(0)  # let the cancellation reach the handler
    assert cancelled == ["j1"]
    row = job_row(make_store(), "j1")
    assert row is not None
    assert (row["status"], row["attempts"], row["lease_owner"]) == ("pending", 0, None)

    handler = Recorder()
    second = LearningQueue(make_store(), handler, settings())
    await second.start()
    try:
        await run_until_idle(second)
    finally:
        await second.stop()
    assert handler.attempts == {"j1": [1], "j2": [1]}
    assert [e[1] for e in handler.events] == ["j1", "j2"]


async def test_stop_waits_for_jobs_within_the_grace_period(make_store: Any) -> None:
    handler = Recorder(delay=0.1)
    queue = LearningQueue(make_store(), handler, settings())
    await queue.start()
    await queue.enqueue("user:u1", {}, job_id="j1")
    for _ in range(200):
        if handler.calls:
            break
        await asyncio.sleep(0.005)
    await queue.stop(grace_s=5)
    assert job_row(make_store(), "j1") is None  # finished and completed, not released
    assert queue.counters.applied == 1


async def test_stop_while_claiming_leaves_no_orphan_lease(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopping while the dispatcher is inside a claim must not strand the claimed jobs."""
    original = SqliteJobStore.claim
    claiming = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow_claim(self: SqliteJobStore, *args: Any) -> list[Job]:
        loop.call_soon_threadsafe(claiming.set)
        time.sleep(0.2)
        return original(self, *args)

    handler = Recorder()
    queue = LearningQueue(db_path, handler, settings(poll_s=5.0))
    await queue.enqueue("user:u1", {}, job_id="j1")
    monkeypatch.setattr(SqliteJobStore, "claim", slow_claim)
    await queue.start()
    await asyncio.wait_for(claiming.wait(), 5)
    await queue.stop(grace_s=2)
    monkeypatch.setattr(SqliteJobStore, "claim", original)
    row = row_of(db_path, "j1")
    # either it ran to completion, or it is pending again for the next start
    if row is not None:
        assert (row["status"], row["lease_owner"]) == ("pending", None), row


async def test_start_recovers_jobs_of_a_dead_process(make_store: Any) -> None:
    store = make_store()
    store.enqueue("orphan", "user:u1", {"text": "hi"})
    owner = f"{socket.gethostname()}:{dead_pid()}:x"
    assert [j.id for j in store.claim(owner, 1, 3600.0, [])] == ["orphan"]
    store.close()

    handler = Recorder()
    queue = LearningQueue(make_store(), handler, settings())
    await queue.start()
    try:
        await run_until_idle(queue, timeout=5)
    finally:
        await queue.stop()
    assert handler.calls == {"orphan": 1}


async def test_two_queues_on_one_file_never_run_the_same_job(make_store: Any) -> None:
    handler_a = Recorder(delay=0.002)
    handler_b = Recorder(delay=0.002)
    first = LearningQueue(make_store(), handler_a, settings(concurrency=3))
    second = LearningQueue(make_store(), handler_b, settings(concurrency=3))
    ids = []
    for n in range(60):
        ids.append(await first.enqueue(f"user:u{n % 6}", {"n": n}, job_id=f"job-{n:02d}"))
    await first.start()
    await second.start()
    try:
        # also enqueue through the second instance while both run
        for n in range(60, 80):
            ids.append(await second.enqueue(f"user:u{n % 6}", {"n": n}, job_id=f"job-{n:02d}"))
        await run_until_idle(first)
        await run_until_idle(second)
    finally:
        await first.stop()
        await second.stop()
    calls: dict[str, int] = defaultdict(int)
    for handler in (handler_a, handler_b):
        for job_id, count in handler.calls.items():
            calls[job_id] += count
    assert sorted(calls) == sorted(ids)
    assert set(calls.values()) == {1}
    assert handler_a.calls and handler_b.calls  # both did work
    # FIFO per scope holds across processes sharing the file
    events = sorted(handler_a.events + handler_b.events, key=lambda e: e[2])
    for scope in {e[0] for e in events}:
        runs = [e for e in events if e[0] == scope]
        assert [e[1] for e in runs] == sorted(e[1] for e in runs)
        for before, after in zip(runs, runs[1:], strict=False):
            assert after[2] >= before[3], f"two jobs of {scope} overlapped"


def test_finished_jobs_leave_their_outcome_on_both_backends(store: JobStore) -> None:
    for job_id in ("ok", "empty", "bad"):
        store.enqueue(job_id, f"user:{job_id}", {"n": 1})
    jobs = {job.id: job for job in store.claim("o", 10, 60.0, [])}
    assert set(jobs) == {"ok", "empty", "bad"}
    store.complete("o", "ok", {"status": "applied", "applied": {"ADD": 2}})
    store.complete("o", "empty", None)
    store.fail("o", "bad", "ExtractionError: no JSON", None)
    rows = store.results(limit=10)
    assert [r["id"] for r in rows] == ["bad", "empty", "ok"]  # newest first
    by_id = {r["id"]: r for r in rows}
    assert by_id["ok"]["status"] == "applied" and by_id["ok"]["result"]["applied"] == {"ADD": 2}
    assert by_id["empty"]["status"] == "applied" and by_id["empty"]["result"] is None
    assert by_id["bad"]["status"] == "dead" and by_id["bad"]["error"] == "ExtractionError: no JSON"
    assert by_id["ok"]["scope_key"] == "user:ok" and by_id["ok"]["attempts"] == 1
    assert by_id["ok"]["finished_at"] >= by_id["ok"]["enqueued_at"] > 0
    assert store.results(limit=1) == rows[:1]
    assert store.results(job_id="ok") == [by_id["ok"]]
    assert store.results(job_id="absent") == []
