"""The shared learning-queue backend: Redis Streams with one consumer group, for replicas.

The SQLite store's guarantees, with every state change one atomic Lua script:

- Each scope (user) has a FIFO list of job ids; its **token**, one stream entry, exists exactly
  while the list is non-empty. Whoever holds the token (the entry is in its consumer's pending
  list, PEL) runs the list's head: per-scope order and one job per scope at a time across all
  replicas. Completing or dead-lettering the head re-adds the token when more jobs wait.
- Claiming reads new tokens with ``XREADGROUP`` and takes over tokens whose lease (a sorted
  set, renewed by the holder's heartbeat) has expired with ``XCLAIM``: the pending entries of a
  dead replica go to the living after ``lease_s``, as an ``XAUTOCLAIM`` does, but with the
  holder's lease rather than the claimer's idle threshold (the SQLite store's rule).
- A failed job's token waits in a sorted set until its retry time; a dead job keeps its error
  in its hash and leaves its scope's list, unblocking the jobs behind it.
- ``max_in_flight`` bounds the leased jobs of all replicas together, checked in the claim
  script itself.

Standalone Redis (or a Sentinel-managed primary) with ``appendonly yes`` and
``appendfsync always`` for the SQLite store's durability; keys share one hash tag. The client
is synchronous on purpose: ``LearningQueue`` calls every backend from its own I/O thread.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Sequence
from typing import Any

import orjson

from . import redis_scripts
from .errors import InvalidInput, QueueStoreError
from .jobs import DEAD_KEYS, RESULTS_KEPT, Job, is_dead_local_owner, job_kind

log = logging.getLogger("memory_core.queue")
GROUP = "learners"
ERROR_CHARS = 4000
# A consumer left by a cleanly stopped process (nothing pending) is forgotten after this long.
IDLE_CONSUMER_MS = 3_600_000
CURSOR = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")  # a results-stream entry id


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _result_row(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """A results-stream entry as ``results()`` returns it (entries of older versions lack
    ``kind``)."""
    return {
        "id": fields["id"],
        "scope_key": fields["scope_key"],
        "kind": fields.get("kind", ""),
        "status": fields["status"],
        "attempts": int(fields["attempts"] or 0),
        "enqueued_at": float(fields["enqueued_at"] or 0),
        "finished_at": float(fields["finished_at"]),
        "result": orjson.loads(fields["result"]) if fields.get("result") else None,
        "error": fields.get("error") or None,
        "cursor": entry_id,
    }


class RedisJobStore:
    """``JobStore`` on Redis (``redis_url``); all keys under ``{prefix}``."""

    backend = "redis"
    local = False

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "memproxy",
        max_in_flight: int | None = None,
        results_kept: int = RESULTS_KEPT,
        results_max_age_s: float | None = None,
    ) -> None:
        import redis

        self._results_kept = results_kept
        self._results_max_age_s = results_max_age_s

        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)
        self._redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self._prefix = "{" + prefix + "}"
        self._max_in_flight = max_in_flight or 0
        scripts = redis_scripts.compiled()
        self._scripts = {name: self._redis.register_script(src) for name, src in scripts.items()}
        try:
            self._call(self._ensure_group)
        except QueueStoreError as exc:  # Redis not up yet: the group is made on first use
            log.warning("%s", exc)

    def _key(self, name: str) -> str:
        return f"{self._prefix}:{name}"

    def _ensure_group(self) -> None:
        import redis

        try:
            self._redis.xgroup_create(self._key("ready"), GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            try:
                return fn(*args)
            except self._errors as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._ensure_group()  # Redis lost the group (restarted without its AOF)
                return fn(*args)
        except self._errors as exc:
            # str(exc) never holds the URL (and so no password): redis-py names host:port.
            raise QueueStoreError(f"redis queue: {type(exc).__name__}: {exc}") from exc

    def _run(self, name: str, *args: Any) -> Any:
        return self._call(self._scripts[name], [], [self._prefix, *args])

    def enqueue(self, job_id: str, scope_key: str, payload: dict[str, Any]) -> bool:
        now = repr(time.time())
        done = self._run(
            "enqueue", job_id, scope_key, orjson.dumps(payload), now, job_kind(payload)
        )
        return bool(done)

    def claim(self, owner: str, limit: int, lease_s: float, busy: Sequence[str]) -> list[Job]:
        rows = self._run(
            "claim", owner, limit, repr(lease_s), repr(time.time()), self._max_in_flight, *busy
        )
        return [
            Job(
                _text(job_id),
                _text(scope),
                orjson.loads(payload),
                int(attempts),
                float(_text(enqueued_at)),
            )
            for job_id, scope, payload, attempts, enqueued_at in rows
        ]

    def renew(self, owner: str, job_ids: Sequence[str], lease_s: float) -> None:
        if job_ids:
            self._run("renew", owner, repr(lease_s), repr(time.time()), *job_ids)

    def complete(self, owner: str, job_id: str, result: dict[str, Any] | None = None) -> None:
        """Remove a finished job, logging its outcome (``result``) in the results stream."""
        status = str((result or {}).get("status") or "applied")
        encoded = orjson.dumps(result) if result is not None else b""
        now = repr(time.time())
        self._run("complete", owner, job_id, status, encoded, now, *self._retention())

    def fail(self, owner: str, job_id: str, error: str, retry_at: float | None) -> None:
        when = "" if retry_at is None else repr(retry_at)
        now = repr(time.time())
        self._run("fail", owner, job_id, error[:ERROR_CHARS], when, now, *self._retention())

    def _retention(self) -> tuple[int, str]:
        return self._results_kept, repr(self._results_max_age_s or 0)

    def results(
        self,
        limit: int = 20,
        job_id: str | None = None,
        *,
        scope_key: str | None = None,
        before: str | None = None,
    ) -> list[dict[str, Any]]:
        """The newest finished jobs' outcomes, newest first, as ``SqliteJobStore.results``
        (``cursor``: the entry's stream id). A scope's page reads its index stream, then
        those entries; a job id is looked for among all kept entries (or the scope's)."""
        if before is not None and not CURSOR.fullmatch(before):
            raise InvalidInput("invalid cursor", param="cursor")
        newest = "(" + before if before is not None else "+"
        count = self._results_kept if job_id is not None else limit
        if scope_key is None:
            entries = self._call(self._redis.xrevrange, self._key("results"), newest, "-", count)
        else:
            index = self._key(f"rscope:{scope_key}")
            ids = [i for i, _ in self._call(self._redis.xrevrange, index, newest, "-", count)]
            pipe = self._redis.pipeline(transaction=False)
            for entry_id in ids:
                pipe.xrange(self._key("results"), entry_id, entry_id)
            entries = [found[0] for found in self._call(pipe.execute) if found]
        oldest = time.time() - self._results_max_age_s if self._results_max_age_s else 0.0
        rows = []
        for entry_id, raw in entries:
            row = _result_row(_text(entry_id), {_text(k): _text(v) for k, v in raw.items()})
            if job_id is not None and row["id"] != job_id or row["finished_at"] < oldest:
                continue
            rows.append(row)
            if len(rows) >= limit:
                break
        return rows

    def dead_job(self, job_id: str) -> dict[str, Any] | None:
        """One dead letter (``DEAD_KEYS``), or None."""
        if self._call(self._redis.zscore, self._key("dead"), job_id) is None:
            return None
        fields = ("scope", "attempts", "last_error", "enqueued_at", "finished_at")
        found = self._call(self._redis.hmget, self._key(f"job:{job_id}"), *fields)
        if found[0] is None:
            return None
        scope, attempts, error, enqueued_at, finished_at = (_text(v or b"") for v in found)
        values = (
            job_id,
            scope,
            int(attempts or 0),
            error,
            float(enqueued_at or 0),
            float(finished_at or 0),
        )
        return dict(zip(DEAD_KEYS, values, strict=True))

    def release(self, owner: str, job_ids: Sequence[str]) -> None:
        if job_ids:
            self._run("release", owner, "1", *job_ids)

    def recover_dead_owners(self) -> int:
        """Release the jobs of this host's consumers whose process is gone and forget those
        consumers (and ones idle for long with nothing pending: cleanly stopped processes)."""
        host = socket.gethostname()
        self._call(self._ensure_group)
        consumers = self._call(self._redis.xinfo_consumers, self._key("ready"), GROUP)
        released = 0
        for consumer in consumers:
            name = _text(consumer["name"])
            if is_dead_local_owner(name, host):
                released += int(self._run("recover", name))
            elif not int(consumer["pending"]) and int(consumer["idle"]) >= IDLE_CONSUMER_MS:
                self._call(self._redis.xgroup_delconsumer, self._key("ready"), GROUP, name)
        return released

    def stats(self) -> dict[str, Any]:
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcard(self._key("live"))
        pipe.zcard(self._key("leases"))
        pipe.zcard(self._key("dead"))
        pipe.zrange(self._key("live"), 0, 0, withscores=True)
        live, leased, dead, oldest = self._call(pipe.execute)
        return {
            "pending": max(int(live) - int(leased), 0),
            "leased": int(leased),
            "dead": int(dead),
            "oldest_age_s": round(time.time() - oldest[0][1], 3) if oldest else 0.0,
        }

    def dead_jobs(self, limit: int = 100) -> list[dict[str, Any]]:
        ids = self._call(self._redis.zrange, self._key("dead"), 0, limit - 1)
        pipe = self._redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(self._key(f"job:{_text(job_id)}"), "scope", "attempts", "last_error")
            pipe.hmget(self._key(f"job:{_text(job_id)}"), "enqueued_at", "finished_at")
        rows = self._call(pipe.execute)
        jobs = []
        for index, job_id in enumerate(ids):
            scope, attempts, error = rows[2 * index]
            enqueued_at, finished_at = rows[2 * index + 1]
            values = (
                _text(job_id),
                _text(scope),
                int(attempts),
                _text(error),
                float(_text(enqueued_at)),
                float(_text(finished_at)),
            )
            jobs.append(dict(zip(DEAD_KEYS, values, strict=True)))
        return jobs

    def retry_dead(self, job_id: str | None = None) -> int:
        return int(self._run("retry_dead", job_id or ""))

    def purge_dead(self) -> int:
        return int(self._run("purge_dead"))

    def close(self) -> None:
        self._redis.close()


__all__ = ["RedisJobStore"]
