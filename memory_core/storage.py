"""The storage boundary: which memories an operation means (``Selection``) and what the library
asks of a store (``Store``). ``LanceStore`` implements it; the facade, the writer and the
searcher know nothing else, so another store (in memory, a replica) plugs in unchanged.

Callers never write SQL: a store compiles each ``Selection`` itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .types import HistoryItem, Scope

Row = dict[str, Any]
RowCheck = Callable[[Mapping[str, Any]], bool]
TextHit = tuple[Row, np.ndarray[Any, Any], float]  # (row, its vector, BM25 score)


@dataclass(frozen=True, slots=True)
class Selection:
    """Memories of ``scope`` (every scope when empty, for lookups by id), narrowed by ``ids``,
    by content ``hashes``, by the caller's Mem0-style ``filters`` (held to the store's filter
    limits) and by a ``window`` filter of the library's own (e.g. a creation-date range).

    ``unexpired_at`` (a stored timestamp) keeps only memories not expired at that moment;
    ``hide_very_negative`` drops those very negative feedback hides (``lifecycle.py``)."""

    scope: Scope = Scope()
    ids: tuple[str, ...] | None = None
    hashes: tuple[str, ...] | None = None
    filters: Mapping[str, Any] | None = None
    window: Mapping[str, Any] | None = None
    unexpired_at: str | None = None
    hide_very_negative: bool = False

    @classmethod
    def of_ids(cls, ids: Sequence[str]) -> Selection:
        return cls(ids=tuple(ids))


@dataclass(frozen=True, slots=True)
class ScopeRows:
    """Every row of a scope with its vector (one matrix row each, same order), the text its
    full-text index holds and that text's index terms (``bm25.tokenize``)."""

    rows: list[Row]
    vectors: np.ndarray[Any, np.dtype[np.float32]]
    texts: list[str]
    terms: list[list[str]]


class Store(Protocol):
    """Memories and their history. Reads return rows without vectors unless they say so."""

    @property
    def is_open(self) -> bool: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def row_check(self, selection: Selection) -> RowCheck | None:
        """The part of ``selection`` a search cannot prefilter (metadata conditions), to be
        checked on its results; None when everything is prefiltered. Raises
        ``InvalidFilter`` for a selection the store cannot compile."""
        ...

    async def fetch(self, selection: Selection, *, limit: int | None = None) -> list[Row]: ...

    async def count(self, selection: Selection | None = None) -> int: ...

    async def vector_search(
        self, vector: np.ndarray[Any, Any], selection: Selection, *, limit: int
    ) -> list[tuple[Row, float]]:
        """Exact cosine search, prefiltered by ``selection`` but for its ``row_check``:
        (row, similarity) best first."""
        ...

    async def text_search(self, text: str, selection: Selection, *, limit: int) -> list[TextHit]:
        """BM25 full-text search, prefiltered as ``vector_search``, in BM25 order."""
        ...

    async def insert(self, rows: Sequence[Row]) -> None: ...

    async def update(self, memory_id: str, values: Mapping[str, Any]) -> None: ...

    async def delete(self, selection: Selection) -> None: ...

    async def history(self, memory_id: str) -> list[HistoryItem]: ...

    async def memory_ids_with_history(self, memory_ids: Sequence[str]) -> set[str]: ...

    async def job_applied(self, job_id: str) -> bool: ...

    async def add_history(self, rows: Sequence[Row]) -> None: ...

    async def reset(self) -> None: ...


__all__ = ["Row", "RowCheck", "ScopeRows", "Selection", "Store", "TextHit"]
