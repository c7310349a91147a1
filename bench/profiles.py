"""What ``recall.profile`` costs on the hot path (issue 20): reading one user's profile from the
``profiles`` table as it grows, and the recall step with and without the profile read (the
pipeline runs both concurrently, under one timeout).

    python -m bench profiles                      # 1k, 10k and 100k profiles; a 10k store
    python -m bench profiles --sizes 1000 --no-write

The search uses the 10k-memory store of ``bench store`` (built on first use) with the query
vectors pre-computed, the scope cache on (the default).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow as pa

from .common import commit, machine, save_result, table, write_section
from .store import FrozenQueries, _ms, build_store
from .synthetic import CALLER, QUERIES

PROFILE_TEXT = "The user " + "likes long walks by the sea and green tea, " * 20  # ~900 chars


async def measure_reads(size: int, n: int) -> dict[str, Any]:
    """``ProfileStore.get`` p50/p99 with ``size`` profiles stored (after 20 rebuilds)."""
    from memory_core.profiles import PROFILES_SCHEMA, ProfileStore

    with tempfile.TemporaryDirectory() as folder:
        store = ProfileStore(folder)
        await store.put("warm-up", "x", 1, 0.0)
        table_ = await store._open()
        rows = [
            {
                "user_id": f"user-{i:06d}",
                "profile": PROFILE_TEXT,
                "memories": 50,
                "source_at": 1.0,
                "created_at": "2026-12-01T00:00:00.000000+00:00",
                "updated_at": "2026-12-01T00:00:00.000000+00:00",
            }
            for i in range(size)
        ]
        await table_.add(pa.Table.from_pylist(rows, schema=PROFILES_SCHEMA))
        for i in range(20):  # rebuilds: one new version each, as in production
            await store.put(f"user-{i:06d}", PROFILE_TEXT, 51, 2.0)
        await table_.optimize()
        users = [f"user-{(i * 7919) % size:06d}" for i in range(n)]
        timings: dict[str, list[float]] = {"first": [], "cached": []}
        for kind in timings:  # each user once (a table query), then again (the cache)
            for user in users:
                started = time.perf_counter()
                await store.get(user)
                timings[kind].append(time.perf_counter() - started)
        await store.close()
    return {"size": size, **{kind: _ms(samples) for kind, samples in timings.items()}}


async def measure_recall(embedder: Any, qvecs: dict[str, np.ndarray], n: int) -> dict[str, Any]:
    """The recall step for the calling user: search alone, then search + profile together."""
    from memory_core import AsyncMemory, MemoryConfig
    from memory_core.profiles import ProfileStore

    path = await build_store(10_000, embedder)
    with tempfile.TemporaryDirectory() as folder:
        # The profiles table in a directory of its own (the cached store stays untouched).
        profiles = ProfileStore(folder)
        await profiles.put(CALLER, PROFILE_TEXT, 100, time.time())
        memory = AsyncMemory(
            MemoryConfig(storage_uri=str(path)),
            embedder=FrozenQueries(embedder, qvecs),
            profiles=profiles,
        )
        await memory.open()
        queries = list(qvecs)

        async def search(i: int) -> Any:
            return await memory.search(
                queries[i % len(queries)], user_id=CALLER, limit=8, threshold=0.75
            )

        async def both(i: int) -> Any:
            return await asyncio.gather(search(i), memory.profile(user_id=CALLER))

        out: dict[str, Any] = {}
        for name, step in (("search", search), ("search + profile", both)):
            for i in range(10):
                await step(i)
            samples = []
            for i in range(n):
                started = time.perf_counter()
                await step(i)
                samples.append(time.perf_counter() - started)
            out[name] = _ms(samples)
        await memory.close()
    return out


def render(r: dict[str, Any]) -> str:
    read_rows = [
        [f"{s['size']:,}", kind, f"{s[kind]['p50']:.2f}", f"{s[kind]['p95']:.2f}",
         f"{s[kind]['p99']:.2f}"]
        for s in r["reads"]
        for kind in ("first", "cached")
    ]  # fmt: skip
    recall_rows = [
        [name, f"{s['p50']:.2f}", f"{s['p95']:.2f}", f"{s['p99']:.2f}"]
        for name, s in r["recall"].items()
    ]
    return "\n".join(
        [
            f"Run {r['date']}, commit `{r['commit']}`, {r['machine']}, load average at start "
            f"{r['load']}.",
            "",
            "One user's profile read (`AsyncMemory.profile`, ~900-character profiles): "
            f"{r['n']} users read once (a filtered query of the `profiles` table), then again "
            "(the per-process cache, checked against the table version):",
            "",
            table(["profiles stored", "read", "p50 ms", "p95 ms", "p99 ms"], read_rows),
            "",
            "The recall step for a user of the 10k-memory store (scope cache on, query vector "
            "pre-computed): the search alone, and the search with the profile read alongside "
            "(`recall.profile: true` runs them concurrently):",
            "",
            table(["recall", "p50 ms", "p95 ms", "p99 ms"], recall_rows),
            "",
            "Reproduce: `python -m bench profiles`.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench profiles", description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    from memory_core.embedders import LocalEmbedder

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    embedder = LocalEmbedder()

    async def run() -> dict[str, Any]:
        vectors = await embedder.embed(QUERIES, purpose="query")
        qvecs = dict(zip(QUERIES, vectors, strict=True))
        reads = [await measure_reads(int(s), args.samples) for s in args.sizes.split(",")]
        return {"reads": reads, "recall": await measure_recall(embedder, qvecs, args.samples)}

    measured = asyncio.run(run())
    embedder.close()
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit(),
        "machine": machine(),
        "load": load,
        "n": args.samples,
        **measured,
    }
    save_result("profiles", result)
    text = render(result)
    print(text)
    if not args.no_write:
        write_section("Profiles (recall.profile)", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
