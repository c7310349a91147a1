"""Cold scopes: the first request of users in no cache, with the scope cache's settings side by
side (issue 17: a cold user stays within the p99 goal).

    python -m bench cold              # ~3 min, writes the "Cold scopes" section
    python -m bench cold --no-write

Each variant is a fresh ``memproxy serve`` on the cached 1M-memory store (``python -m bench
store --build-only``) in front of the fast fake upstream, memory in ``read`` mode. At
concurrency 1, every request is for a user never searched before in that process (each
variant and round gets its own users, so no variant meets rows another one's scans brought
into LanceDB's caches). Variants run in turn, then again in the reverse order: the host's
drift shows as the difference between the rounds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

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

# name -> the memory.cache settings of that variant
VARIANTS: dict[str, dict[str, Any]] = {
    "cache on: the scope's records load for its first search (default)": {},
    "cache off: LanceDB's vector and full-text queries": {"enabled": False},
}


def _stats(values: list[float]) -> dict[str, float]:
    return percentiles(values, (50, 90, 99))


def measure(
    cache: dict[str, Any], users: list[str], storage: Path, upstream: str, tmp: Path
) -> dict[str, Any]:
    """One fresh proxy with ``cache``; one request per user, back to back."""
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
        samples = stream_series(url, chosen, headers, n=len(chosen), warmup=0)
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
    pool = [f"user-{u:05d}" for u in range(1, min(info["users"], 4999))]
    names = list(VARIANTS)
    order = names + names[::-1]
    if len(order) * args.users > len(pool):
        raise SystemExit(f"the store has {len(pool)} other users: use fewer --users")
    tmp = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    result: dict[str, Any] = {**stamp(), "store": info, "users_per_run": args.users, "runs": []}
    with fast_upstream(chunks=20) as upstream:
        for i, name in enumerate(order):
            users = pool[i * args.users : (i + 1) * args.users]
            run_result = measure(VARIANTS[name], users, storage, upstream, tmp)
            result["runs"].append({"variant": name, "round": 1 + i // len(names), **run_result})
            o = run_result["overhead"]
            print(
                f"  {name:<68} round {1 + i // len(names)}: overhead p50 {o['p50']:6.2f} "
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
                run_result["round"],
                f"{o['p50']:.1f} / {o['p90']:.1f} / {o['p99']:.1f}",
                f"{e['p50']:.1f}",
                f"{s['p50']:.1f} / {s['p99']:.1f}",
                f"{run_result['recalled']:.1f}",
            ]
        )
    size = r["store"]["size"]
    return "\n\n".join(
        [
            f"Run {r['date']}, commit `{r['commit']}`, {r['machine']}. `python -m bench cold`: "
            f"a fresh `memproxy serve` per variant on the {size:,}-memory store, concurrency 1, "
            f"{r['users_per_run']} users per run, each searched for the first time in that "
            "process (its own users per run); variants in turn, then in reverse order. "
            "`recalled` is 0: the other users' memories are word salad with random vectors "
            "and none passes the similarity threshold, but every search runs in full. "
            "With the cache on, a cold search reads the scope's packed records (one column) "
            "while the query is embedded and ranks them in process; off, it runs LanceDB's "
            "prefiltered vector and full-text queries (every column of the rows they return).",
            table(
                [
                    "variant",
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cold", description=__doc__)
    parser.add_argument("--users", type=int, default=150, help="cold users per run")
    parser.add_argument("--store-size", type=int, default=1_000_000)
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
