"""What a model learns through memproxy's pipeline (``python -m bench learning``).

The labelled corpus (bench/data/learning_corpus.json: 110 exchanges of 12 users in English,
French, Spanish, German, Italian and Portuguese: facts, junk, corrections, "forget" requests,
relative dates) goes through the real pipeline: one job per exchange in the durable learning
queue (``LearningQueue`` with the proxy's ``Learner``: retries with backoff, dead letters, the
job results log), ``AsyncMemory.add(infer=True)`` with the default local embedder on LanceDB.
Then each user's final store is scored (bench/learning_score.py): fact precision/recall
matched by embedding similarity, junk stored, update/delete/date accuracy, dead jobs,
placeholder or invented memories, LLM calls, tokens and latency per exchange.

``--model`` is a LiteLLM model name (its key from the usual environment variable) or the URL
of an OpenAI-compatible server (``http://127.0.0.1:8080/v1``: llama.cpp, vLLM, Ollama...).
Without it, the scripted fake LLM (tests/fake_upstream.py) answers on loopback.

Prints a table, saves ``bench/results/learning-<label>.json`` and (unless ``--no-write``)
rewrites the "Learning" section of BENCHMARKS.md from every saved learning result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memory_core import AsyncMemory, MemoryConfig
from memory_core.config import LLMConfig, QueueConfig
from memory_core.llm_client import ChatLLM, LiteLLMChat
from memory_core.queue import Job, LearningQueue
from memory_core.types import Scope
from proxy.learning import Learner, learning_payload
from proxy.metrics import Metrics

from .common import RESULTS, load_result, save_result, stamp, table, write_section
from .learning_score import (
    MATCH_THRESHOLD,
    Exchange,
    Matcher,
    Score,
    expected_final,
    latency_summary,
    load_corpus,
    score_user,
)


class OneModel:
    """The benchmark's ``ExtractionSource``: one model for every chat."""

    def __init__(self, llm: ChatLLM) -> None:
        self._llm = llm

    def for_chat_model(self, model: str) -> ChatLLM:
        return self._llm


def llm_config(args: argparse.Namespace, fake_url: str | None) -> LLMConfig:
    """The extraction model: the fake, an OpenAI-compatible URL, or a LiteLLM model name."""
    target = fake_url or args.model
    params: dict[str, Any] = {
        "max_tokens": args.max_tokens,
        "timeout": args.timeout,
        "structured_output": args.structured_output,
        "attempts": args.attempts,
    }
    if args.system_role != "auto":
        params["system_role"] = args.system_role == "true"
    if re.match(r"https?://", target):
        name = "fake-model" if fake_url else args.model_name
        params.update(model=f"openai/{name}", api_base=target, api_key=args.api_key or "sk-none")
    else:
        params.update(model=target, **({"api_key": args.api_key} if args.api_key else {}))
    return LLMConfig.model_validate(params)


@contextlib.contextmanager
def extraction_server(args: argparse.Namespace) -> Iterator[str | None]:
    """The scripted fake on loopback when no ``--model`` is given."""
    if args.model:
        yield None
        return
    from tests.fake_upstream import FakeUpstream

    with FakeUpstream() as fake:
        yield fake.url


