"""Store benchmark: per-user search latency vs store size, add throughput, disk use, and search
latency before/after 10,000 single writes with maintenance on.

    python -m bench store                 # build missing stores (cached), measure, write docs
    python -m bench store --build-only    # just build the cached stores
    python -m bench store --quick         # short run (sizes 10k,100k; fewer samples)

Stores live in bench/.cache/store-<N>/ (gitignored): the calling user ``bench-user`` holds
200 memories embedded with the real default embedder; the other rows (5,000 users at 1M,
~200 each) get random unit vectors and word-salad text, bulk-loaded through
``LanceStore.insert``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from memory_core import AsyncMemory, MemoryConfig
from memory_core.embedders import LocalEmbedder
from memory_core.storage import Selection
from memory_core.store import LanceStore
from memory_core.types import Scope

from .common import CACHE, save_result, stamp, table, write_section
from .synthetic import CALLER, QUERIES, caller_facts, filler_texts, rows_for, unit_vectors

SIZES = (10_000, 100_000, 1_000_000)
PER_USER = 200  # memories of every other user, on average
CALLER_MEMORIES = 1_000  # the recalled user's (issue 17: a user with 1,000 memories)
BATCH = 25_000


def store_dir(size: int) -> Path:
    return CACHE / f"store-{size}"


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def build_store(size: int, embedder: LocalEmbedder, *, force: bool = False) -> Path:
    """Build (or reuse) the cached store of ``size`` memories; returns its directory."""
    path = store_dir(size)
    marker = path / "built.json"
    if marker.exists() and not force:
        return path
    if path.exists():
        shutil.rmtree(path)
    started = time.perf_counter()
    rng = np.random.default_rng(size)
    users = max(1, size // PER_USER)
    facts = caller_facts(CALLER_MEMORIES)
    fact_vectors = await embedder.embed(facts, purpose="passage")
    store = LanceStore(str(path), embedder.dimension, cleanup_retention_s=0, optimize_every=10**9)
    await store.open()
    # Caller rows are spread at random positions through the load (memories arrive over time).
    others = size - CALLER_MEMORIES
    caller_slots = set(
        rng.choice(others + CALLER_MEMORIES, size=CALLER_MEMORIES, replace=False).tolist()
    )
    fact_iter = iter(range(CALLER_MEMORIES))
    position = 0
    loaded = 0
    while position < size:
        n = min(BATCH, size - position)
        texts = filler_texts(n, rng)
        owners = (
            [f"user-{int(u):05d}" for u in rng.integers(1, users, size=n)]
            if users > 1
            else [f"user-{0:05d}"] * n
        )
        vectors = unit_vectors(n, embedder.dimension, rng)
        for i in range(n):
            if position + i in caller_slots:
                k = next(fact_iter)
                texts[i], owners[i], vectors[i] = facts[k], CALLER, fact_vectors[k]
        await store.insert(rows_for(texts, owners, vectors, rng))
        position += n
        loaded += n
        print(
            f"  store-{size}: {loaded:,}/{size:,} rows "
            f"({loaded / (time.perf_counter() - started):,.0f} rows/s)",
            flush=True,
        )
    load_s = time.perf_counter() - started
    t = time.perf_counter()
    await store.optimize()  # compaction + fold rows into the BTREE and FTS indexes
    optimize_s = time.perf_counter() - t
    count = await store.count()
    caller = await store.count(Selection(Scope(CALLER)))
    await store.close()
    info = {
        "size": size,
        "rows": count,
        "caller_rows": caller,
        "users": users,
        "load_s": load_s,
        "optimize_s": optimize_s,
        "bytes": _du(path),
    }
    marker.write_text(json.dumps(info, indent=2))
    print(
        f"  store-{size}: built in {load_s:.0f}s + optimize {optimize_s:.0f}s, "
        f"{info['bytes'] / 1e6:,.0f} MB",
        flush=True,
    )
    return path


class FrozenQueries:
    """An embedder that serves pre-computed query vectors (search timing without embedding)."""

    def __init__(self, inner: LocalEmbedder, vectors: dict[str, np.ndarray]) -> None:
        self.dimension = inner.dimension
        self._inner = inner
        self._vectors = vectors

    async def embed(self, texts: Any, *, purpose: str = "passage") -> np.ndarray:
        if purpose == "query" and len(texts) == 1 and texts[0] in self._vectors:
            return self._vectors[texts[0]][None, :]
        return await self._inner.embed(texts, purpose=purpose)  # type: ignore[arg-type]


def _ms(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples) * 1000
    return {
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
    }


async def measure_search(
    path: Path, embedder: LocalEmbedder, qvecs: dict[str, np.ndarray], n: int
) -> dict[str, Any]:
    """Per-user search latency (embedding excluded) for the caller, three ways."""
    memory = AsyncMemory(
        MemoryConfig(storage_uri=str(path)), embedder=FrozenQueries(embedder, qvecs)
    )
    await memory.open()
    store = memory.store
    assert store is not None
    where = Selection(Scope(CALLER))
    out: dict[str, Any] = {}
    queries = list(qvecs)
    for name in ("vector", "fulltext", "memory.search"):
        for i in range(10):  # warm caches
            q = queries[i % len(queries)]
            await _one(name, memory, store, q, qvecs[q], where)
        times = []
        for i in range(n):
            q = queries[i % len(queries)]
            t = time.perf_counter()
            hits = await _one(name, memory, store, q, qvecs[q], where)
            times.append(time.perf_counter() - t)
        out[name] = {**_ms(times), "hits": hits}
    await memory.close()
    return out


async def _one(
    name: str, memory: AsyncMemory, store: LanceStore, q: str, v: np.ndarray, where: Selection
) -> int:
    if name == "vector":
        return len(await store.vector_search(v, where, limit=20))
    if name == "fulltext":
        import re

        text = re.sub(r"[^\w\s]+", " ", q).strip()
        return len(await store.text_search(text, where, limit=20))
    found = await memory.search(q, user_id=CALLER, limit=8, threshold=0.75)
    return len(found["results"])


async def measure_add(embedder: LocalEmbedder, n_batch: int, n_single: int) -> dict[str, Any]:
    """``AsyncMemory.add(infer=False)``: memories/s in batches and one at a time."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-add-"))
    memory = AsyncMemory(MemoryConfig(storage_uri=str(tmp)), embedder=embedder)
    await memory.open()
    rng = np.random.default_rng(1)
    texts = filler_texts(n_batch + n_single, rng)
    t = time.perf_counter()
    for start in range(0, n_batch, 100):
        await memory.add(texts[start : start + 100], user_id="adder", infer=False)
    batch_rate = n_batch / (time.perf_counter() - t)
    t = time.perf_counter()
    for text in texts[n_batch:]:
        await memory.add(text, user_id="adder", infer=False)
    single_rate = n_single / (time.perf_counter() - t)
    # The store alone (vectors given): what a bulk import through LanceStore.insert reaches.
    store = memory.store
    assert store is not None
    vectors = unit_vectors(50_000, embedder.dimension, rng)
    rows = rows_for(filler_texts(50_000, rng), ["bulk"] * 50_000, vectors, rng)
    t = time.perf_counter()
    for start in range(0, len(rows), 10_000):
        await store.insert(rows[start : start + 10_000])
    insert_rate = len(rows) / (time.perf_counter() - t)
    await memory.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "batch100_per_s": batch_rate,
        "single_per_s": single_rate,
        "store_insert_per_s": insert_rate,
        "n_batch": n_batch,
        "n_single": n_single,
    }


