"""Learning-queue jobs and the ``JobStore`` protocol every queue backend implements
(``job_store.py``: the embedded SQLite one; ``redis_job_store.py``: the shared one)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# The learning log keeps the outcomes of this many most recent finished jobs (by default:
# ``queue.results_kept``, and ``queue.results_max_age_s`` bounds their age).
RESULTS_KEPT = 10_000
# At most this many log entries are dropped by one write (a lowered retention catches up).
TRIM_BATCH = 1000
KIND_CHARS = 32


# The fields of a dead letter, as ``dead_jobs()`` returns them.
DEAD_KEYS = ("id", "scope_key", "attempts", "last_error", "enqueued_at", "finished_at")


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    scope_key: str
    payload: dict[str, Any]
    attempts: int
    enqueued_at: float


def job_kind(payload: dict[str, Any]) -> str:
    """What a job does, as its payload's ``kind`` says ("" for a learning job, the first
    kind; "export"...): the learning log shows it."""
    kind = payload.get("kind")
    return kind[:KIND_CHARS] if isinstance(kind, str) else ""


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


def is_dead_local_owner(owner: str, host: str) -> bool:
    """True for an ``owner_identity()`` of ``host`` whose process no longer exists."""
    parts = owner.split(":")
    return (
        len(parts) == 3
        and parts[0] == host
        and parts[1].isdigit()
        and not _pid_alive(int(parts[1]))
    )


class JobStore(Protocol):
    """What ``LearningQueue`` needs from a queue backend. Synchronous: the queue calls it from
    its one I/O thread. Times are epoch seconds; ``owner`` is an ``owner_identity()``.
    Backend failures (I/O, connection) raise ``QueueStoreError``."""

    backend: str  # "sqlite", "redis": the metrics' label
    local: bool  # reads are cheap local file reads, safe to make on the event loop

    def enqueue(self, job_id: str, scope_key: str, payload: dict[str, Any]) -> bool: ...
    def claim(self, owner: str, limit: int, lease_s: float, busy: Sequence[str]) -> list[Job]: ...
    def renew(self, owner: str, job_ids: Sequence[str], lease_s: float) -> None: ...
    def complete(self, owner: str, job_id: str, result: dict[str, Any] | None = None) -> None: ...
    def fail(self, owner: str, job_id: str, error: str, retry_at: float | None) -> None: ...
    def release(self, owner: str, job_ids: Sequence[str]) -> None: ...
    def recover_dead_owners(self) -> int: ...
    def stats(self) -> dict[str, Any]: ...
    def dead_jobs(self, limit: int = 100) -> list[dict[str, Any]]: ...
    def results(
        self,
        limit: int = 20,
        job_id: str | None = None,
        *,
        scope_key: str | None = None,
        before: str | None = None,
    ) -> list[dict[str, Any]]: ...
    def dead_job(self, job_id: str) -> dict[str, Any] | None: ...
    def retry_dead(self, job_id: str | None = None) -> int: ...
    def purge_dead(self) -> int: ...
    def close(self) -> None: ...


__all__ = [
    "DEAD_KEYS",
    "RESULTS_KEPT",
    "TRIM_BATCH",
    "Job",
    "JobStore",
    "is_dead_local_owner",
    "job_kind",
    "owner_identity",
]
