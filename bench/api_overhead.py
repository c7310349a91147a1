"""Memory-off overhead of each API route, in one run: Chat Completions, OpenAI Responses and
Anthropic Messages, each against the same fast fake upstream answering that API directly.

    python -m bench apis            # full run (~3 minutes), writes "Overhead by API"
    python -m bench apis --quick    # short validation run (docs untouched)

The method is bench/overhead.py's (its ``measure``): ``wrk`` at concurrency 1/16/64 for rates
and latency percentiles, a raw asyncio client at concurrency 1 for streaming time to first
byte; the same 4-message conversation in each API's shape. memproxy runs as ``memproxy
serve`` (one uvicorn worker) with ``X-Memory-Mode: off`` and a user named, so each row is the
pipeline's own cost on that route (parse, identity, routing, forward, relay) over the raw
relays (OpenAI-compatible for chat and responses, Anthropic-shaped for messages).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

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
from .loadgen import wrk_available
from .overhead import CONCURRENCY, Target, measure

APIS = (
    ("chat", "/v1/chat/completions", "fake-model"),
    ("responses", "/v1/responses", "fake-model"),
    ("messages", "/v1/messages", "fake-claude"),
)


def config(upstream: str, port: int, storage: Path) -> dict[str, Any]:
    openai_params = {"model": "openai/fake-model", "api_base": upstream, "api_key": "sk-fake"}
    anthropic_params = {"model": "anthropic/fake-model", "api_base": upstream, "api_key": "sk-fake"}
    return {
        "model_list": [
            {"model_name": "fake-model", "litellm_params": openai_params},
            {"model_name": "fake-claude", "litellm_params": anthropic_params},
        ],
        "memory": {"storage_uri": str(storage), "embedder": {"provider": "local"}},
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
    }


def direct_url(upstream: str, api: str) -> str:
    if api == "messages":
        return upstream.removesuffix("/v1") + "/v1/messages"
    return f"{upstream}/{'chat/completions' if api == 'chat' else 'responses'}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not wrk_available():
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    tmp = Path(tempfile.mkdtemp(prefix="bench-apis-"))
    result: dict[str, Any] = {**stamp(), "duration_s": args.duration, "load": [os.getloadavg()[0]]}
    with fast_upstream(chunks=20) as upstream:
        port = free_port()
        cfg = tmp / "memproxy.yaml"
        cfg.write_text(yaml.safe_dump(config(upstream, port, tmp / "data")))
        env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        cmd = [PY, "-m", "proxy.cli", "serve", "--config", str(cfg)]
        with process(cmd, env=env, log=tmp / "memproxy.log", cwd=ROOT) as proxy:
            wait_http(f"http://127.0.0.1:{port}/ready", timeout_s=300, proc=proxy)
            auth = {"authorization": "Bearer sk-fake", "x-api-key": "sk-fake"}
            off = {**auth, "x-memory-mode": "off"}
            targets: list[Target] = []
            for api, path, model in APIS:
                targets.append(
                    Target(f"direct {api}", direct_url(upstream, api), model, auth, api=api)
                )
                targets.append(
                    Target(
                        f"memproxy {api}, memory off",
                        f"http://127.0.0.1:{port}{path}",
                        model,
                        off,
                        with_user=True,
                        api=api,
                    )
                )
            result.update(measure(targets, args))
    result["load"].append(os.getloadavg()[0])
    return result


def render(r: dict[str, Any]) -> str:
    T = r["targets"]
    latency, rates, streams = [], [], []
    for api, path, _ in APIS:
        direct, mine = T[f"direct {api}"], T[f"memproxy {api}, memory off"]
        d1, m1 = direct["wrk"]["1"], mine["wrk"]["1"]
        latency.append(
            [
                f"`{path}`",
                mine["upstream"],
                f"{d1['p50_ms']:.2f} / {d1['p99_ms']:.2f}",
                f"{m1['p50_ms']:.2f} / {m1['p99_ms']:.2f}",
                f"{m1['p50_ms'] - d1['p50_ms']:+.2f} / {m1['p99_ms'] - d1['p99_ms']:+.2f}",
            ]
        )
        rates.append(
            [f"`{path}`"]
            + [
                f"{mine['wrk'][str(c)]['rps']:,.0f} (direct {direct['wrk'][str(c)]['rps']:,.0f})"
                for c in CONCURRENCY
            ]
        )
        ds, ms = direct["stream"], mine["stream"]
        streams.append(
            [
                f"`{path}`",
                str(ms["events"]),
                f"{ds['ttfb']['p50']:.2f}",
                f"{ms['ttfb']['p50']:.2f}",
                f"{ms['ttfb']['p50'] - ds['ttfb']['p50']:+.2f}",
                f"{ms['total']['p50'] - ds['total']['p50']:+.2f}",
            ]
        )
    return "\n".join(
        [
            f"Run {r['date']}, commit `{r['commit']}`, {r['machine']}.",
            "",
            'The three API routes in one run, the method of "Overhead" (`bench/overhead.py`\'s '
            "`measure`): each route and its direct baseline in front of the same fast fake "
            "upstream (`bench/fast_upstream.py`, answering Chat Completions, Responses and "
            "Messages with the same fixed reply and 20-chunk streams); the same 4-message "
            "conversation in each API's shape; memproxy (`memproxy serve`, one worker) with "
            f"`X-Memory-Mode: off` and a user named; `wrk` {r['duration_s']} s per cell. "
            f"Load average (1 min) at the start and end: {r['load'][0]:.1f} / {r['load'][1]:.1f} "
            "on 2 cores: with other work on the machine, compare the rows with each other "
            "(one run), not with other sections.",
            "",
            "**Latency at concurrency 1** (ms):",
            "",
            table(
                [
                    "route",
                    "upstream path",
                    "direct p50 / p99",
                    "memproxy p50 / p99",
                    "overhead p50 / p99",
                ],
                latency,
            ),
            "",
            "**Throughput**, requests/s (the direct baseline in brackets):",
            "",
            table(["route", *[f"c={c}" for c in CONCURRENCY]], rates),
            "",
            "**Streaming** (concurrency 1), ms:",
            "",
            table(
                [
                    "route",
                    "events",
                    "direct TTFB p50",
                    "memproxy TTFB p50",
                    "added TTFB p50",
                    "added total p50",
                ],
                streams,
            ),
            "",
            "Reproduce: `python -m bench apis` (about 3 minutes; `--quick` for a short check "
            "that leaves this file alone; needs `wrk`).",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench apis",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk cell")
    parser.add_argument("--stream-samples", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="short validation run")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.stream_samples = 3.0, 60
    result = run(args)
    save_result("apis-quick" if args.quick else "apis", result)
    text = render(result)
    print(text)
    if not args.no_write and not args.quick:
        write_section("Overhead by API", text)
    return 0