class _FailedOptimizes(logging.Handler):
    """Counts the store's "optimize failed" warnings (maintenance is best effort)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        if "optimize failed" in record.getMessage():
            self.count += 1
            self.last = record.getMessage()[:160]


async def measure_writes(
    size: int, embedder: LocalEmbedder, qvecs: dict[str, np.ndarray], writes: int, n: int
) -> dict[str, Any]:
    """Search latency before/after ``writes`` single-row inserts with maintenance on.

    The writes go to other users, so the caller's 200 memories stay the same and only the
    table's state (new fragments, index coverage, maintenance) differs between before/after.
    """
    tmp = Path(tempfile.mkdtemp(prefix="bench-writes-", dir=CACHE))
    copy = tmp / "store"
    shutil.copytree(store_dir(size), copy)
    before = await measure_search(copy, embedder, qvecs, n)
    store = LanceStore(str(copy), embedder.dimension, optimize_every=100)  # product defaults
    await store.open()
    failures = _FailedOptimizes()
    logging.getLogger("memory_core.store").addHandler(failures)
    rng = np.random.default_rng(99)
    users = max(2, size // PER_USER)
    vectors = unit_vectors(writes, embedder.dimension, rng)
    texts = filler_texts(writes, rng)
    owners = [f"user-{int(rng.integers(1, users)):05d}" for _ in range(writes)]
    rows = rows_for(texts, owners, vectors, rng)
    latencies = []
    t0 = time.perf_counter()
    for row in rows:
        t = time.perf_counter()
        await store.insert([row])
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - t0
    await store._wait_maintenance()  # noqa: SLF001 - let the last optimize finish
    after = await measure_search(copy, embedder, qvecs, n)
    t = time.perf_counter()
    await store.optimize()  # one maintenance pass with no writer racing it
    optimize_s = time.perf_counter() - t
    logging.getLogger("memory_core.store").removeHandler(failures)
    await store.close()
    settled = await measure_search(copy, embedder, qvecs, n)
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "size": size,
        "writes": writes,
        "write_per_s": writes / elapsed,
        "write_latency": _ms(latencies),
        "before": before,
        "after": after,
        "after_optimize": settled,
        "optimize_s": optimize_s,
        "failed_optimizes": failures.count,
        "failed_optimize_message": failures.last,
        "optimize_rounds": writes // 100,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    embedder = LocalEmbedder()
    sizes = [s for s in SIZES if s <= args.max_size]
    for size in sizes:
        await build_store(size, embedder, force=args.rebuild)
    if args.build_only:
        return {}
    qvecs = {q: (await embedder.embed([q], purpose="query"))[0] for q in QUERIES}
    result: dict[str, Any] = {**stamp(), "sizes": {}, "samples": args.samples}
    for size in sizes:
        info = json.loads((store_dir(size) / "built.json").read_text())
        print(f"search at {size:,} ...", flush=True)
        search = await measure_search(store_dir(size), embedder, qvecs, args.samples)
        result["sizes"][str(size)] = {"info": info, "search": search, "bytes": _du(store_dir(size))}
    print("add throughput ...", flush=True)
    result["add"] = await measure_add(embedder, args.add_batch, args.add_single)
    print(f"{args.writes:,} single writes at {sizes[-1]:,} ...", flush=True)
    result["writes"] = await measure_writes(sizes[-1], embedder, qvecs, args.writes, args.samples)
    embedder.close()
    return result


def _lance_error(message: str) -> str:
    """The LanceDB error of a logged failure, without the store path."""
    return message.split("lance error: ", 1)[-1].split(". Attempted", 1)[0]


def goal_line(r: dict[str, Any]) -> str:
    big = r["sizes"].get("1000000")
    if big is None:
        return "Goal (issue 7), per-user search at 1M ≤ 10 ms p99: not measured in this run."
    s = big["search"]
    vec, hyb = s["vector"]["p99"], s["memory.search"]["p99"]
    return (
        f"Goal (issue 7), per-user search at 1M ≤ 10 ms p99: vector search {vec:.1f} ms "
        f"({'met' if vec <= 10 else '**missed**'}); the hybrid `memory.search` the proxy runs "
        f"{hyb:.1f} ms ({'met' if hyb <= 10 else '**missed**'})."
    )


def render(r: dict[str, Any]) -> str:
    rows = []
    for size, entry in r["sizes"].items():
        s = entry["search"]
        rows.append(
            [
                f"{int(size):,}",
                f"{entry['info']['users']:,}",
                f"{s['vector']['p50']:.1f} / {s['vector']['p99']:.1f}",
                f"{s['fulltext']['p50']:.1f} / {s['fulltext']['p99']:.1f}",
                f"{s['memory.search']['p50']:.1f} / {s['memory.search']['p99']:.1f}",
                f"{entry['bytes'] / (int(size) / 100_000) / 1e6:.0f} MB",
            ]
        )
    a = r["add"]
    w = r["writes"]
    b, af, st = w["before"], w["after"], w["after_optimize"]
    parts = [
        f"Run {r['date']}, commit `{r['commit']}`, {r['machine']}.",
        "",
        "Per-user search latency in ms (p50 / p99) for the calling user (200 memories) as the "
        "store grows; users hold ~200 memories each. `vector` is the prefiltered exact cosine "
        "search (`LanceStore.vector_search`, limit 20), `fulltext` the BM25 search under the same "
        "prefilter, `memory.search` the whole `AsyncMemory.search` the proxy calls (both run "
        "concurrently, fused with RRF, threshold 0.75, limit 8) with the query embedding excluded "
        f"(pre-computed). {r['samples']} sequential searches each, after 10 warm-up searches.",
        "",
        table(["memories", "users", "vector", "fulltext", "memory.search", "disk per 100k"], rows),
        "",
        "Add throughput, `AsyncMemory.add(..., infer=False)` with the default local embedder "
        "(embedding included), into an empty store:",
        "",
        table(
            ["how", "memories/s"],
            [
                [
                    f"100 messages per call ({a['n_batch']:,} memories)",
                    f"{a['batch100_per_s']:.0f}",
                ],
                [f"1 message per call ({a['n_single']} memories)", f"{a['single_per_s']:.1f}"],
                [
                    "`LanceStore.insert`, 10k rows per call, vectors given (bulk import)",
                    f"{a['store_insert_per_s']:,.0f}",
                ],
            ],
        ),
        "",
        f"Search latency before and after {w['writes']:,} single-row writes (to other users; "
        f"the caller keeps its 200 memories) into the {w['size']:,}-memory store with "
        "maintenance on (product defaults: `optimize()` in the background every 100 writes, "
        f"1 h version retention). Writes ran at {w['write_per_s']:.0f}/s (p50 "
        f"{w['write_latency']['p50']:.1f} ms, p99 {w['write_latency']['p99']:.1f} ms per "
        f"write). {w['failed_optimizes']} of ~{w['optimize_rounds']} background `optimize()` "
        "calls failed"
        + (
            f" (`{_lance_error(w['failed_optimize_message'])}`): LanceDB could not commit the "
            "compaction/index update while single-row appends kept committing, so new rows "
            "piled up outside the indexes and fragments"
            if w["failed_optimizes"]
            else ""
        )
        + f". Last column: after one `optimize()` with no writer racing it "
        f"({w['optimize_s']:.1f} s).",
        "",
        table(
            ["search (ms)", "before p50 / p99", "after p50 / p99", "after optimize p50 / p99"],
            [
                [
                    name,
                    f"{b[name]['p50']:.1f} / {b[name]['p99']:.1f}",
                    f"{af[name]['p50']:.1f} / {af[name]['p99']:.1f}",
                    f"{st[name]['p50']:.1f} / {st[name]['p99']:.1f}",
                ]
                for name in ("vector", "fulltext", "memory.search")
            ],
        ),
        "",
        goal_line(r),
        "",
        "Notes: a LanceDB query costs ~3 ms here before any data is read (planning, "
        "scheduling on its runtime), which is why 10k and 1M differ by little: the BTREE "
        "prefilter on `user_id` reads only the user's rows. Disk is dominated by the 384-dim "
        "float32 vectors (1.5 KB per memory). `add(infer=False)` is bound by the local "
        "embedder (CPU); `LanceStore.insert` alone takes tens of thousands of rows/s. Single "
        "writes include the background `optimize()` every 100 writes (compaction + index "
        "update on the 1M table), which shows as the write p99.",
        "",
        "![Per-user search latency vs store size](docs/bench-store-latency.png)",
        "",
        "Reproduce: `python -m bench store` (builds the cached stores under `bench/.cache/` on "
        "first use).",
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench store",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--max-size", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--writes", type=int, default=10_000)
    parser.add_argument("--add-batch", type=int, default=2_000)
    parser.add_argument("--add-single", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="short validation run")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_size = min(args.max_size, 100_000)
        args.samples, args.writes, args.add_batch, args.add_single = 50, 500, 200, 20
    result = asyncio.run(run(args))
    if not result:
        return 0
    save_result("store-quick" if args.quick else "store", result)
    text = render(result)
    print(text)
    if not args.no_write and not args.quick:
        write_section("Store", text)
        from .chart import draw

        for path in draw(("store",)):
            print(f"wrote {path}")
    return 0
