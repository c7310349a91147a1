"""Faults in the scale-out topology (three replicas, one Redis queue, one shared store).

1. 1,000 exchanges queued through three replicas; while they are learned, two replicas are
   killed with SIGKILL at random moments (one restarted: its jobs come back at start-up; the
   other stays dead: its jobs are taken over when their lease expires), and Redis is killed
   and restarted once (AOF, ``appendfsync always``). Every exchange is applied exactly once
   and each user's exchanges in order (a chain of moves must end in the last city, with one
   UPDATE per move in order).
2. The S3 endpoint stops answering for 30 s: chat still answers (recall times out, the answer
   goes out without memories), the learning jobs fail and retry, and once S3 is back
   everything is learned, exactly once.

``MEMPROXY_SCALEOUT_EXCHANGES`` changes the number of exchanges of test 1 (default 1000);
``MEMPROXY_SCALEOUT_SEED`` replays the random kill moments of a run (printed by the test).
"""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.queue_procs import (
    FakeProcess,
    ProxyProcess,
    read_store,
    send_chats,
    send_in_order,
    wait_until,
)
from tests.redis_server import RedisServer
from tests.s3_server import S3Server
from tests.scaleout_procs import replica_config, start_replicas

EXCHANGES = int(os.environ.get("MEMPROXY_SCALEOUT_EXCHANGES", "1000"))
CITIES = ("Paris", "Rome", "Berlin", "Madrid", "Lisbon", "Vienna", "Prague", "Oslo", "Dublin")
MOVERS = max(2, EXCHANGES // 50)
LEASE_S = 4.0


def moves_of(user: str) -> list[tuple[str, str]]:
    first, *rest = CITIES
    return [(user, f"I live in {first}")] + [(user, f"I moved to {city}") for city in rest]


def backlog(replica: ProxyProcess) -> int:
    queue = replica.ready()["queue"]
    return int(queue["pending"]) + int(queue["leased"])


def test_kill_two_replicas_and_restart_redis_every_exchange_applied_once_in_order(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("MEMPROXY_SCALEOUT_SEED", str(random.randrange(1_000_000))))
    rng = random.Random(seed)
    movers = [f"mover-{n}" for n in range(MOVERS)]
    moved = [chat for user in movers for chat in moves_of(user)]
    facts = [
        (f"friend-user-{n % 40}", f"My friend number {n} is called Name{n}")
        for n in range(EXCHANGES - len(moved))
    ]
    storage = tmp_path / "data"  # a shared data dir: this test is about the queue
    redis = RedisServer(tmp_path / "redis").start()
    events: list[str] = []
    try:
        with FakeProcess(extract_delay_s=0.02) as fake:
            config = replica_config(
                tmp_path / "proxy.yaml",
                fake_url=fake.url,
                s3=None,
                redis=redis,
                storage=storage,
                queue={"lease_s": LEASE_S, "max_attempts": 20, "backoff_max_s": 2.0},
                memory={"read_consistency_interval_s": 0},
            )
            replicas = start_replicas(config, tmp_path, 3)
            urls = [replica.url for replica in replicas]
            try:
                with ThreadPoolExecutor(len(movers) + 3) as pool:
                    futures = [pool.submit(send_in_order, urls, moves_of(u)) for u in movers]
                    futures += [
                        pool.submit(send_chats, urls[n], facts[n::3], workers=6) for n in range(3)
                    ]
                    for future in futures:
                        outcome = future.result()
                        assert outcome is None or not outcome.failed, outcome.failed[:3]
                total = backlog(replicas[0])
                events.append(f"queued {EXCHANGES}, backlog {total} after the chats")
                assert total > 100, f"too little backlog to interrupt ({total})"
                # The moments: backlog fractions drawn at random, in the order they happen.
                first_kill, redis_restart, second_kill = sorted(
                    (rng.uniform(0.55, 0.9), rng.uniform(0.35, 0.6), rng.uniform(0.15, 0.35)),
                    reverse=True,
                )
                live = replicas[2]

                def at(fraction: float) -> None:
                    wait_until(
                        lambda: backlog(live) <= total * fraction,
                        timeout_s=300,
                        what=f"the backlog to fall to {fraction:.0%}",
                        interval_s=0.05,
                    )

                at(first_kill)
                replicas[0].kill9()
                events.append(f"kill -9 replica 0 at {first_kill:.0%}")
                replicas[0].start()  # recovers its jobs at start-up (same host, dead pid)
                events.append("replica 0 restarted")
                at(redis_restart)
                redis.restart(down_s=1.0)
                events.append(f"redis killed and restarted at {redis_restart:.0%}")
                at(second_kill)
                replicas[1].kill9()  # stays dead: its leases expire, the others take over
                events.append(f"kill -9 replica 1 at {second_kill:.0%}")
                wait_until(
                    lambda: backlog(live) == 0,
                    timeout_s=300,
                    what="the queue to drain",
                    interval_s=0.1,
                )
                stats = live.ready()["queue"]
                assert stats["dead"] == 0, stats
                for replica in (replicas[0], replicas[2]):
                    code, _ = replica.terminate()
                    assert code in (0, -signal.SIGTERM), replica.log()
            finally:
                for replica in replicas:
                    replica.stop()
    finally:
        redis.stop()
    print(f"\nscale-out faults (seed {seed}): " + "; ".join(events))

    users = sorted({user for user, _ in facts} | set(movers))
    snapshot = read_store(storage, users)
    learned = {job: n for job, n in snapshot.history_by_job.items() if job is not None}
    assert len(learned) == EXCHANGES, f"{len(learned)} of {EXCHANGES} exchanges learned"
    assert set(learned.values()) == {1}, "an exchange was applied twice"
    for user in {user for user, _ in facts}:
        texts = [item["memory"] for item in snapshot.memories[user]]
        expected = {
            f"User's friend number {text.split()[3]} is called {text.split()[-1]}"
            for u, text in facts
            if u == user
        }
        assert len(texts) == len(set(texts)), f"{user}: duplicated memories"
        assert set(texts) == expected, user
    for user in movers:
        items = snapshot.memories[user]
        assert [item["memory"] for item in items] == [f"User lives in {CITIES[-1]}"], items
        rows = snapshot.history[items[0]["id"]]
        assert [row["event"] for row in rows] == ["ADD"] + ["UPDATE"] * (len(CITIES) - 1)
        assert [row["new_memory"] for row in rows] == [f"User lives in {c}" for c in CITIES]


def test_s3_down_for_30_s_chat_answers_and_learning_resumes(
    tmp_path: Path, s3_server: S3Server, redis_server: RedisServer, s3_env: None
) -> None:
    uri = s3_server.uri(f"outage-{uuid.uuid4().hex[:8]}")
    users = [f"outage-user-{n}" for n in range(4)]
    before = [(users[n % 4], f"My friend number {n} is called Name{n}") for n in range(8)]
    during = [(users[n % 4], f"My friend number {n} is called Name{n}") for n in range(8, 20)]
    with FakeProcess() as fake:
        config = replica_config(
            tmp_path / "proxy.yaml",
            fake_url=fake.url,
            s3=s3_server,
            redis=redis_server,
            storage=uri,
            queue={"max_attempts": 40, "backoff_base_s": 0.5, "backoff_max_s": 4.0},
            # Fail fast while S3 hangs: a request times out after 3 s, retried once.
            memory={
                "storage_options": {
                    **s3_server.storage_options(from_env=True),
                    "timeout": "3s",
                    "connect_timeout": "1s",
                    "client_max_retries": "1",
                }
            },
        )
        replicas = start_replicas(config, tmp_path, 2)
        try:
            first = send_chats(replicas[0].url, before, workers=4)
            assert not first.failed, first.failed
            s3_server.pause()
            paused = time.monotonic()
            try:
                outage = send_chats(replicas[1].url, during, workers=4, timeout_s=30)
                assert not outage.failed, outage.failed[:3]  # chat answers while S3 is down
                assert max(outage.latencies_s) < 10, outage.latencies_s
                time.sleep(max(0.0, 30 - (time.monotonic() - paused)))
            finally:
                s3_server.resume()
            wait_until(
                lambda: backlog(replicas[0]) == 0,
                timeout_s=240,
                what="learning to resume and drain after the outage",
            )
            stats = replicas[0].ready()["queue"]
            assert stats["dead"] == 0, stats
            retried = sum(r.ready()["queue"]["retried"] for r in replicas)
        finally:
            for replica in replicas:
                replica.stop()
    snapshot = read_store(uri, users, s3_server.storage_options())
    learned = {job: n for job, n in snapshot.history_by_job.items() if job is not None}
    assert len(learned) == len(before) + len(during)
    assert set(learned.values()) == {1}
    for user in users:
        texts = [item["memory"] for item in snapshot.memories[user]]
        assert len(texts) == len(set(texts)), f"{user}: duplicated memories"
        assert len(texts) == 5, (user, texts)
    print(f"\nS3 outage: chat p50 {sorted(outage.latencies_s)[6]:.2f}s; {retried} retries")
