"""User profiles: a short, consolidated summary of one user, written by the extraction model
from their memories and kept in a ``profiles`` table of the same LanceDB store (every replica
sharing the store sees it). One row per user; ``AsyncMemory.delete_all`` of the user and
``reset`` remove it. Prompt building is pure (``prompts.build_profile_messages``)."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, TypedDict

import pyarrow as pa

from .config import ProfileConfig
from .errors import ExtractionError, StoreError
from .extraction import ChatLLM, complete_validated
from .filters import scope_sql
from .prompts import build_profile_messages
from .store_tables import open_side_table
from .timestamps import now_stamp
from .types import MemoryItem, Scope

log = logging.getLogger("memory_core.profiles")
PROFILES = "profiles"
CACHED_PROFILES = 4096  # users whose profile (or its absence) a process keeps (~5 MB typical)
CHARS_PER_WORD = 6  # the word budget told to the model, from the configured characters
PROFILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"profile": {"type": "string"}},
    "required": ["profile"],
    "additionalProperties": False,
}

PROFILES_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("profile", pa.string(), nullable=False),
        pa.field("memories", pa.int32(), nullable=False),  # how many memories it was built from
        # When the build read the memories (epoch s): a change stored before it is in it.
        pa.field("source_at", pa.float64(), nullable=False),
        pa.field("created_at", pa.string(), nullable=False),
        pa.field("updated_at", pa.string(), nullable=False),
    ]
)


class Profile(TypedDict):
    """A user's profile as the API returns it."""

    user_id: str
    profile: str
    memories: int
    source_at: float
    created_at: str
    updated_at: str


def parse_profile(answer: Mapping[str, Any], max_chars: int) -> str:
    """The profile text of a ``{"profile": "..."}`` answer, whitespace-normalised and cut at
    a word boundary to ``max_chars``; ``ExtractionError`` for another shape."""
    value = answer.get("profile")
    if not isinstance(value, str):
        raise ExtractionError('the answer must be {"profile": "<text>"}')
    text = " ".join(value.split())
    if len(text) > max_chars:
        text = text[:max_chars].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return text


async def write_profile(llm: ChatLLM, memories: Sequence[MemoryItem], config: ProfileConfig) -> str:
    """The profile of these memories (newest first), as the model writes it."""
    messages = build_profile_messages(
        [(m.get("updated_at") or m.get("created_at") or "", m["memory"]) for m in memories],
        max_words=max(20, config.max_chars // CHARS_PER_WORD),
    )
    text, _calls = await complete_validated(
        llm,
        messages,
        lambda answer: parse_profile(answer, config.max_chars),
        schema_name="profile",
        schema=PROFILE_SCHEMA,
        empty="",
    )
    return text


class ProfileStore:
    """Read, write and delete profile rows (one per user) in the store at ``uri``."""

    def __init__(
        self,
        uri: str,
        *,
        storage_options: Mapping[str, str] | None = None,
        read_consistency_interval_s: float | None = None,
        optimize_every: int = 100,
        cleanup_retention_s: float = 3600.0,
    ) -> None:
        self._uri = uri
        self._options = dict(storage_options or {})
        self._consistency_s = read_consistency_interval_s
        self._optimize_every = optimize_every
        self._retention = timedelta(seconds=cleanup_retention_s)
        self._writes = 0
        self._maintenance: asyncio.Task[None] | None = None
        self._table: Any = None
        self._lock = asyncio.Lock()
        self._cache: OrderedDict[str, Profile | None] = OrderedDict()  # LRU, one table version
        self._cached_version: int | None = None

    async def _open(self) -> Any:
        async with self._lock:
            if self._table is None:
                self._table = await open_side_table(
                    self._uri,
                    PROFILES,
                    PROFILES_SCHEMA,
                    storage_options=self._options,
                    read_consistency_interval_s=self._consistency_s,
                )
            return self._table

    @staticmethod
    def _where(user_id: str) -> str:
        return scope_sql(Scope(user_id=user_id))

    async def get(self, user_id: str) -> Profile | None:
        """The user's profile. Reads are cached in process while the table's version stays
        the same (any write, here or by another process the table sees, moves it on)."""
        table = await self._open()
        try:
            version = await table.version()
            if version != self._cached_version:
                self._cache.clear()
                self._cached_version = version
            if user_id in self._cache:
                self._cache.move_to_end(user_id)
                return self._cache[user_id]
            rows = (await table.query().where(self._where(user_id)).limit(1).to_arrow()).to_pylist()
        except (OSError, RuntimeError, ValueError) as exc:
            raise StoreError(f"cannot read the profile: {exc}") from exc
        profile = None
        if rows:
            row = rows[0]
            profile = Profile(
                user_id=row["user_id"],
                profile=row["profile"],
                memories=row["memories"],
                source_at=row["source_at"],
                created_at=row["created_at"],
                updated_at=row["updated_at"],
            )
        self._cache[user_id] = profile
        while len(self._cache) > CACHED_PROFILES:
            self._cache.popitem(last=False)
        return profile

    async def put(self, user_id: str, text: str, memories: int, source_at: float) -> Profile:
        """Store the user's profile (replacing the one before); returns it."""
        current = await self.get(user_id)
        stamp = now_stamp()
        profile = Profile(
            user_id=user_id,
            profile=text,
            memories=memories,
            source_at=source_at,
            created_at=current["created_at"] if current else stamp,
            updated_at=stamp,
        )
        table = await self._open()
        data = pa.Table.from_pylist([dict(profile)], schema=PROFILES_SCHEMA)
        try:
            await (
                table.merge_insert("user_id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(data)
            )
        except (OSError, RuntimeError, ValueError) as exc:
            raise StoreError(f"cannot store the profile: {exc}") from exc
        self._wrote(table)
        return profile

    async def delete(self, user_id: str) -> None:
        table = await self._open()
        try:
            await table.delete(self._where(user_id))
        except (OSError, RuntimeError, ValueError) as exc:
            raise StoreError(f"cannot delete the profile: {exc}") from exc
        self._wrote(table)

    async def reset(self) -> None:
        table = await self._open()
        try:
            await table.delete("true")
        except (OSError, RuntimeError, ValueError) as exc:
            raise StoreError(f"cannot reset the profiles: {exc}") from exc

    def _wrote(self, table: Any) -> None:
        """Every ``optimize_every`` writes, compact the table and drop old versions (each
        rebuild is a new version) in the background."""
        self._writes += 1
        if self._writes < self._optimize_every:
            return
        if self._maintenance is not None and not self._maintenance.done():
            return
        self._writes = 0

        async def optimize() -> None:
            try:
                await table.optimize(cleanup_older_than=self._retention)
            except (OSError, RuntimeError, ValueError) as exc:  # next time, then
                log.warning("optimizing the profiles table failed: %s", exc)

        self._maintenance = asyncio.get_running_loop().create_task(optimize())

    async def close(self) -> None:
        if self._maintenance is not None:
            await self._maintenance


__all__ = [
    "PROFILES",
    "Profile",
    "ProfileStore",
    "parse_profile",
    "write_profile",
]
