"""Learning queue: drain rate and enqueue → searchable lag (``python -m bench queue``).

Runs the fake LLM (``tests/fake_upstream.py``, answering instantly unless ``--llm-delay``) and
``memproxy serve`` as separate processes, like production.

- Drain rate: for each ``--concurrency`` value, a fresh data dir and server; ``--jobs``
  learning jobs over ``--users`` users are written straight into the queue's SQLite file (the
  way ``chat`` enqueues them), and the time until the queue is empty gives jobs/s. Each job is
  a full ``AsyncMemory.add(infer=True)``: extraction call, local embedding, similar-memory
  search, update call when the user has memories, LanceDB writes and history rows.
- Lag: with an idle queue, ``--probes`` chats each state a new fact for a new user; from the
  moment the chat answer is back, the same user asks again (``x-memory-mode: read``) until the
  proxy injects the fact: enqueue → searchable through the proxy, p50/p95.

Prints a table, saves ``bench/results/queue.json`` and (unless ``--no-write``) the
"Learning queue" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx

from memory_core.queue import SqliteJobStore
from memory_core.types import Scope
from proxy.learning import learning_payload
from tests.queue_procs import (
    FakeProcess,
    ProxyProcess,
    percentile,
    queue_file,
    remaining,
    write_config,
)

from .common import save_result, stamp, table, write_section


def enqueue_jobs(storage: Path, jobs: int, users: int) -> float:
    """Write ``jobs`` exchanges into the queue file; returns the time the first was written."""
    store = SqliteJobStore(queue_file(storage))
    try:
        started = time.monotonic()
        for n in range(jobs):
            user = f"drain-{n % users}"
            text = f"My badge number {n} is B{n}"
            payload = learning_payload(
                Scope(user).as_dict(),
                [{"role": "user", "content": text}, {"role": "assistant", "content": "OK"}],
                "fake-model",
            )
            store.enqueue(uuid.uuid4().hex, user, payload)
        return started
    finally:
        store.close()


def drain(
    fake: FakeProcess, work: Path, *, concurrency: int, jobs: int, users: int
) -> dict[str, Any]:
    storage = work / f"drain-c{concurrency}"
    config = write_config(
        work / f"drain-c{concurrency}.yaml",
        fake_url=fake.url,
        storage=storage,
        queue={"concurrency": concurrency},
    )
    proxy = ProxyProcess(config, work / f"drain-c{concurrency}.log")
    try:
        proxy.start()
        started = enqueue_jobs(storage, jobs, users)
        while remaining(proxy) > 0:
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        stats = proxy.ready()["queue"]
        if stats["dead"]:
            raise RuntimeError(f"{stats['dead']} jobs died:\n{proxy.log()}")
    finally:
        proxy.stop()
    return {
        "concurrency": concurrency,
        "jobs": jobs,
        "users": users,
        "seconds": round(elapsed, 2),
        "jobs_per_s": round(jobs / elapsed, 1),
    }


def probe(url: str, index: int, timeout_s: float = 60.0) -> float:
    """Seconds from a fact's chat answer to the fact being injected for that user."""
    user = f"probe-{index}-{uuid.uuid4().hex[:6]}"
    code = uuid.uuid4().hex[:8]
    with httpx.Client(timeout=30) as client:

        def ask(text: str, mode: str) -> str:
            response = client.post(
                f"{url}/v1/chat/completions",
                headers={"x-memory-mode": mode},
                json={
                    "model": "fake-model",
                    "user_id": user,
                    "messages": [{"role": "user", "content": text}],
                },
            )
            response.raise_for_status()
            return str(response.json()["choices"][0]["message"]["content"])

        ask(f"My badge code is {code}", "auto")
        answered = time.perf_counter()
        deadline = answered + timeout_s
        while time.perf_counter() < deadline:
            if code in ask("What is my badge code?", "read"):
                return time.perf_counter() - answered
            time.sleep(0.005)
    raise RuntimeError(f"probe {index}: fact not searchable after {timeout_s}s")


def lag(fake: FakeProcess, work: Path, *, probes: int, parallel: int) -> dict[str, Any]:
    storage = work / "lag"
    config = write_config(
        work / "lag.yaml",
        fake_url=fake.url,
        storage=storage,
        # No recall threshold: the probe user's only memory is injected as soon as it exists.
        memory={"recall": {"threshold": None}},
    )
    proxy = ProxyProcess(config, work / "lag.log")
    try:
        proxy.start()
        probe(proxy.url, -1)  # warm up
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            lags = list(pool.map(lambda i: probe(proxy.url, i), range(probes)))
    finally:
        proxy.stop()
    return {
        "probes": probes,
        "parallel": parallel,
        "p50_ms": round(percentile(lags, 50) * 1000, 1),
        "p95_ms": round(percentile(lags, 95) * 1000, 1),
        "max_ms": round(max(lags) * 1000, 1),
    }


def render(result: dict[str, Any]) -> str:
    info = result["stamp"]
    lines = [
        f"Measured {info['date']} at commit {info['commit']} on {info['machine']}.",
        f"Command: `{result['command']}`. Fake LLM delay {result['llm_delay_s']} s per call.",
        "",
        table(
            ["concurrency", "jobs", "users", "seconds", "jobs/s"],
            [
                [r["concurrency"], r["jobs"], r["users"], r["seconds"], r["jobs_per_s"]]
                for r in result["drain"]
            ],
        ),
        "",
        table(
            ["enqueue → searchable", "probes", "parallel", "p50 ms", "p95 ms", "max ms"],
            [
                [
                    "idle queue",
                    result["lag"]["probes"],
                    result["lag"]["parallel"],
                    result["lag"]["p50_ms"],
                    result["lag"]["p95_ms"],
                    result["lag"]["max_ms"],
                ]
            ],
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench queue",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated values")
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=4, help="probes in flight at once")
    parser.add_argument("--llm-delay", type=float, default=0.0, help="seconds per LLM call")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    concurrencies = [int(value) for value in args.concurrency.split(",") if value]
    result: dict[str, Any] = {
        "stamp": stamp(),
        "command": "python -m bench queue " + " ".join(argv or []),
        "llm_delay_s": args.llm_delay,
        "drain": [],
    }
    with (
        TemporaryDirectory(prefix="bench-queue-") as tmp,
        FakeProcess(extract_delay_s=args.llm_delay) as fake,
    ):
        work = Path(tmp)
        for concurrency in concurrencies:
            row = drain(fake, work, concurrency=concurrency, jobs=args.jobs, users=args.users)
            print(f"drain: {row}", flush=True)
            result["drain"].append(row)
        result["lag"] = lag(fake, work, probes=args.probes, parallel=args.parallel)
        print(f"lag: {result['lag']}", flush=True)
    save_result("queue", result)
    text = render(result)
    print(text)
    if not args.no_write:
        write_section("Learning queue", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
