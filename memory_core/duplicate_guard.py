"""The near-duplicate guard of learned adds: a new text very close to a stored memory (or to
an earlier text of the same add) is no new row; judged on content by ``duplicates``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .config import MemoryConfig
from .duplicates import fold_target, is_near_duplicate
from .extraction import Decision
from .storage import Row, Selection, Store
from .timestamps import now_stamp
from .types import Scope


async def near_duplicates(
    store: Store,
    config: MemoryConfig,
    scope: Scope,
    adds: Sequence[str],
    vectors: Mapping[str, np.ndarray[Any, Any]],
    busy: set[str],
) -> tuple[list[str], list[tuple[Decision, Row]]]:
    """Split new texts into real additions and near-duplicates of what the scope holds.

    A text with cosine >= ``duplicate_threshold`` to a memory of the scope (one not already
    updated or deleted in this call) or to an earlier new text of this call is not a new
    row: it becomes an UPDATE of that memory when it only adds words to it, NONE when it
    carries the same numbers, codes and names (``duplicates.fold_target``).
    """
    threshold = config.duplicate_threshold
    assert threshold is not None
    scope_only = Selection(scope, unexpired_at=now_stamp())
    hits = await asyncio.gather(
        *(store.vector_search(vectors[t], scope_only, limit=3) for t in adds)
    )
    kept: list[str] = []
    refined: list[tuple[Decision, Row]] = []
    for text, found in zip(adds, hits, strict=True):
        vector = vectors[text]
        if any(
            is_near_duplicate(float(np.dot(vector, vectors[other])), text, other, threshold)
            for other in kept
        ):
            continue
        match = next(
            (
                (row, kind)
                for row, sim in found
                if row["id"] not in busy
                and (kind := fold_target(sim, text, row["memory"], threshold)) is not None
            ),
            None,
        )
        if match is None:
            kept.append(text)
        elif match[1] == "refinement" and match[0].get("immutable"):
            kept.append(text)  # an immutable memory is never refined: a memory of its own
        elif match[1] == "refinement":
            row = match[0]
            busy.add(row["id"])
            refined.append((Decision("UPDATE", text, row["id"]), row))
    return kept, refined


__all__ = ["near_duplicates"]