async def run(args: argparse.Namespace, config: LLMConfig) -> dict[str, Any]:
    exchanges = [e for e in load_corpus() if args.per_user is None or e.index < args.per_user]
    exchanges = exchanges[: args.limit] if args.limit else exchanges
    chat = LiteLLMChat(config)
    with tempfile.TemporaryDirectory(prefix="bench-learning-") as tmp:
        memory = AsyncMemory(MemoryConfig(storage_uri=f"{tmp}/lancedb", llm=config))
        await memory.open()
        learner = Learner(memory, OneModel(chat), Metrics())
        seconds: dict[str, float] = {}

        async def timed(job: Job) -> dict[str, Any]:
            started = time.perf_counter()
            try:
                return await learner.handle(job)
            finally:
                seconds[job.id] = seconds.get(job.id, 0.0) + time.perf_counter() - started

        settings = QueueConfig(
            concurrency=args.concurrency,
            max_attempts=args.queue_attempts,
            backoff_base_s=0.1,
            backoff_max_s=2.0,
            lease_s=max(60.0, args.timeout * 4),
        )
        queue = LearningQueue(Path(tmp) / "queue.sqlite3", timed, settings)
        await queue.start()
        started = time.perf_counter()
        for exchange in exchanges:
            payload = learning_payload(Scope(exchange.user).as_dict(), exchange.messages, "bench")
            payload["timestamp"] = exchange.when.timestamp()
            await queue.enqueue(exchange.user, payload, job_id=exchange.job_id)
        drained = await queue.wait_idle(timeout=args.deadline_s)
        wall = time.perf_counter() - started
        outcomes = {row["id"]: row for row in reversed(queue.store.results(limit=100_000))}
        await queue.stop(grace_s=5)
        score = await score_run(memory, exchanges, outcomes, show=args.show)
        await memory.close()
    usage = chat.usage
    count = max(1, len(exchanges))
    return {
        **score.as_dict(),
        "drained": drained,
        "wall_s": round(wall, 1),
        "latency_per_exchange": latency_summary(list(seconds.values())),
        "tokens_per_exchange": {
            "prompt": round(usage.prompt_tokens / count, 1),
            "completion": round(usage.completion_tokens / count, 1),
        },
        "truncated_answers": usage.truncated,
        "structured_output": chat.capabilities.structured_output,
        "system_role": chat.capabilities.system_role,
    }


async def score_run(
    memory: AsyncMemory,
    exchanges: list[Exchange],
    outcomes: dict[str, dict[str, Any]],
    *,
    show: bool = False,
) -> Score:
    """Each user's final store against their labelled exchanges."""
    score = Score()
    wordings = sorted({w for e in exchanges for f in e.labelled_facts() for w in f})
    vectors = await memory.embedder.embed(wordings, purpose="passage") if wordings else []
    fact_vectors = dict(zip(wordings, vectors, strict=True))
    users = list(dict.fromkeys(e.user for e in exchanges))
    for user in users:
        stored = [m["memory"] for m in (await memory.get_all(user_id=user))["results"]]
        stored_vectors = await memory.embedder.embed(stored, purpose="passage") if stored else []
        matcher = Matcher(stored, stored_vectors, fact_vectors)
        own = [e for e in exchanges if e.user == user]
        score_user(score, own, matcher, outcomes)
        if show:
            expected = expected_final(own)
            good = {i for fact in expected for i in matcher.matches(fact)}
            print(f"{user}: expected {[fact[-1] for fact in expected]}")
            for index, text in enumerate(stored):
                print(f"  {'ok ' if index in good else 'BAD'} {text}")
    return score


ROWS = [
    ("exchanges", "exchanges"),
    ("fact precision", "fact_precision"),
    ("fact recall", "fact_recall"),
    ("junk exchanges that stored something", "junk_stored"),
    ("corrections applied (UPDATE)", "update_accuracy"),
    ("forget requests applied (DELETE)", "delete_accuracy"),
    ("relative dates resolved", "date_accuracy"),
    ("dead jobs", "dead"),
    ("dead jobs from answer shape", "dead_from_shape_errors"),
    ("placeholder / prompt-example memories", "placeholder_memories"),
    ("invented memories", "invented_memories"),
    ("items rejected (reasons below)", "rejected_total"),
    ("LLM calls per exchange", "calls_per_exchange"),
    ("tokens per exchange (prompt + completion)", "tokens"),
    ("latency per exchange p50 / p95", "latency"),
    ("structured output / system role", "mode"),
]


def cell(result: dict[str, Any], key: str) -> str:
    if key == "dead":
        return str(result["jobs"].get("dead", 0))
    if key == "rejected_total":
        return str(sum(result["rejected"].values()))
    if key == "calls_per_exchange":
        return f"{result['llm_calls'] / max(1, result['exchanges']):.2f}"
    if key == "tokens":
        tokens = result["tokens_per_exchange"]
        return f"{tokens['prompt']:.0f} + {tokens['completion']:.0f}"
    if key == "latency":
        latency = result["latency_per_exchange"]
        return f"{latency['p50_s']:.2f} s / {latency['p95_s']:.2f} s"
    if key == "mode":
        return f"{result['structured_output']} / {result['system_role']}"
    value = result.get(key)
    return "n/a" if value is None else str(value)


