"""Where a user's rows lie in the memories table's files, and moving them together.

Memories arrive one learning job at a time, interleaved with every other user's, so a user's
~200 rows end up scattered over the table: a scope cache load of a user whose rows are not in
the OS page cache (after a restart, a store larger than the RAM, or on S3) is one random read
per row. Maintenance, after its compaction, rewrites the most scattered users' rows, one user
per commit, so they sit next to each other (the next compaction keeps that order) and such a
load is a few reads.

The rewrite is LanceDB's own UPDATE of every row of the user, setting nothing new
(``revision = revision``): LanceDB writes the matched rows, in their order, to a new fragment
and marks the old ones deleted, in one commit. No value changes, so nothing a reader sees
changes either; a concurrent write to the same rows meets LanceDB's commit conflict handling,
as two updates of the same memory do (``tests/test_store_layout.py`` races both).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pyarrow as pa

from .filters import sql_literal
from .store_schema import REVISION
from .store_tables import query_arrow

log = logging.getLogger("memory_core.store_layout")

# Rows of one user at most this many row positions apart in one file count as one run (~120 KB
# of records at ~3.7 KB a row: one region of the file, where the disk's read-ahead helps).
NEAR_ROWS = 32
# A user whose rows form more runs than this is rewritten; below it, a load is a few reads.
SCATTERED_RUNS = 8
# A larger user is rewritten only once it has a run per this many rows (the rewrite costs
# rows, it saves runs), and one past MAX_USER_ROWS never (the scope cache does not hold such a
# scope, and LanceDB's queries read only the rows they rank, not the whole scope).
ROWS_PER_RUN = 64
MAX_USER_ROWS = 20_000


def scattered_users(users: pa.Array, addresses: np.ndarray) -> list[str]:
    """The users of ``users`` (one per row, None for rows of no user) whose rows, at row
    addresses ``addresses``, form more than ``SCATTERED_RUNS`` runs of near rows (and more
    than one per ``ROWS_PER_RUN`` rows; none of more than ``MAX_USER_ROWS``): most runs
    first (most reads saved), ties by name."""
    valid = users.is_valid().to_numpy(zero_copy_only=False)
    if not valid.any():
        return []
    encoded = users.filter(pa.array(valid)).dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    where = np.asarray(addresses, dtype=np.uint64)[valid]
    order = np.lexsort((where, codes))
    codes, where = codes[order], where[order].astype(np.int64)
    # Row addresses are the fragment id in the high 32 bits: another fragment is far too.
    starts = np.r_[True, (codes[1:] != codes[:-1]) | (np.diff(where) > NEAR_ROWS)]
    runs = np.bincount(codes[starts], minlength=len(encoded.dictionary))
    rows = np.bincount(codes, minlength=len(encoded.dictionary))
    threshold = np.maximum(SCATTERED_RUNS, rows // ROWS_PER_RUN)
    picked = np.flatnonzero((runs > threshold) & (rows <= MAX_USER_ROWS))
    names = encoded.dictionary.to_pylist()
    scattered = [(int(-runs[i]), names[i]) for i in picked]
    return [name for _, name in sorted(scattered)]


async def cluster_users(
    table: Any,
    write: Callable[[Awaitable[Any]], Awaitable[Any]],
    *,
    budget_s: float,
) -> int:
    """Rewrite the most scattered users' rows together, one user per commit through
    ``write``, for up to ``budget_s`` (0: none); how many users were rewritten."""
    if budget_s <= 0:
        return 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    layout = await query_arrow(table.query().select(["user_id", "_rowaddr"]))
    users = layout.column("user_id").combine_chunks()
    addresses = layout.column("_rowaddr").to_numpy()
    # ~0.3 s of numpy at 1M rows: off the event loop, which serves requests meanwhile.
    pending = await asyncio.to_thread(scattered_users, users, addresses)
    done = 0
    for user in pending:
        if loop.time() >= deadline:
            break
        where = f"user_id = {sql_literal(user)}"
        await write(table.update(updates_sql={REVISION: REVISION}, where=where))
        done += 1
    if pending:
        log.info("moved the rows of %d of %d scattered users together", done, len(pending))
    return done


__all__ = [
    "MAX_USER_ROWS",
    "NEAR_ROWS",
    "ROWS_PER_RUN",
    "SCATTERED_RUNS",
    "cluster_users",
    "scattered_users",
]
