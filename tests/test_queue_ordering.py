"""Per-user order of learning jobs, in one process and across two (issue 6, DESIGN.md §3 Queue).

"I live in Paris" then "I moved to Rome" then "I moved to Berlin": the later exchanges UPDATE
the memory the earlier one ADDed, so they must be applied in order, one at a time per user,
while other users' jobs run concurrently. The second test runs two ``memproxy serve``
processes on one data dir, the chats of each user alternating between them: leases must keep
any job from being applied twice, and the per-user order must hold across processes.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.conftest import SharedEmbedder
from tests.fake_upstream import FakeUpstream
from tests.queue_procs import (
    InProcessProxy,
    ProxyProcess,
    backend_label,
    metric,
    read_store,
    remaining,
    send_chats,
    send_in_order,
    wait_until,
    write_config,
)

MOVES = ("I live in Paris", "I moved to Rome", "I moved to Berlin")
CITIES = ("Paris", "Rome", "Berlin")


def move(urls: Sequence[str], user: str) -> None:
    """The three exchanges of one user, each sent after the previous answer came back."""
    send_in_order(urls, [(user, text) for text in MOVES])


def noise(users: int, facts: int, tag: str) -> list[tuple[str, str]]:
    return [
        (f"{tag}-noise-{n % users}", f"My hobby number {n} is sport{n}")
        for n in range(users * facts)
    ]


def run_traffic(urls: Sequence[str], movers: Sequence[str], others: list[tuple[str, str]]) -> None:
    """Movers (each sequential) and other users' chats (a burst), all at the same time."""
    with ThreadPoolExecutor(max_workers=len(movers) + 1) as pool:
        futures: list[Future[Any]] = [pool.submit(move, urls, user) for user in movers]
        spread = [(urls[i % len(urls)], item) for i, item in enumerate(others)]
        for url in urls:
            part = [item for target, item in spread if target == url]
            futures.append(pool.submit(send_chats, url, part, workers=8))
        for future in futures:
            outcome = future.result()
            if outcome is not None:
                assert not outcome.failed, outcome.failed[:3]


def test_update_applied_after_add_per_user_under_concurrency(
    tmp_path: Path,
    fake_llm: FakeUpstream,
    embedder: SharedEmbedder,
    queue_backend: dict[str, Any],
) -> None:
    fake_llm.set_failures(extract_delay_s=0.05)  # jobs queue up behind each other
    storage = tmp_path / "data"
    config = write_config(
        tmp_path / "proxy.yaml",
        fake_url=fake_llm.url,
        storage=storage,
        queue={"concurrency": 4, **queue_backend},
    )
    tag = uuid.uuid4().hex[:6]
    movers = [f"{tag}-mover-{n}" for n in range(6)]
    others = noise(users=12, facts=4, tag=tag)
    with InProcessProxy(config, embedder) as proxy:
        run_traffic([proxy.url], movers, others)
        wait_until(lambda: remaining(proxy) == 0, timeout_s=90, what="the queue to drain")
        assert proxy.ready()["queue"]["dead"] == 0
    snapshot = read_store(storage, movers)
    for user in movers:
        items = snapshot.memories[user]
        assert [item["memory"] for item in items] == ["User lives in Berlin"], (user, items)
        rows = snapshot.history[items[0]["id"]]
        assert [row["event"] for row in rows] == ["ADD", "UPDATE", "UPDATE"], rows
        assert [row["new_memory"] for row in rows] == [f"User lives in {c}" for c in CITIES]


def test_two_processes_on_one_data_dir_apply_each_job_once_in_order(
    tmp_path: Path, fake_llm: FakeUpstream, queue_backend: dict[str, Any]
) -> None:
    fake_llm.set_failures(extract_delay_s=0.03)
    storage = tmp_path / "data"
    # Strong read consistency: each process sees the other's writes (docs/learning-queue.md).
    config = write_config(
        tmp_path / "proxy.yaml",
        fake_url=fake_llm.url,
        storage=storage,
        queue={"concurrency": 4, **queue_backend},
        memory={"read_consistency_interval_s": 0},
    )
    proxies = [ProxyProcess(config, tmp_path / f"proxy-{n}.log") for n in range(2)]
    movers = [f"mover-{n}" for n in range(4)]
    others = noise(users=10, facts=10, tag="multi")
    try:
        for proxy in proxies:
            proxy.start(wait=False)
        for proxy in proxies:
            proxy.wait_ready()
        run_traffic([p.url for p in proxies], movers, others)
        wait_until(lambda: remaining(proxies[0]) == 0, timeout_s=120, what="the queue to drain")
        applied = [
            metric(p.metrics(), "memproxy_queue_applied", backend_label(p)) or 0 for p in proxies
        ]
        assert proxies[0].ready()["queue"]["dead"] == 0
        for proxy in proxies:
            code, _ = proxy.terminate()
            assert code in (0, -signal.SIGTERM), proxy.log()
    finally:
        for proxy in proxies:
            proxy.stop()

    total = len(others) + len(movers) * len(MOVES)
    assert sum(applied) == total, applied  # every job ran exactly once, across both processes
    assert min(applied) > 0, f"one process did no work: {applied}"
    users = sorted({user for user, _ in others} | set(movers))
    snapshot = read_store(storage, users)
    assert len(snapshot.history_by_job) == total
    assert set(snapshot.history_by_job.values()) == {1}, "a job was applied twice"
    expected: dict[str, set[str]] = {}
    for user, text in others:
        number = text.split()[3]
        expected.setdefault(user, set()).add(f"User's hobby number {number} is sport{number}")
    for user, wanted in expected.items():
        texts = [item["memory"] for item in snapshot.memories[user]]
        assert sorted(texts) == sorted(wanted), user
    for user in movers:
        items = snapshot.memories[user]
        assert [item["memory"] for item in items] == ["User lives in Berlin"], (user, items)
        rows = snapshot.history[items[0]["id"]]
        assert [row["event"] for row in rows] == ["ADD", "UPDATE", "UPDATE"], rows
