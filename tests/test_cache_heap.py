"""Cached rows and the cyclic garbage collector: a scope index's rows are untracked (a full
collection's pause grows with every tracked object the cache holds), and ``detached`` gives
every caller a row of plain dicts and lists, whichever path found it."""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
import pytest

from memory_core.bm25 import tokenize
from memory_core.scope_index import ScopeIndex, detached
from memory_core.storage import ScopeRows

ROWS: list[dict[str, Any]] = [
    {"metadata": {}, "categories": []},
    {"metadata": {"dia_id": "D1:3"}, "categories": ["travel"]},
    {"metadata": {"nested": {"tags": ["a", "b"], "n": 2}, "ok": True}, "categories": ["a", "b"]},
    {"metadata": {"unicode": "Zoë ☕"}, "categories": None},
]


def scope_rows() -> ScopeRows:
    rows = []
    for i, fields in enumerate(ROWS):
        text = f"memory number {i} about {fields['metadata']}"
        rows.append(
            {
                "id": f"m{i}",
                "user_id": "u",
                "memory": text,
                "created_at": "2026-12-01T00:00:00+00:00",
                "feedback": None,
                "expires_at": None,
                "immutable": False,
                **fields,
            }
        )
    vectors = np.eye(len(rows), 8, dtype=np.float32)
    texts = [r["memory"] for r in rows]
    return ScopeRows(rows, vectors, texts, [tokenize(t) for t in texts])


def test_a_cached_scope_leaves_its_rows_out_of_the_collectors_work() -> None:
    index = ScopeIndex.build(scope_rows())
    gc.collect()  # dicts are untracked by a full collection, when their contents allow it
    assert [gc.is_tracked(row) for row in index.rows] == [False] * len(ROWS)


@pytest.mark.parametrize("position", range(len(ROWS)))
def test_a_detached_cached_row_holds_its_metadata_and_categories(position: int) -> None:
    original = ROWS[position]
    index = ScopeIndex.build(scope_rows())
    copy = detached(index.rows[position])
    assert copy["metadata"] == original["metadata"]
    assert copy["categories"] == list(original["categories"] or [])
    assert isinstance(copy["metadata"], dict) and isinstance(copy["categories"], list)
    copy["metadata"]["changed"] = True
    copy["categories"].append("changed")
    again = detached(index.rows[position])
    assert "changed" not in again["metadata"] and "changed" not in again["categories"]


def test_detached_copies_a_row_the_store_returned() -> None:
    row = {"id": "x", "metadata": {"a": {"b": [1]}}, "categories": ["c"]}
    copy = detached(row)
    copy["metadata"]["a"]["b"].append(2)
    copy["categories"].append("d")
    assert row == {"id": "x", "metadata": {"a": {"b": [1]}}, "categories": ["c"]}
