"""Crash test of the learning queue with real processes (issue 6, DESIGN.md §3 Queue).

A slow fake LLM runs in its own process; ``memproxy serve`` runs as a subprocess and is killed
with SIGKILL twice while learning is under way, then stopped with SIGTERM while jobs run (a
grace period shorter than the jobs, so running jobs are released), then started once more to
drain. Afterwards the LanceDB data dir is opened directly and every exchange must have been
applied exactly once: one memory per exchange, one history row per memory and per job id,
nothing left in the queue, nothing dead.

``MEMPROXY_CRASH_EXCHANGES`` sets the number of exchanges (CI default 300; run it with 1000 to
reproduce the figure recorded in docs/learning-queue.md).
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from tests.queue_procs import (
    FakeProcess,
    ProxyProcess,
    log_time_of,
    percentile,
    queue_stats,
    read_store,
    remaining,
    send_chats,
    wait_drained,
    wait_until,
    write_config,
)

EXCHANGES = int(os.environ.get("MEMPROXY_CRASH_EXCHANGES", "300"))
USERS = 20
EXTRACT_DELAY_S = 0.03
GRACE_S = 1.0


def fact_of(index: int) -> str:
    return f"User's friend number {index} is called Name{index}"


def kill_mid_learning(proxy: ProxyProcess, storage: Path, *, fraction: float) -> dict[str, int]:
    """SIGKILL once ``fraction`` of the backlog is left; return the queue as the dead left it."""
    start = remaining(proxy)
    assert start > 20, f"too little backlog to interrupt ({start}); make the LLM slower"
    wait_until(
        lambda: remaining(proxy) <= start * fraction,
        timeout_s=120,
        what=f"learning to progress below {fraction:.0%} of {start}",
        interval_s=0.02,
    )
    proxy.kill9()
    stats = queue_stats(storage)
    assert stats["pending"] + stats["leased"] > 0, "the kill came after learning finished"
    return stats


def recovered_count(log: str) -> int:
    return sum(int(n) for n in re.findall(r"recovered (\d+) in-flight jobs", log))


def test_kill_9_twice_then_sigterm_every_exchange_applied_exactly_once(tmp_path: Path) -> None:
    storage = tmp_path / "data"
    exchanges = [
        (f"crash-user-{index % USERS}", f"My friend number {index} is called Name{index}")
        for index in range(EXCHANGES)
    ]
    half = EXCHANGES // 2
    timings: dict[str, float] = {}
    started = time.monotonic()
    with FakeProcess(extract_delay_s=EXTRACT_DELAY_S) as fake:
        config = write_config(
            tmp_path / "proxy.yaml",
            fake_url=fake.url,
            storage=storage,
            queue={"concurrency": 4, "shutdown_grace_s": GRACE_S, "max_attempts": 8},
        )
        logs = [tmp_path / f"proxy-{n}.log" for n in range(4)]
        proxies = [ProxyProcess(config, log) for log in logs]
        try:
            # Run 1: first half of the chats, SIGKILL mid-way through learning.
            mark = time.monotonic()

            def lap(name: str) -> None:
                nonlocal mark
                timings[name] = time.monotonic() - mark
                mark = time.monotonic()

            proxies[0].start()
            lap("start_1")
            first = send_chats(proxies[0].url, exchanges[:half])
            assert not first.failed, first.failed[:3]
            lap("chats_1")
            killed_1 = kill_mid_learning(proxies[0], storage, fraction=0.7)
            assert killed_1["leased"] > 0, f"no job was in flight at the kill: {killed_1}"
            lap("learn_1")

            # Run 2: recovery at start-up, second half of the chats, SIGKILL again.
            proxies[1].start()
            lap("start_2")
            second = send_chats(proxies[1].url, exchanges[half:])
            assert not second.failed, second.failed[:3]
            killed_2 = kill_mid_learning(proxies[1], storage, fraction=0.6)
            assert killed_2["leased"] > 0, f"no job was in flight at the kill: {killed_2}"
            lap("chats_learn_2")

            # Run 3: SIGTERM while jobs run longer than the grace period: it exits in time and
            # gives the running jobs back (nothing left leased), the rest stays pending.
            proxies[2].start()
            lap("start_3")
            before = remaining(proxies[2])
            wait_until(
                lambda: remaining(proxies[2]) <= before - 10,
                timeout_s=60,
                what="run 3 to apply a few jobs",
                interval_s=0.02,
            )
            # From now on each LLM call takes 30 s: the running jobs cannot finish in the grace.
            fake.control(extract_delay_s=30.0)
            time.sleep(1.0)  # jobs already past their LLM calls finish; new ones are stuck
            assert proxies[2].ready()["queue"]["running_here"] > 0
            term_sent = time.time()
            code, took = proxies[2].terminate()
            timings["sigterm_exit_s"] = took
            # uvicorn re-raises the signal after its graceful shutdown: -SIGTERM is a clean exit.
            assert code in (0, -signal.SIGTERM), proxies[2].log()
            # The queue gave the jobs up after the grace period (not after the 30 s calls)...
            released = re.search(
                r"^(\S+ \S+) INFO memory_core\.queue: released (\d+) running jobs",
                proxies[2].log(tail=None),
                re.M,
            )
            assert released, proxies[2].log()
            released_after = log_time_of(released.group(1)) - term_sent
            timings["sigterm_released_s"] = released_after
            assert 0 < int(released.group(2)) <= 4
            assert released_after < GRACE_S + 3, f"jobs released {released_after:.1f}s after TERM"
            # ...and the process was gone long before the running jobs could have ended.
            assert took < 20, f"SIGTERM took {took:.1f}s"
            after_term = queue_stats(storage)
            assert after_term["leased"] == 0, f"SIGTERM left leases behind: {after_term}"
            assert after_term["pending"] > 0, after_term

            # Run 4: drain everything.
            fake.control(extract_delay_s=EXTRACT_DELAY_S)
            proxies[3].start()
            lap("start_4")
            drain_started = time.monotonic()
            final = wait_drained(proxies[3], timeout_s=180)
            timings["final_drain_s"] = time.monotonic() - drain_started
            assert final["dead"] == 0, queue_stats(storage)["dead_jobs"]
            code, _ = proxies[3].terminate()
            assert code in (0, -signal.SIGTERM), proxies[3].log()
        finally:
            for proxy in proxies:
                proxy.stop()

    # Crash recovery really happened: the killed runs' leases were taken back at start-up.
    assert recovered_count(proxies[1].log(tail=None)) == killed_1["leased"]
    assert recovered_count(proxies[2].log(tail=None)) == killed_2["leased"]

    stats = queue_stats(storage)
    assert (stats["pending"], stats["leased"], stats["dead"]) == (0, 0, 0), stats

    learned = first.ok + second.ok
    users = sorted({user for user, _ in exchanges})
    snapshot = read_store(storage, users)
    expected: dict[str, set[str]] = {user: set() for user in users}
    for index, (user, _) in enumerate(exchanges):
        expected[user].add(fact_of(index))
    assert len(learned) == EXCHANGES
    for user in users:
        texts = [item["memory"] for item in snapshot.memories[user]]
        assert len(texts) == len(set(texts)), f"{user}: duplicated memories"
        assert set(texts) == expected[user], (
            f"{user}: missing {sorted(expected[user] - set(texts))[:5]}, "
            f"unexpected {sorted(set(texts) - expected[user])[:5]}"
        )
    # One ADD history row per memory, and one history row per job id: no job applied twice.
    for memory_id, rows in snapshot.history.items():
        assert [row["event"] for row in rows] == ["ADD"], (memory_id, rows)
    assert None not in snapshot.history_by_job, "history rows written without a job id"
    assert len(snapshot.history_by_job) == EXCHANGES
    assert set(snapshot.history_by_job.values()) == {1}
    total = time.monotonic() - started
    print(
        f"\ncrash test: {EXCHANGES} exchanges, {USERS} users; killed with "
        f"{killed_1['leased']}+{killed_2['leased']} jobs in flight; SIGTERM: jobs released "
        f"after {timings['sigterm_released_s']:.2f}s, exit after "
        f"{timings['sigterm_exit_s']:.2f}s; final drain {timings['final_drain_s']:.1f}s; "
        f"chat latency during learning p50 {percentile(second.latencies_s, 50) * 1000:.0f} ms "
        f"p95 {percentile(second.latencies_s, 95) * 1000:.0f} ms; total {total:.0f}s; phases "
        + " ".join(f"{k}={v:.1f}s" for k, v in timings.items())
    )
