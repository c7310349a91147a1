"""One cached scope, searchable in process (``scope_cache``): its rows, their vectors as one
float32 matrix, BM25 postings, and the lifecycle columns (expiry, hidden) a search must honour."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from .bm25 import Bm25Index
from .lifecycle import is_hidden
from .storage import Row, ScopeRows, TextHit

# What a row's dict costs beyond its texts (keys, small strings, the dict itself), measured
# with tracemalloc on 10,000 LoCoMo memories: ~1.1 KB. Rounded up so the bound holds.
ROW_OVERHEAD_BYTES = 1400


@dataclass(frozen=True, slots=True)
class ScopeIndex:
    """One scope's memories, searchable in process."""

    rows: list[Row]
    vectors: npt.NDArray[np.float32]
    created_at: npt.NDArray[np.str_]
    bm25: Bm25Index
    ids: frozenset[str]
    nbytes: int
    # When each row expires (epoch seconds, inf: never), judged at each search, not at load;
    # None when no row of the scope expires. Floats: comparing the stored strings costs
    # ~8 ms per search at 20,000 rows, the floats ~10 us.
    expires_at: npt.NDArray[np.float64] | None
    hidden: npt.NDArray[np.bool_] | None  # very negative feedback; None when no row has it

    @classmethod
    def build(cls, scanned: ScopeRows) -> ScopeIndex:
        rows = scanned.rows
        for row in rows:
            _untrackable(row)
        texts = sum(len(r.get("memory") or "") for r in rows) + sum(map(len, scanned.texts))
        bm25 = Bm25Index.build(scanned.terms)
        created = np.array([r.get("created_at") or "" for r in rows], dtype=np.str_)
        expires = _expiry_seconds(rows)
        hidden = np.array([is_hidden(r) for r in rows], dtype=np.bool_)
        hidden_or_none = hidden if hidden.any() else None
        size = (
            int(scanned.vectors.nbytes)
            + int(created.nbytes)
            + (int(expires.nbytes) if expires is not None else 0)
            + int(hidden.nbytes)
            + bm25.nbytes
            + 2 * texts
            + ROW_OVERHEAD_BYTES * len(rows)
        )
        return cls(
            rows,
            np.ascontiguousarray(scanned.vectors, dtype=np.float32),
            created,
            bm25,
            frozenset(r["id"] for r in rows),
            size,
            expires,
            hidden_or_none,
        )

    def __len__(self) -> int:
        return len(self.rows)

    def created_between(self, bounds: Sequence[tuple[str, str]]) -> npt.NDArray[np.bool_]:
        """Rows created in any ``[first, last)`` of ``bounds`` (stored timestamps compare as
        strings, as LanceDB's prefilter compares them)."""
        mask = np.zeros(len(self.rows), dtype=np.bool_)
        for first, last in bounds:
            mask |= (self.created_at >= first) & (self.created_at < last)
        return mask

    def visible(
        self, unexpired_at: str | None, hide_very_negative: bool
    ) -> npt.NDArray[np.bool_] | None:
        """Rows a ``Selection`` with these lifecycle conditions keeps (``lifecycle.py``);
        None when it keeps them all."""
        mask: npt.NDArray[np.bool_] | None = None
        if unexpired_at is not None and self.expires_at is not None:
            mask = self.expires_at > datetime.fromisoformat(unexpired_at).timestamp()
        if hide_very_negative and self.hidden is not None:
            mask = ~self.hidden if mask is None else mask & ~self.hidden
        return mask

    def vector_search(
        self,
        vector: npt.NDArray[np.float32],
        *,
        limit: int,
        where: npt.NDArray[np.bool_] | None = None,
    ) -> list[tuple[Row, float]]:
        """Exact cosine search (the vectors are unit length): (row, similarity) best first.
        The rows are the cache's own: read them, never change them (``detached`` copies)."""
        if not self.rows:
            return []
        similarities = self.vectors @ vector
        candidates = np.arange(len(self.rows)) if where is None else np.flatnonzero(where)
        return [
            (self.rows[i], float(similarities[i])) for i in _top(similarities, candidates, limit)
        ]

    def text_search(
        self, text: str, *, limit: int, where: npt.NDArray[np.bool_] | None = None
    ) -> list[TextHit]:
        """BM25 search (``bm25.Bm25Index``): (row, its vector, score) in score order; the rows
        are the cache's own, as in ``vector_search``."""
        scores = self.bm25.scores(text)
        matched = scores > 0 if where is None else (scores > 0) & where
        found = _top(scores, np.flatnonzero(matched), limit)
        return [(self.rows[i], self.vectors[i], float(scores[i])) for i in found]


def _untrackable(row: Row) -> None:
    """Hold a cached row's containers so that CPython's cyclic garbage collector stops
    visiting it: a dict holding only strings, scalars and untracked tuples is untracked at the
    next full collection, one holding another dict never is. Its metadata is kept as JSON
    bytes and its categories as a tuple (``detached`` gives them back as dict and list).
    Measured: a full collection's pause grows with every tracked row a cache holds (one per
    row, plus its metadata), so a cache of 100,000 rows would add tens of ms to each."""
    metadata = row.get("metadata")
    row["metadata"] = orjson.dumps(metadata) if metadata else None
    row["categories"] = tuple(row.get("categories") or ())


def detached(row: Row) -> Row:
    """A copy of a row (a cached one, or one the store returned) that its caller may change
    without touching the cache (only the few rows a search returns are copied, not every
    candidate): metadata a dict, categories a list."""
    copied = dict(row)
    metadata = copied.get("metadata")
    if isinstance(metadata, bytes):
        copied["metadata"] = orjson.loads(metadata)
    else:
        copied["metadata"] = copy.deepcopy(metadata) if metadata else {}
    copied["categories"] = list(copied.get("categories") or [])
    return copied


def _expiry_seconds(rows: Sequence[Row]) -> npt.NDArray[np.float64] | None:
    stamps = [r.get("expires_at") for r in rows]
    if not any(stamps):
        return None
    return np.array(
        [datetime.fromisoformat(s).timestamp() if s else np.inf for s in stamps],
        dtype=np.float64,
    )


def _top(scores: npt.NDArray[np.float32], candidates: npt.NDArray[Any], limit: int) -> list[int]:
    """The ``limit`` best of ``candidates`` by score, best first, ties in table order."""
    if len(candidates) > limit:
        part = np.argpartition(-scores[candidates], limit - 1)[:limit]
        candidates = np.sort(candidates[part])
    order = np.argsort(-scores[candidates], kind="stable")
    return [int(i) for i in candidates[order]]


__all__ = ["ROW_OVERHEAD_BYTES", "ScopeIndex", "detached"]
