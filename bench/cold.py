"""Cold scopes: the first request of users in no cache, with the scope cache's settings side by
side (issue 17: a cold user stays within the p99 goal).

    python -m bench cold              # ~3 min, writes the "Cold scopes" section
    python -m bench cold --concurrency 1,4
    python -m bench cold --no-write

Each variant is a fresh ``memproxy serve`` on the cached 1M-memory store (``python -m bench
store --build-only``) in front of the fast fake upstream, memory in ``read`` mode. At
concurrency 1, every request is for a user never searched before in that process (each
variant and round gets its own users, so no variant meets rows another one's scans brought
into LanceDB's caches). Variants run in turn, then again in the reverse order: the host's
drift shows as the difference between the rounds. ``--concurrency 1,4`` repeats it with that
many connections, each sending its next cold user when its previous answer ended: a burst of
new users on two cores, where embeddings and loads queue behind each other and loads beyond
``cache.max_loads`` go to LanceDB's queries (at c > 1 also a variant loading one at a time).
One variant runs on a copy of the store whose scattered users' rows the store's maintenance
moved together (``memory_core.store_layout``; made once beside the store, ~20 min at 1M).
Before each variant's proxy starts, the store's files are evicted from the OS page cache, so
the users' rows come from the disk, as for a user in no cache at all (``--page-cache warm``:
read through into it instead, as on a host with the RAM to keep the store there).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from memory_core.store import LanceStore
from memory_core.store_layout import scattered_users

from .common import (
    PY,
    ROOT,
    fast_upstream,
    free_port,
    process,
    save_result,
    stamp,
    table,
    wait_http,
    write_section,
)
from .loadgen import percentiles, stream_series
from .overhead import bodies, memproxy_config, parse_server_timing
from .store import store_dir
from .synthetic import QUERIES

# name -> the memory.cache settings of that variant and the store's row layout: "written"
# (each user's rows where their inserts put them, scattered) or "together" (every scattered
# user's rows moved together by the store's maintenance, ``memory_core.store_layout``)
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "cache on: the scope's records load for its first search (default)": ({}, "written"),
    "cache on, each user's rows moved together by maintenance": ({}, "together"),
    "cache off: LanceDB's vector and full-text queries": ({"enabled": False}, "written"),
}


def variants(concurrency: int) -> dict[str, tuple[dict[str, Any], str]]:
    """The variants run at ``concurrency``: above 1 also the cache loading one scope at a time
    (the others' searches go to the store meanwhile; the default loads up to 4 at once)."""
    if concurrency == 1:
        return VARIANTS
    first, *rest = VARIANTS.items()
    one = {"cache on, one load at a time (max_loads 1)": ({"max_loads": 1}, "written")}
    return dict([first, *one.items(), *rest])


def rows_together(storage: Path) -> Path:
    """A copy of ``storage`` whose users' rows the product's store maintenance moved together
    (turn after turn until no user is scattered), made once and kept beside it."""
    together = storage.with_name(storage.name + "-together")
    source = json.loads((storage / "built.json").read_text())
    if (together / "built.json").exists():
        made = json.loads((together / "built.json").read_text())
        if {k: v for k, v in made.items() if k != "rows_together"} == source:
            return together  # else the store was rebuilt since: make the copy again
    if together.exists():
        shutil.rmtree(together)
    partial = storage.with_name(storage.name + "-together.partial")
    if partial.exists():
        shutil.rmtree(partial)
    shutil.copytree(storage, partial)
    started = time.perf_counter()
    turns = asyncio.run(_move_rows_together(partial))
    moved = {"turns": turns, "seconds": round(time.perf_counter() - started, 1)}
    (partial / "built.json").write_text(json.dumps({**source, "rows_together": moved}, indent=2))
    partial.rename(together)
    return together


async def _move_rows_together(path: Path) -> int:
    store = LanceStore(str(path), 384, cleanup_retention_s=0, cluster_budget_s=120)
    await store.open()
    turns, before = 0, None
    while True:
        layout = await store._table().query().select(["user_id", "_rowaddr"]).to_arrow()
        users = layout.column("user_id").combine_chunks()
        left = len(scattered_users(users, layout.column("_rowaddr").to_numpy()))
        print(f"  store maintenance turn {turns}: {left} users scattered", flush=True)
        if not left:
            break
        if left == before:
            raise SystemExit(f"store maintenance moved no user's rows in {path} (its log says why)")
        before = left
        await store.optimize()
        turns += 1
    await store.close()
    return turns


def set_page_cache(storage: Path, state: str) -> int:
    """Put the store's files in the OS page cache (``warm``: read them through once) or take
    them out of it (``evicted``: ``POSIX_FADV_DONTNEED``, no root needed; a virtual disk may
    still answer from its host's cache); returns the bytes of the files."""
    total = 0
    for path in storage.rglob("*"):
        if not path.is_file():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            if state == "warm":
                while os.read(fd, 1 << 24):
                    pass
            else:
                os.fsync(fd)  # dirty pages are not dropped
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        total += path.stat().st_size
    return total


def _stats(values: list[float]) -> dict[str, float]:
    return percentiles(values, (50, 90, 99))


def measure(
    variant: tuple[dict[str, Any], str],
    users: list[str],
    storage: Path,
    upstream: str,
    tmp: Path,
    concurrency: int = 1,
    page_cache: str = "evicted",
) -> dict[str, Any]:
    """One fresh proxy with the variant's cache settings on the store in its row layout; one
    request per user over ``concurrency`` connections; the store's files put in or out of the
    OS page cache first (``set_page_cache``)."""
    cache, layout = variant
    if layout == "together":
        storage = rows_together(storage)
    set_page_cache(storage, page_cache)
    port = free_port()
    cfg = memproxy_config(upstream, upstream, port, storage)
    cfg["memory"]["cache"] = {**cfg["memory"]["cache"], **cache}
    path = tmp / f"memproxy-{port}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with process(
        [PY, "-m", "proxy.cli", "serve", "--config", str(path)],
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        log=tmp / f"memproxy-{port}.log",
        cwd=ROOT,
    ) as proc:
        wait_http(f"http://127.0.0.1:{port}/ready", timeout_s=300, proc=proc)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        headers = {"authorization": "Bearer sk-fake", "x-memory-mode": "read"}
        # The process's first request pays one-time costs (imports, the engine's first run):
        # a user outside every measured set takes it.
        stream_series(
            url,
            bodies("fake-model", stream=False, user=True, user_id="user-04999")[:1],
            headers,
            n=1,
            warmup=0,
        )
        chosen = [
            bodies("fake-model", stream=False, user=True, user_id=u)[i % len(QUERIES)]
            for i, u in enumerate(users)
        ]
        samples = stream_series(
            url, chosen, headers, n=len(chosen), warmup=0, concurrency=concurrency
        )
    timings = [parse_server_timing(s.headers.get("server-timing", "")) for s in samples]
    return {
        "n": len(samples),
        "overhead": _stats([float(s.headers.get("x-memory-overhead-ms", "nan")) for s in samples]),
        "embed": _stats([t.get("embed", float("nan")) for t in timings]),
        "search": _stats([t.get("search", float("nan")) for t in timings]),
        "recalled": float(np.mean([int(s.headers.get("x-memory-recalled", "0")) for s in samples])),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    storage = store_dir(args.store_size)
    if not (storage / "built.json").exists():
        raise SystemExit("build the store first: python -m bench store --build-only")
    info = json.loads((storage / "built.json").read_text())
    pool = [f"user-{u:05d}" for u in range(1, min(info["users"], 4999))][args.skip_users :]
    together = rows_together(storage)  # made before any timing (~20 min the first time)
    moved = json.loads((together / "built.json").read_text())["rows_together"]
    order = [
        (name, variant, concurrency, round_)
        for concurrency in args.concurrency
        for round_, named in enumerate(
            (variants(concurrency), dict(reversed(variants(concurrency).items()))), 1
        )
        for name, variant in named.items()
    ]
    if len(order) * args.users > len(pool):
        raise SystemExit(f"the store has {len(pool)} other users: use fewer --users")
    tmp = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    result: dict[str, Any] = {
        **stamp(),
        "store": info,
        "users_per_run": args.users,
        "skip_users": args.skip_users,
        "concurrency": args.concurrency,
        "page_cache": args.page_cache,
        "rows_together": moved,
        "runs": [],
    }
    with fast_upstream(chunks=20) as upstream:
        for i, (name, variant, concurrency, round_) in enumerate(order):
            users = pool[i * args.users : (i + 1) * args.users]
            run_result = measure(
                variant, users, storage, upstream, tmp, concurrency, page_cache=args.page_cache
            )
            result["runs"].append(
                {"variant": name, "concurrency": concurrency, "round": round_, **run_result}
            )
            o = run_result["overhead"]
            print(
                f"  {name:<68} c={concurrency} round {round_}: overhead p50 {o['p50']:6.2f} "
                f"p90 {o['p90']:6.2f} p99 {o['p99']:6.2f} ms",
                flush=True,
            )
    return result


def render(r: dict[str, Any]) -> str:
    rows = []
    for run_result in r["runs"]:
        o, e, s = run_result["overhead"], run_result["embed"], run_result["search"]
        rows.append(
            [
                run_result["variant"],
                run_result.get("concurrency", 1),
                run_result["round"],
                f"{o['p50']:.1f} / {o['p90']:.1f} / {o['p99']:.1f}",
                f"{e['p50']:.1f}",
                f"{s['p50']:.1f} / {s['p99']:.1f}",
                f"{run_result['recalled']:.1f}",
            ]
        )
    size = r["store"]["size"]
    connections = r.get("concurrency", [1])
    command = "python -m bench cold" + (
        f" --concurrency {','.join(map(str, connections))}" if connections != [1] else ""
    )
    if r.get("skip_users"):
        command += f" --skip-users {r['skip_users']}"
    warm = r.get("page_cache") == "warm"
    if warm:
        command += " --page-cache warm"
    page_cache = (
        "the store's files read through into the OS page cache before each variant's proxy "
        "starts (a host with the RAM to keep the store there)"
        if warm
        else "the store's files evicted from the OS page cache before each variant's proxy "
        "starts (`posix_fadvise` DONTNEED), so the users' rows are read from the disk"
    )
    return "\n\n".join(
        [
            f"Run {r['date']}, commit `{r['commit']}`, {r['machine']}. `{command}`: "
            f"a fresh `memproxy serve` per variant on the {size:,}-memory store, "
            f"{r['users_per_run']} users per run, each searched for the first time in that "
            "process (its own users per run); variants in turn, then in reverse order, at each "
            "number of connections (each sends its next cold user when its answer ended); "
            f"{page_cache}. "
            + together_note(r)
            + "`recalled` is 0: the other users' memories are word salad with random vectors "
            "and none passes the similarity threshold, but every search runs in full. "
            "With the cache on, a cold search reads the scope's packed records (one column) "
            "while the query is embedded and ranks them in process; off, it runs LanceDB's "
            "prefiltered vector and full-text queries (every column of the rows they return).",
            table(
                [
                    "variant",
                    "connections",
                    "round",
                    "memory overhead p50 / p90 / p99 ms",
                    "embed p50",
                    "search p50 / p99",
                    "recalled",
                ],
                rows,
            ),
        ]
    )


def together_note(r: dict[str, Any]) -> str:
    moved = r.get("rows_together")
    if not moved:
        return ""
    return (
        "The variant with each user's rows moved together runs on a copy of the store after "
        f"the store's own maintenance turns (`cluster_budget_s` 120; {moved['turns']} turns, "
        f"{moved['seconds']:.0f} s) left no user scattered. "
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cold", description=__doc__)
    parser.add_argument("--users", type=int, default=150, help="cold users per run")
    parser.add_argument(
        "--skip-users",
        type=int,
        default=0,
        help="start this far into the store's users (a rerun on users no earlier run read)",
    )
    parser.add_argument("--store-size", type=int, default=1_000_000)
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(c) for c in text.split(",")],
        default=[1],
        help="connections, comma-separated (e.g. 1,4): each a set of runs",
    )
    parser.add_argument(
        "--page-cache",
        choices=("evicted", "warm"),
        default="evicted",
        help="the store's files out of the OS page cache before each run (default) or in it",
    )
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    result = run(args)
    body = render(result)
    print(body)
    save_result("cold", result)
    if not args.no_write:
        write_section("Cold scopes (issue 17)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
