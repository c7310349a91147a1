"""An in-memory ``memory_core.storage.Store``: the second implementation of the storage
boundary, for unit tests. It selects by scope, ids and hashes; Mem0-style filters it leaves to
the stores that compile them (it refuses them), which these tests do not use."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from memory_core.errors import InvalidFilter
from memory_core.lifecycle import is_expired, is_hidden
from memory_core.storage import Row, RowCheck, Selection, TextHit
from memory_core.types import HistoryItem

_WORDS = re.compile(r"\w+")


class InMemoryStore:
    """Rows and history in dicts; exact cosine search; a plain term-overlap text search."""

    def __init__(self) -> None:
        self._rows: dict[str, Row] = {}
        self._history: list[Row] = []
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    def _selected(self, selection: Selection) -> list[Row]:
        if selection.filters or selection.window:
            raise InvalidFilter("the in-memory store takes no Mem0 filters")
        scope = selection.scope.as_dict()
        return [
            row
            for row in self._rows.values()
            if all(value is None or row.get(key) == value for key, value in scope.items())
            and (selection.ids is None or row["id"] in selection.ids)
            and (selection.hashes is None or row["hash"] in selection.hashes)
            and (selection.unexpired_at is None or not is_expired(row, selection.unexpired_at))
            and not (selection.hide_very_negative and is_hidden(row))
        ]

    @staticmethod
    def _public(row: Row) -> Row:
        return {k: v for k, v in row.items() if k not in ("vector", "search_text")}

    def row_check(self, selection: Selection) -> RowCheck | None:
        self._selected(selection)
        return None

    async def fetch(self, selection: Selection, *, limit: int | None = None) -> list[Row]:
        return [self._public(r) for r in self._selected(selection)][: limit or None]

    async def count(self, selection: Selection | None = None) -> int:
        return len(self._selected(selection or Selection()))

    async def vector_search(
        self, vector: np.ndarray[Any, Any], selection: Selection, *, limit: int
    ) -> list[tuple[Row, float]]:
        scored = [
            (self._public(r), float(np.dot(r["vector"], vector))) for r in self._selected(selection)
        ]
        return sorted(scored, key=lambda hit: hit[1], reverse=True)[:limit]

    async def text_search(self, text: str, selection: Selection, *, limit: int) -> list[TextHit]:
        terms = set(_WORDS.findall(text.lower()))
        hits = []
        for row in self._selected(selection):
            overlap = len(terms & set(_WORDS.findall(row["search_text"].lower())))
            if overlap:
                hits.append((self._public(row), row["vector"], math.log1p(overlap)))
        return sorted(hits, key=lambda hit: hit[2], reverse=True)[:limit]

    async def insert(self, rows: Sequence[Row]) -> None:
        for row in rows:
            self._rows[row["id"]] = {**row, "vector": np.asarray(row["vector"], np.float32)}

    async def update(self, memory_id: str, values: Mapping[str, Any]) -> None:
        row = self._rows[memory_id]
        row.update(values)
        if "memory" in values:
            row["search_text"] = values["memory"]

    async def delete(self, selection: Selection) -> None:
        for row in self._selected(selection):
            del self._rows[row["id"]]

    async def history(self, memory_id: str) -> list[HistoryItem]:
        rows = sorted(
            (r for r in self._history if r["memory_id"] == memory_id),
            key=lambda r: (r["created_at"], r["id"]),
        )
        keys = ("id", "memory_id", "old_memory", "new_memory", "event", "created_at", "updated_at")
        return [
            HistoryItem(
                **{k: r[k] for k in keys}, is_deleted=r["is_deleted"], source=r.get("source")
            )
            for r in rows
        ]

    async def memory_ids_with_history(self, memory_ids: Sequence[str]) -> set[str]:
        return {r["memory_id"] for r in self._history} & set(memory_ids)

    async def job_applied(self, job_id: str) -> bool:
        return any(r["job_id"] == job_id for r in self._history)

    async def add_history(self, rows: Sequence[Row]) -> None:
        self._history.extend(dict(r) for r in rows)

    async def reset(self) -> None:
        self._rows.clear()
        self._history.clear()