def render(results: dict[str, dict[str, Any]]) -> str:
    labels = sorted(results, key=lambda label: (label != "scripted-fake", label))
    header = ["", *labels]
    rows = [[title, *(cell(results[label], key) for label in labels)] for title, key in ROWS]
    lines = [table(header, rows), ""]
    for label in labels:
        result = results[label]
        rejected = ", ".join(f"{k} {v}" for k, v in result["rejected"].items()) or "none"
        lines.append(
            f"- `{label}`: measured {result['stamp']['date']} at commit "
            f"{result['stamp']['commit']}; command `{result['command']}`; jobs "
            f"{result['jobs']}; rejected: {rejected}; wall {result['wall_s']} s."
        )
    return "\n".join(lines)


SECTION_INTRO = f"""Command:
`python -m bench learning [--model <LiteLLM model | OpenAI-compatible URL>]`
(bench/learning.py). 110 labelled exchanges of 12 users (English, French, Spanish, German,
Italian, Portuguese; 41 facts, 37 junk, 11 corrections, 9 "forget" requests, 12 relative
dates) go through the durable queue and `add(infer=True)` with the default embedder on
LanceDB; each user's final store is scored. A memory matches a labelled fact when cosine
>= {MATCH_THRESHOLD} and it carries the fact's numbers, codes and names
(bench/learning_score.py). The scripted fake is rule-based English (it resolves no dates,
understands no "forget that", no other language): its column checks the pipeline, not a
model. The SmolLM2 column is the smoke run of docs/learning.md: a 135M model is not expected
to be accurate, only to never corrupt the store (zero dead jobs from answer shape, zero
placeholder or invented memories).
{{machine}}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench learning", description=__doc__)
    parser.add_argument("--model", help="LiteLLM model name or OpenAI-compatible base URL")
    parser.add_argument("--model-name", default="local", help="model name at that URL")
    parser.add_argument("--api-key", help="key for --model (else LiteLLM's env variables)")
    parser.add_argument("--label", help="column name in BENCHMARKS.md (default: the model)")
    parser.add_argument(
        "--structured-output",
        default="auto",
        choices=["auto", "json_schema", "json_object_schema", "json_object", "none"],
    )
    parser.add_argument("--system-role", default="auto", choices=["auto", "true", "false"])
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per LLM call")
    parser.add_argument("--attempts", type=int, default=3, help="LLM calls per step")
    parser.add_argument("--queue-attempts", type=int, default=3, help="queue tries per job")
    parser.add_argument("--concurrency", type=int, default=4, help="users learned at once")
    parser.add_argument("--limit", type=int, help="only the first N exchanges")
    parser.add_argument("--per-user", type=int, help="only each user's first N exchanges")
    parser.add_argument("--deadline-s", type=float, default=7200.0)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--show", action="store_true", help="print each user's final store")
    args = parser.parse_args(argv)

    with extraction_server(args) as fake_url:
        config = llm_config(args, fake_url)
        result = asyncio.run(run(args, config))
    label = args.label or ("scripted-fake" if fake_url else config.model.removeprefix("openai/"))
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", label)
    result["stamp"] = stamp()
    result["command"] = " ".join(["python -m bench learning", *(argv or [])])
    save_result(f"learning-{label}", result)
    results = {}
    for path in sorted(RESULTS.glob("learning-*.json")):
        saved = load_result(path.stem)
        if saved is not None:
            results[path.stem.removeprefix("learning-")] = saved
    print(render({label: result}))
    if not args.no_write:
        machine = f"Machine: {result['stamp']['machine']}."
        write_section("Learning", SECTION_INTRO.format(machine=machine) + "\n\n" + render(results))
    return 0
