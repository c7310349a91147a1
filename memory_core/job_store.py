"""The learning queue's embedded durable half: an SQLite (WAL) outbox of jobs in the data
directory (``redis_job_store.py`` is the shared one; ``jobs.py`` the protocol of both).

Enqueue is one committed transaction (a job survives ``kill -9``); claims take the oldest job
of each idle scope under a lease; a dead owner's leases are handed back; failures are
rescheduled or dead-lettered with their error. ``LearningQueue`` (``queue.py``) runs it.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from .errors import QueueStoreError
from .job_store_schema import ADDED_COLUMNS, RESULT_KEYS, SCHEMA, parse_cursor
from .jobs import DEAD_KEYS, RESULTS_KEPT, TRIM_BATCH, Job, is_dead_local_owner, job_kind

T = TypeVar("T")


class SqliteJobStore:
    """Synchronous SQLite access; every method is one short transaction.

    ``max_in_flight`` caps the leased jobs of all processes sharing the file (None: only each
    process's own ``concurrency`` bounds them)."""

    backend = "sqlite"
    local = True

    def __init__(
        self,
        path: str | Path,
        *,
        max_in_flight: int | None = None,
        results_kept: int = RESULTS_KEPT,
        results_max_age_s: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.results_kept = results_kept
        self.results_max_age_s = results_max_age_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._max_in_flight = max_in_flight
        self._conn = sqlite3.connect(
            str(self.path), timeout=30, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(SCHEMA)
            for table, columns in ADDED_COLUMNS.items():
                present = {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}
                for name, declaration in columns.items():
                    if name not in present:
                        self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _tx(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(self._conn)
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise QueueStoreError(f"queue database {self.path}: {exc}") from exc
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
            room = limit
            if self._max_in_flight is not None:
                in_flight = conn.execute(
                    "SELECT COUNT(*) FROM jobs WHERE status='leased' AND lease_expires >= ?",
                    (now,),
                ).fetchone()[0]
                room = min(limit, self._max_in_flight - int(in_flight))
            if room <= 0:
                return []
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
                (now, now, room + len(busy)),
            ).fetchall()
            jobs: list[Job] = []
            busy_set = set(busy)
            for seq, job_id, scope_key, payload, attempts, enqueued_at in rows:
                if scope_key in busy_set or len(jobs) >= room:
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

    def complete(self, owner: str, job_id: str, result: dict[str, Any] | None = None) -> None:
        """Remove a finished job, logging its outcome (``result``) in ``job_results``."""

        def work(conn: sqlite3.Connection) -> None:
            status = str((result or {}).get("status") or "applied")
            self._log_outcome(conn, owner, job_id, status, result, None)
            conn.execute("DELETE FROM jobs WHERE id=? AND lease_owner=?", (job_id, owner))

        self._tx(work)

    def _log_outcome(
        self,
        conn: sqlite3.Connection,
        owner: str,
        job_id: str,
        status: str,
        result: dict[str, Any] | None,
        error: str | None,
    ) -> None:
        """One ``job_results`` row for a job this owner holds (``error``: a dead job's; a
        finished one keeps the error of its last failed attempt, if any); then the retention:
        the oldest rows past ``results_kept`` and those older than ``results_max_age_s`` go."""
        held = conn.execute(
            "SELECT payload FROM jobs WHERE id=? AND lease_owner=?", (job_id, owner)
        ).fetchone()
        if held is None:
            return
        now = time.time()
        conn.execute(
            "INSERT INTO job_results (id, scope_key, kind, status, attempts, enqueued_at, "
            "finished_at, result, error) SELECT id, scope_key, ?, ?, attempts, enqueued_at, ?, ?, "
            "COALESCE(?, last_error) FROM jobs WHERE id=? AND lease_owner=?",
            (
                job_kind(orjson.loads(held[0])),
                status,
                now,
                orjson.dumps(result) if result is not None else None,
                error,
                job_id,
                owner,
            ),
        )
        conn.execute(
            "DELETE FROM job_results WHERE seq <= (SELECT MAX(seq) FROM job_results) - ?",
            (self.results_kept,),
        )
        if self.results_max_age_s is not None:
            # Rows are appended in time order: only the oldest few can be past the age.
            conn.execute(
                "DELETE FROM job_results WHERE seq IN (SELECT seq FROM job_results ORDER BY seq "
                "LIMIT ?) AND finished_at < ?",
                (TRIM_BATCH, now - self.results_max_age_s),
            )

    def results(
        self,
        limit: int = 20,
        job_id: str | None = None,
        *,
        scope_key: str | None = None,
        before: str | None = None,
    ) -> list[dict[str, Any]]:
        """The newest finished jobs' outcomes, newest first (docs/learning.md): ``id,
        scope_key, kind, status`` (applied / nothing_learned / dead), ``attempts``,
        ``enqueued_at``, ``finished_at``, ``result`` (the ``LearningReport`` dict, None for a
        dead job), ``error`` (a dead job's last error, or a finished one's last failed
        attempt's) and ``cursor`` (pass it as ``before`` for the next page). ``scope_key``:
        only that scope's jobs."""
        clauses: list[str] = []
        args: list[Any] = []
        for clause, value in (("id=?", job_id), ("scope_key=?", scope_key)):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        if before is not None:
            clauses.append("seq < ?")
            args.append(parse_cursor(before))
        if self.results_max_age_s is not None:
            clauses.append("finished_at >= ?")
            args.append(time.time() - self.results_max_age_s)
        sql = f"SELECT seq, {', '.join(RESULT_KEYS)}, result, error FROM job_results"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        rows = self._read(
            lambda: self._conn.execute(
                sql + " ORDER BY seq DESC LIMIT ?", (*args, limit)
            ).fetchall()
        )
        return [
            {
                **dict(zip(RESULT_KEYS, row[1:-2], strict=True)),
                "result": orjson.loads(row[-2]) if row[-2] is not None else None,
                "error": row[-1],
                "cursor": str(row[0]),
            }
            for row in rows
        ]

    def dead_job(self, job_id: str) -> dict[str, Any] | None:
        """One dead letter (``DEAD_KEYS``), or None."""
        row = self._read(
            lambda: self._conn.execute(
                f"SELECT {', '.join(DEAD_KEYS)} FROM jobs WHERE status='dead' AND id=?", (job_id,)
            ).fetchone()
        )
        return dict(zip(DEAD_KEYS, row, strict=True)) if row else None

    def fail(self, owner: str, job_id: str, error: str, retry_at: float | None) -> None:
        """Back to pending with a delay, or to dead-letter when ``retry_at`` is None."""

        def work(conn: sqlite3.Connection) -> None:
            if retry_at is None:
                self._log_outcome(conn, owner, job_id, "dead", None, error[:4000])
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
                if is_dead_local_owner(owner or "", host):
                    cursor = conn.execute(
                        "UPDATE jobs SET status='pending', lease_owner=NULL, "
                        "lease_expires=NULL WHERE lease_owner=? AND status='leased'",
                        (owner,),
                    )
                    released += cursor.rowcount
            return released

        return self._tx(work)

    def stats(self) -> dict[str, Any]:
        return self._read(self._stats)

    def _read(self, read: Callable[[], T]) -> T:
        with self._lock:
            try:
                return read()
            except sqlite3.Error as exc:
                raise QueueStoreError(f"queue database {self.path}: {exc}") from exc

    def _stats(self) -> dict[str, Any]:
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
        rows = self._read(
            lambda: self._conn.execute(
                "SELECT id, scope_key, attempts, last_error, enqueued_at, finished_at "
                "FROM jobs WHERE status='dead' ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        )
        return [dict(zip(DEAD_KEYS, row, strict=True)) for row in rows]

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


__all__ = ["SqliteJobStore"]
