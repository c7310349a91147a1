"""What the lifecycle conditions of a search (issue 20: not expired, not hidden by very negative
feedback) cost: per-user search latency with and without them, in LanceDB (the SQL prefilter)
and in the per-process scope cache (the ``visible`` mask).

    python -m bench lifecycle              # 100,000 rows, writes its BENCHMARKS.md section
    python -m bench lifecycle --rows 20000 --no-write

The store is built in a temporary directory: ``--rows`` rows over users of ~200 memories; the
calling user holds 1,000, a fifth of them with an expiry (half already past), 2 % with very
negative feedback. Vectors are random unit vectors (the embedder is not what is measured).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from memory_core.scope_index import ScopeIndex
from memory_core.searcher import rank_in_index
from memory_core.storage import Selection
from memory_core.store import LanceStore
from memory_core.timestamps import format_timestamp, now_stamp
from memory_core.types import Scope

from .common import save_result, stamp, table, write_section
from .synthetic import CALLER, filler_texts, rows_for, unit_vectors

DIM = 384
CALLER_ROWS = 1_000
BATCH = 25_000


async def build(path: str, rows: int, rng: np.random.Generator) -> LanceStore:
    store = LanceStore(path, DIM, cleanup_retention_s=0, optimize_every=10**9)
    await store.open()
    now = datetime.now(UTC)
    for start in range(0, rows, BATCH):
        n = min(BATCH, rows - start)
        owners = [f"user-{int(u):05d}" for u in rng.integers(1, max(2, rows // 200), size=n)]
        if start == 0:
            owners[:CALLER_ROWS] = [CALLER] * CALLER_ROWS
        batch = rows_for(filler_texts(n, rng), owners, unit_vectors(n, DIM, rng), rng)
        for i, row in enumerate(batch[:CALLER_ROWS] if start == 0 else ()):
            if i % 5 == 0:  # a fifth expire: half of those already did
                row["expires_at"] = format_timestamp(now + timedelta(days=30 if i % 10 else -1))
            if i % 50 == 1:
                row["feedback"] = "VERY_NEGATIVE"
        await store.insert(batch)
    await store.optimize()
    return store


async def timed_pair(
    call: Callable[[bool], Awaitable[Any]], samples: int
) -> dict[str, tuple[float, float]]:
    """p50 / p99 ms of ``call(False)`` and ``call(True)``, interleaved (the order alternating)
    so a busy moment of the shared machine weighs on both alike."""
    for _ in range(5):
        await call(False)
        await call(True)
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(samples):
        for lifecycle in (i % 2 == 0, i % 2 == 1):
            started = time.perf_counter()
            await call(lifecycle)
            times[lifecycle].append((time.perf_counter() - started) * 1000)
    out = {}
    for lifecycle, name in ((False, "without"), (True, "with")):
        ordered = sorted(times[lifecycle])
        out[name] = (statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1])
    return out


async def run(rows: int, samples: int) -> dict[str, Any]:
    rng = np.random.default_rng(20)
    with tempfile.TemporaryDirectory() as path:
        store = await build(path, rows, rng)
        plain = Selection(Scope(CALLER))
        query = unit_vectors(1, DIM, rng)[0]
        words = " ".join(filler_texts(1, rng)[0].split()[:3])

        def live() -> Selection:
            return Selection(Scope(CALLER), unexpired_at=now_stamp(), hide_very_negative=True)

        index = ScopeIndex.build(await store.scan(plain, limit=CALLER_ROWS + 1))

        async def cached(lifecycle: bool) -> Any:
            selection = live() if lifecycle else plain
            mask = index.visible(selection.unexpired_at, True) if lifecycle else None
            return rank_in_index(index, query, words, [], mode="hybrid", depth=40, visible=mask)

        async def vector(lifecycle: bool) -> Any:
            return await store.vector_search(query, live() if lifecycle else plain, limit=40)

        async def text(lifecycle: bool) -> Any:
            return await store.text_search(words, live() if lifecycle else plain, limit=40)

        cases: list[tuple[str, Callable[[bool], Awaitable[Any]]]] = [
            ("LanceDB vector_search", vector),
            ("LanceDB text_search", text),
            ("scope cache (vector + BM25)", cached),
        ]
        results: dict[str, Any] = {}
        for name, call in cases:
            results[name] = await timed_pair(call, samples)
        await store.close()
    return results


def render(results: dict[str, Any], rows: int, samples: int) -> str:
    lines = [
        f"Per-user search latency, ms p50 / p99 ({samples} searches each), for a user of "
        f"{CALLER_ROWS:,} memories in a store of {rows:,} (the two kinds interleaved); a "
        "fifth of the user's memories expire (half already did), 2 % carry very negative "
        "feedback. `with`: the conditions every search and recall adds (not expired, not "
        "hidden).",
        "",
        table(
            ["search", "without p50 / p99", "with p50 / p99"],
            [
                [
                    name,
                    "{:.2f} / {:.2f}".format(*r["without"]),
                    "{:.2f} / {:.2f}".format(*r["with"]),
                ]
                for name, r in results.items()
            ],
        ),
        "",
        f"Reproduce: `python -m bench lifecycle --rows {rows}`. Run {stamp()['date']} at "
        f"commit {stamp()['commit']} on {stamp()['machine']}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench lifecycle", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.rows, args.samples))
    body = render(results, args.rows, args.samples)
    print(body)
    save_result("lifecycle", {"rows": args.rows, "samples": args.samples, "results": results})
    if not args.no_write:
        write_section("Lifecycle filters: expiration and feedback (issue 20)", body)
    return 0
