"""Recall once per user turn in agent loops: the block recalled for a user turn, kept for the
loop's later steps (the same user message followed by tool calls and their results).

Reusing the block, rather than searching again, keeps every step's prompt up to the tool
calls byte-identical to the first step's (provider prompt caching), and costs no embedding or
search per step. Entries are per identity and bounded in number and age.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass

from .identity import Identity


@dataclass(frozen=True, slots=True)
class RecalledBlock:
    block: str | None
    count: int


class TurnRecalls:
    """An LRU of recalled blocks keyed by (identity, user-turn text), with a time to live."""

    def __init__(self, *, max_entries: int = 4096, ttl_s: float = 900.0) -> None:
        self._entries: OrderedDict[bytes, tuple[float, RecalledBlock]] = OrderedDict()
        self._max_entries = max_entries
        self._ttl_s = ttl_s

    @staticmethod
    def _key(identity: Identity, query: str) -> bytes:
        parts = (*(value or "" for value in identity.scope.as_dict().values()), query)
        return hashlib.sha256("\x00".join(parts).encode()).digest()

    def get(self, identity: Identity, query: str) -> RecalledBlock | None:
        key = self._key(identity, query)
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, recalled = entry
        if time.monotonic() - stored_at > self._ttl_s:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return recalled

    def put(self, identity: Identity, query: str, recalled: RecalledBlock) -> None:
        key = self._key(identity, query)
        self._entries[key] = (time.monotonic(), recalled)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
