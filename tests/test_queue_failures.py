"""Learning-queue failure handling through the whole proxy (issue 6, DESIGN.md §3 Queue).

memproxy runs in a uvicorn thread (sharing the session's embedder) with the fake LLM behind it;
``memproxy queue ...`` runs as a real CLI subprocess against the same data dir while the server
is up. Covers: transient LLM failures (HTTP 500, invalid JSON) are retried until they succeed;
a permanently failing job lands in the dead-letter state with its error kept and the CLI can
retry it once the LLM is healthy; ``queue purge``; queue metrics at ``/metrics``; and a backlog
behind a slow LLM (the chat path stays fast, the lag is exposed).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import SharedEmbedder
from tests.fake_upstream import FakeUpstream
from tests.queue_procs import (
    InProcessProxy,
    backend_label,
    metric,
    percentile,
    run_cli,
    send_chats,
    wait_drained,
    wait_until,
    write_config,
)

MAX_ATTEMPTS = 4


@pytest.fixture
def setup(
    tmp_path: Path,
    fake_llm: FakeUpstream,
    embedder: SharedEmbedder,
    queue_backend: dict[str, Any],
) -> Iterator[tuple[InProcessProxy, FakeUpstream, Path]]:
    config = write_config(
        tmp_path / "proxy.yaml",
        fake_url=fake_llm.url,
        storage=tmp_path / "data",
        queue={
            "concurrency": 4,
            "backoff_base_s": 0.05,
            "max_attempts": MAX_ATTEMPTS,
            **queue_backend,
        },
        # max_retries=0: no hidden retries inside the OpenAI SDK, the queue does the retrying.
        memory={
            "llm": {
                "model": "openai/fake-model",
                "api_base": fake_llm.url,
                "api_key": "sk-fake",
                "max_retries": 0,
            }
        },
    )
    with InProcessProxy(config, embedder) as proxy:
        yield proxy, fake_llm, config


def user_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def chat(proxy: InProcessProxy, user: str, text: str) -> None:
    response = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json={
            "model": "fake-model",
            "user_id": user,
            "messages": [{"role": "user", "content": text}],
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text


def memories_of(proxy: InProcessProxy, user: str) -> list[str]:
    """The user's memories, read through a fresh connection to the server's data dir."""
    from memory_core import AsyncMemory

    async def read() -> list[str]:
        memory = AsyncMemory(proxy.settings.memory.core_config(), embedder=proxy.embedder)
        try:
            found = await memory.get_all(user_id=user)
        finally:
            await memory.close()
        return sorted(item["memory"] for item in found["results"])

    return asyncio.run(read())


def block_scope(proxy: InProcessProxy, fake: FakeUpstream, user: str) -> None:
    """Queue a slow job for ``user`` and wait until its one LLM call has been answered (the
    fake then sleeps 1.5 s), so the next job of that user waits behind it and meets the
    failures armed meanwhile, and the blocking job itself does not."""
    text = "I collect stamps [[extract-sleep:1.5]]"
    chat(proxy, user, text)
    wait_until(
        lambda: any(text in str(r.messages) for r in fake.requests_of("extract")),
        timeout_s=10,
        what="the blocking job's LLM call",
        interval_s=0.01,
    )
    time.sleep(0.05)  # the fake picks its answer right after recording the request


@pytest.mark.parametrize(
    ("failure", "attempts"),
    [
        ({"fail_next": 2, "fail_status": 500}, 3),  # two HTTP 500s: attempts 1 and 2 fail
        # complete_validated re-asks inside an attempt (llm.attempts = 3 calls): 4 prose
        # answers fail attempt 1 (3 answers) and are absorbed by attempt 2's inner retry.
        ({"invalid_json_next": 4}, 2),
    ],
    ids=["http-500", "invalid-json"],
)
def test_transient_llm_failures_are_retried_until_success(
    setup: tuple[InProcessProxy, FakeUpstream, Path], failure: dict[str, Any], attempts: int
) -> None:
    proxy, fake, _ = setup
    user = user_id("flaky")
    block_scope(proxy, fake, user)
    chat(proxy, user, "I live in Paris")
    fake.set_failures(**failure)
    stats = wait_drained(proxy, timeout_s=30)
    assert stats["dead"] == 0
    assert stats["retried"] == attempts - 1, stats
    assert fake.state.controls()["fail_next"] == 0
    assert fake.state.controls()["invalid_json_next"] == 0
    assert memories_of(proxy, user) == ["User collects stamps", "User lives in Paris"]
    # A queue retry is not the call that failed again: every call has its own temperature/seed.
    calls = [r.body for r in fake.requests_of("extract") if "Paris" in str(r.messages)]
    samples = [(body["temperature"], body["seed"]) for body in calls]
    assert len(samples) >= attempts and len(set(samples)) == len(samples), samples
    text = proxy.metrics()
    assert metric(text, "memproxy_queue_retried", backend_label(proxy)) == attempts - 1
    assert metric(text, "memproxy_extraction_jobs_total", 'outcome="error"') == attempts - 1
    assert metric(text, "memproxy_extraction_jobs_total", 'outcome="ok"') == 2


def test_dead_letter_then_cli_retry_and_purge(
    setup: tuple[InProcessProxy, FakeUpstream, Path],
) -> None:
    proxy, fake, config = setup
    user = user_id("doomed")
    # The LLM answers prose to every memory prompt: the job fails MAX_ATTEMPTS times, then dies.
    fake.set_failures(invalid_json_next=1_000)
    chat(proxy, user, "I work at Acme")
    wait_until(lambda: proxy.ready()["queue"]["dead"] == 1, timeout_s=30, what="the job to go dead")
    stats = proxy.ready()["queue"]
    assert (stats["pending"], stats["leased"]) == (0, 0)
    assert metric(proxy.metrics(), "memproxy_queue_dead", backend_label(proxy)) == 1

    status = run_cli("status", config=config)
    assert status.returncode == 0, status.stderr
    assert "dead=1" in status.stdout
    dead_line = next(line for line in status.stdout.splitlines() if line.startswith("dead "))
    assert f"scope={user}" in dead_line
    assert f"attempts={MAX_ATTEMPTS}" in dead_line
    assert "ExtractionError" in dead_line and "no JSON object" in dead_line  # the error is kept
    assert memories_of(proxy, user) == []

    # Healthy again: the CLI requeues it and the running server applies it.
    fake.set_failures(invalid_json_next=0)
    retry = run_cli("retry", config=config)
    assert retry.returncode == 0, retry.stderr
    assert "requeued 1 dead jobs" in retry.stdout
    stats = wait_drained(proxy, timeout_s=30)
    assert stats["dead"] == 0
    assert memories_of(proxy, user) == ["User works at Acme"]

    # A job that can never succeed (the conversation itself makes the LLM fail) is purged.
    other = user_id("hopeless")
    chat(proxy, other, "I like tea [[extract-fail:500]]")
    wait_until(lambda: proxy.ready()["queue"]["dead"] == 1, timeout_s=30, what="the job to go dead")
    status = run_cli("status", config=config)
    assert f"scope={other}" in status.stdout and "500" in status.stdout
    purge = run_cli("purge", config=config)
    assert purge.returncode == 0, purge.stderr
    assert "purged 1 dead jobs" in purge.stdout
    status = run_cli("status", config=config)
    assert "pending=0 leased=0 dead=0" in status.stdout, status.stdout
    assert proxy.ready()["queue"]["dead"] == 0
    assert memories_of(proxy, other) == []


def test_every_job_ends_applied_rejected_or_dead_and_says_so(
    setup: tuple[InProcessProxy, FakeUpstream, Path],
) -> None:
    """No silent loss: the job results log, ``memproxy queue results|status`` and the learning
    metrics tell applied (with counts), nothing learned (with reasons) and dead (with the
    error) apart."""
    proxy, fake, config = setup
    users = {kind: user_id(kind) for kind in ("learns", "chats", "placeholders", "doomed")}
    chat(proxy, users["learns"], "I live in Paris and I have a dog named Biscuit.")
    wait_drained(proxy, timeout_s=30)
    chat(proxy, users["chats"], "Hello there! How are you?")
    wait_drained(proxy, timeout_s=30)
    fake.behave_like_a_small_model(['{"facts": ["...", "fact 1"]}'] * 3)
    chat(proxy, users["placeholders"], "I collect stamps.")
    wait_drained(proxy, timeout_s=30)
    chat(proxy, users["doomed"], "I like tea [[extract-fail:500]]")
    wait_until(lambda: proxy.ready()["queue"]["dead"] == 1, timeout_s=30, what="the dead job")

    listing = run_cli("results", "--json", config=config)
    assert listing.returncode == 0, listing.stderr
    by_scope = {row["scope_key"]: row for row in orjson.loads(listing.stdout)}
    learned = by_scope[users["learns"]]
    assert learned["status"] == "applied" and learned["attempts"] == 1
    assert learned["result"]["facts_extracted"] == 2
    assert learned["result"]["applied"] == {"ADD": 2, "UPDATE": 0, "DELETE": 0, "NONE": 0}
    chatted = by_scope[users["chats"]]["result"]
    assert (chatted["status"], chatted["facts_extracted"], chatted["rejected"]) == (
        "nothing_learned",
        0,
        {},
    )
    rejected = by_scope[users["placeholders"]]["result"]
    assert rejected["status"] == "nothing_learned"
    assert rejected["rejected"] == {"no_letters": 3, "placeholder": 3}
    assert rejected["llm_calls"] == 3
    dead = by_scope[users["doomed"]]
    assert dead["status"] == "dead" and dead["result"] is None
    assert "500" in dead["error"] and dead["attempts"] == MAX_ATTEMPTS

    status = run_cli("status", config=config)
    lines = [line for line in status.stdout.splitlines() if line.startswith("finished ")]
    assert any(users["placeholders"] in line and "placeholder=3" in line for line in lines)
    assert any(users["learns"] in line and "applied facts=2 ADD=2" in line for line in lines)
    one = run_cli("results", learned["id"], config=config)
    assert one.stdout.count("finished ") == 1 and learned["id"] in one.stdout

    text = proxy.metrics()
    assert metric(text, "memproxy_learning_outcomes_total", 'status="applied"') == 1
    assert metric(text, "memproxy_learning_outcomes_total", 'status="nothing_learned"') == 2
    assert metric(text, "memproxy_learning_rejected_total", 'reason="placeholder"') == 3
    assert metric(text, "memproxy_learning_decisions_total", 'event="ADD"') == 2
    assert metric(text, "memproxy_learning_facts_total", 'kind="extracted"') == 2


def test_backlog_keeps_chat_fast_and_exposes_the_lag(
    setup: tuple[InProcessProxy, FakeUpstream, Path],
) -> None:
    proxy, fake, _ = setup
    fake.set_failures(extract_delay_s=0.25)  # each job: one slow LLM call (new users: no update)
    burst = [(f"backlog-{n % 10}", f"My hobby number {n} is sport{n}") for n in range(80)]
    outcome = send_chats(proxy.url, burst, workers=16)
    assert not outcome.failed, outcome.failed[:3]

    ready = proxy.ready()["queue"]
    text = proxy.metrics()
    assert ready["pending"] > 20, ready  # the work waits on disk, not in chat requests
    assert ready["running_here"] <= 4  # never more jobs in memory than the concurrency
    assert metric(text, "memproxy_queue_pending", backend_label(proxy)) == pytest.approx(
        ready["pending"], abs=10
    )
    age = metric(text, "memproxy_queue_oldest_age_s", backend_label(proxy))
    assert age is not None and age > 0

    drained = wait_drained(proxy, timeout_s=90)
    assert drained["dead"] == 0
    text = proxy.metrics()
    assert metric(text, "memproxy_learning_lag_seconds_count") == len(burst)
    lag_sum = metric(text, "memproxy_learning_lag_seconds_sum")
    assert lag_sum is not None and lag_sum / len(burst) > 0.25
    assert metric(text, "memproxy_queue_oldest_age_s", backend_label(proxy)) == 0
    p50 = percentile(outcome.latencies_s, 50) * 1000
    p95 = percentile(outcome.latencies_s, 95) * 1000
    print(
        f"\nbacklog: {len(burst)} chats in a burst, LLM 250 ms per extraction; chat latency "
        f"p50 {p50:.0f} ms p95 {p95:.0f} ms; queue peaked above {ready['pending']} pending; "
        f"mean lag {lag_sum / len(burst):.1f} s"
    )


def test_cli_refuses_a_data_dir_without_a_queue(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    config = write_config(
        tmp_path / "proxy.yaml", fake_url="http://127.0.0.1:9/v1", storage=missing
    )
    result = run_cli("status", config=config)
    assert result.returncode == 1
    assert "no learning queue" in result.stderr
    assert not missing.exists()  # nothing was created at the wrong place
