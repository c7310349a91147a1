"""Scale-out: the shared store and queue against the embedded ones (``python -m bench scaleout``).

Starts its own servers on loopback, as the tests do: moto's S3 server, redis-server (AOF,
``appendfsync always``), the fake LLM, and ``memproxy serve`` replicas.

- Store: per-user search latency p50/p99 and ``add(infer=False)`` throughput through
  ``AsyncMemory``, on the S3 server and on the local disk, in the same run.
- Learning throughput: ``--chats`` chats spread over 1, 2 and 3 replicas, each set up with the
  Redis queue (store on S3) and with the SQLite queue (a shared local data dir); jobs/s from
  the first chat to the empty queue.
- Read-after-write visibility: a memory written through one replica, polled on another
  (``read_consistency_interval_s`` 0.5), on S3 + Redis.

Prints tables, saves ``bench/results/scaleout.json`` and (unless ``--no-write``) the
"Scale-out" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from memory_core import AsyncMemory
from tests.queue_procs import FakeProcess, percentile, send_chats
from tests.redis_server import RedisServer
from tests.s3_server import S3Server
from tests.scaleout_procs import (
    READ_CONSISTENCY_S,
    add_memory,
    memory_texts,
    replica_config,
    start_replicas,
)

from .common import save_result, stamp, table, write_section


async def store_run(
    uri: str, options: dict[str, str], *, users: int, per_user: int, searches: int
) -> dict[str, Any]:
    memory = AsyncMemory.from_config({"storage_uri": uri, "storage_options": options})
    await memory.open()
    try:
        started = time.perf_counter()
        for n in range(users * per_user):
            await memory.add(
                f"Fact number {n} about topic {n % 17}", user_id=f"bench-{n % users}", infer=False
            )
        write_s = time.perf_counter() - started
        latencies = []
        for n in range(searches):
            began = time.perf_counter()
            await memory.search(f"topic {n % 17}", user_id=f"bench-{n % users}", limit=5)
            latencies.append(time.perf_counter() - began)
    finally:
        await memory.close()
    writes = users * per_user
    return {
        "writes": writes,
        "writes_per_s": round(writes / write_s, 1),
        "search_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "search_p99_ms": round(percentile(latencies, 99) * 1000, 1),
    }


def learning_run(
    work: Path,
    fake: FakeProcess,
    *,
    backend: str,
    store: str,
    replicas: int,
    chats: int,
    s3: S3Server,
    redis: RedisServer,
) -> dict[str, Any]:
    """Learning throughput of ``replicas`` on one queue ``backend`` and one ``store`` (s3 or
    local): the queue compared alone on the local store, the deployment on S3."""
    name = f"{backend}-{store}-{replicas}"
    directory = work / name
    directory.mkdir()
    on_s3 = store == "s3"
    storage = s3.uri(f"bench-{uuid.uuid4().hex[:8]}") if on_s3 else directory / "data"
    config = replica_config(
        directory / "proxy.yaml",
        fake_url=fake.url,
        s3=s3 if on_s3 else None,
        redis=redis if backend == "redis" else None,
        storage=storage,
        memory={"read_consistency_interval_s": READ_CONSISTENCY_S if on_s3 else 0},
    )
    servers = start_replicas(config, directory, replicas)
    try:
        exchanges = [
            (f"learn-{n % 30}", f"My friend number {n} is called Name{n}") for n in range(chats)
        ]
        started = time.monotonic()
        with ThreadPoolExecutor(replicas) as pool:
            outcomes = list(
                pool.map(
                    lambda i: send_chats(servers[i].url, exchanges[i::replicas], workers=4),
                    range(replicas),
                )
            )
        if any(outcome.failed for outcome in outcomes):
            raise RuntimeError(f"chats failed: {[o.failed[:2] for o in outcomes]}")
        while True:
            queue = servers[0].ready()["queue"]
            if queue["pending"] + queue["leased"] == 0:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        if queue["dead"]:
            raise RuntimeError(f"{queue['dead']} jobs died")
    finally:
        for server in servers:
            server.stop()
    return {
        "backend": backend,
        "store": store,
        "replicas": replicas,
        "jobs": chats,
        "seconds": round(elapsed, 1),
        "jobs_per_s": round(chats / elapsed, 1),
    }


def visibility_run(
    work: Path, fake: FakeProcess, *, s3: S3Server, redis: RedisServer, probes: int
) -> dict[str, Any]:
    directory = work / "visibility"
    directory.mkdir()
    config = replica_config(
        directory / "proxy.yaml",
        fake_url=fake.url,
        s3=s3,
        redis=redis,
        storage=s3.uri(f"vis-{uuid.uuid4().hex[:8]}"),
    )
    servers = start_replicas(config, directory, 2)
    delays = []
    try:
        for n in range(probes):
            user = f"vis-{n}-{uuid.uuid4().hex[:6]}"
            add_memory(servers[n % 2].url, user, f"I keep bees number {n}")
            written = time.monotonic()
            while not memory_texts(servers[(n + 1) % 2].url, user):
                time.sleep(0.01)
            delays.append(time.monotonic() - written)
    finally:
        for server in servers:
            server.stop()
    return {
        "probes": probes,
        "interval_s": READ_CONSISTENCY_S,
        "p50_ms": round(percentile(delays, 50) * 1000, 1),
        "p99_ms": round(percentile(delays, 99) * 1000, 1),
        "max_ms": round(max(delays) * 1000, 1),
    }


def render(result: dict[str, Any]) -> str:
    info = result["stamp"]
    local, remote = result["store"]["local"], result["store"]["s3"]
    ratio = lambda key: round(remote[key] / local[key], 2) if local[key] else "-"  # noqa: E731
    lines = [
        f"Measured {info['date']} at commit {info['commit']} on {info['machine']}.",
        f"Command: `{result['command']}`. S3 is moto's server on loopback (in-memory objects),",
        "Redis is redis-server 7 with `appendfsync always`; the fake LLM answers at once.",
        "",
        table(
            ["store", "add/s", "search p50 ms", "search p99 ms"],
            [
                [
                    "local disk",
                    local["writes_per_s"],
                    local["search_p50_ms"],
                    local["search_p99_ms"],
                ],
                [
                    "S3 (moto)",
                    remote["writes_per_s"],
                    remote["search_p50_ms"],
                    remote["search_p99_ms"],
                ],
                [
                    "S3 / local",
                    ratio("writes_per_s"),
                    ratio("search_p50_ms"),
                    ratio("search_p99_ms"),
                ],
            ],
        ),
        "",
        table(
            ["queue (store)", "replicas", "jobs", "seconds", "jobs/s"],
            [
                [
                    ("Redis" if r["backend"] == "redis" else "SQLite")
                    + (
                        " (S3)"
                        if r.get("store", "s3" if r["backend"] == "redis" else "") == "s3"
                        else " (local dir)"
                    ),
                    r["replicas"],
                    r["jobs"],
                    r["seconds"],
                    r["jobs_per_s"],
                ]
                for r in result["learning"]
            ],
        ),
        "",
        table(
            [
                "read-after-write across replicas",
                "probes",
                "interval s",
                "p50 ms",
                "p99 ms",
                "max ms",
            ],
            [
                [
                    "S3 + Redis",
                    *(
                        result["visibility"][k]
                        for k in ("probes", "interval_s", "p50_ms", "p99_ms", "max_ms")
                    ),
                ]
            ],
        ),
        "",
        "Redis and SQLite on the same local data dir compare the two queues alone; Redis on S3 is",
        "the scale-out deployment, where the store's commit rate (`add/s`) bounds learning when",
        "the LLM is fast.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench scaleout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--per-user", type=int, default=20)
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--chats", type=int, default=150)
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument("--probes", type=int, default=30)
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    os.environ.update(S3Server.env())
    result: dict[str, Any] = {
        "stamp": stamp(),
        "command": "python -m bench scaleout " + " ".join(argv or []),
    }
    with TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        work = Path(tmp)
        s3 = S3Server(work / "s3").start()
        redis = RedisServer(work / "redis").start()
        try:
            sizes = dict(users=args.users, per_user=args.per_user, searches=args.searches)
            result["store"] = {
                "local": asyncio.run(store_run(str(work / "local-store"), {}, **sizes)),
                "s3": asyncio.run(store_run(s3.uri("bench-store"), s3.storage_options(), **sizes)),
            }
            with FakeProcess() as fake:
                result["learning"] = [
                    learning_run(
                        work,
                        fake,
                        backend=backend,
                        store=store,
                        replicas=int(n),
                        chats=args.chats,
                        s3=s3,
                        redis=redis,
                    )
                    for backend, store in (("redis", "s3"), ("redis", "local"), ("sqlite", "local"))
                    for n in args.replicas.split(",")
                ]
                result["visibility"] = visibility_run(
                    work, fake, s3=s3, redis=redis, probes=args.probes
                )
        finally:
            redis.stop()
            s3.stop()
    text = render(result)
    print(text)
    save_result("scaleout", result)
    if not args.no_write:
        write_section("Scale-out", text)
    return 0
