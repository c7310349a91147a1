"""Who may run store maintenance (compaction, index folding, version cleanup) right now.

Each replica's ``LanceStore`` asks before ``optimize``; with a shared store only the holder of
the lock runs it, the others skip their turn. Without a lock (one process) every turn runs.
The Redis lock is ``SET key token NX PX ttl``, released only by its holder (compare-and-delete):
a holder that dies frees it after ``ttl_s``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from .errors import StoreError

log = logging.getLogger("memory_core.maintenance_lock")

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class MaintenanceLock(Protocol):
    async def acquire(self, name: str, ttl_s: float) -> str | None:
        """A token when the lock ``name`` is now held, None when another holder has it."""
        ...

    async def release(self, name: str, token: str) -> None: ...

    async def close(self) -> None: ...


class RedisMaintenanceLock:
    def __init__(self, url: str, *, prefix: str = "memproxy") -> None:
        import redis.asyncio

        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)
        self._redis: Any = redis.asyncio.Redis.from_url(
            url, socket_timeout=10, socket_connect_timeout=5
        )
        self._prefix = "{" + prefix + "}:lock:"
        self._release = self._redis.register_script(_RELEASE)

    async def acquire(self, name: str, ttl_s: float) -> str | None:
        token = uuid.uuid4().hex
        try:
            done = await self._redis.set(
                self._prefix + name, token, nx=True, px=max(1, int(ttl_s * 1000))
            )
        except self._errors as exc:
            raise StoreError(f"maintenance lock: {type(exc).__name__}: {exc}") from exc
        return token if done else None

    async def release(self, name: str, token: str) -> None:
        try:
            await self._release(keys=[self._prefix + name], args=[token])
        except self._errors as exc:  # it expires by itself after its ttl
            raise StoreError(f"maintenance lock: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self._redis.aclose()


@asynccontextmanager
async def maintenance_turn(
    lock: MaintenanceLock | None, name: str, ttl_s: float
) -> AsyncIterator[str | None]:
    """Around one maintenance turn: yields None when this process runs it (no lock, or the
    lock ``name`` is held until the block ends), else why not: "skipped" (another replica
    holds it) or "failed" (the lock could not be asked, logged)."""
    if lock is None:
        yield None
        return
    try:
        token = await lock.acquire(name, ttl_s)
    except StoreError as exc:
        log.warning("store maintenance skipped: %s", exc)
        yield "failed"
        return
    if token is None:
        yield "skipped"
        return
    try:
        yield None
    finally:
        try:
            await lock.release(name, token)
        except StoreError as exc:
            log.warning("%s (it expires by itself)", exc)


__all__ = ["MaintenanceLock", "RedisMaintenanceLock", "maintenance_turn"]
