"""Three replicas on one ``s3://`` store (moto's S3 server on loopback) and one Redis queue.

Lance commits a table version by writing its manifest with a conditional put
(``If-None-Match: *``, its ``ConditionalPutCommitHandler`` for ``s3://``): of concurrent
writers exactly one wins each version, the others rebase and retry. No DynamoDB commit lock
is needed: AWS S3, MinIO, R2 and moto all implement the conditional put
(``test_conditional_put_is_atomic``). Maintenance (``optimize``: compaction, index folding,
version cleanup) runs under a Redis lock, in one replica at a time.
"""

from __future__ import annotations

import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.queue_procs import (
    FakeProcess,
    read_store,
    send_chats,
    wait_until,
)
from tests.redis_server import RedisServer
from tests.s3_server import S3Server
from tests.scaleout_procs import (
    READ_CONSISTENCY_S,
    Readers,
    add_memory,
    maintenance_windows,
    memory_texts,
    replica_config,
    start_replicas,
)

EXCHANGES = 90
USERS = 9


def test_conditional_put_is_atomic(s3_server: S3Server) -> None:
    """What Lance's commits on ``s3://`` rely on: of racing ``If-None-Match: *`` puts of one
    key, exactly one succeeds."""
    import botocore.exceptions

    client = s3_server.client()
    for attempt in range(20):
        key = f"race/{uuid.uuid4().hex}"

        def put(n: int, key: str = key) -> bool:
            try:
                client.put_object(Bucket=s3_server.bucket, Key=key, Body=b"%d" % n, IfNoneMatch="*")
            except botocore.exceptions.ClientError as exc:
                assert exc.response["Error"]["Code"] == "PreconditionFailed", exc
                return False
            return True

        with ThreadPoolExecutor(8) as pool:
            winners = sum(pool.map(put, range(8)))
        assert winners == 1, f"attempt {attempt}: {winners} conditional puts of {key} succeeded"


def fact_of(index: int) -> str:
    return f"User's friend number {index} is called Name{index}"


def test_three_replicas_share_one_s3_store(
    tmp_path: Path, s3_server: S3Server, redis_server: RedisServer, s3_env: None
) -> None:
    uri = s3_server.uri(f"store-{uuid.uuid4().hex[:8]}")
    users = [f"s3-user-{n}" for n in range(USERS)]
    exchanges = [
        (users[index % USERS], f"My friend number {index} is called Name{index}")
        for index in range(EXCHANGES)
    ]
    with FakeProcess(extract_delay_s=0.01) as fake:
        config = replica_config(
            tmp_path / "proxy.yaml",
            fake_url=fake.url,
            s3=s3_server,
            redis=redis_server,
            storage=uri,
            # Maintenance often, and a short version retention, while others read and write.
            memory={"optimize_every": 8, "cleanup_retention_s": 2.0},
        )
        replicas = start_replicas(config, tmp_path, 3)
        urls = [replica.url for replica in replicas]
        try:
            with Readers(urls, users) as readers:
                # Every replica takes chats at once; all learn from the one Redis queue.
                with ThreadPoolExecutor(3) as pool:
                    outcomes = list(
                        pool.map(
                            lambda n: send_chats(urls[n], exchanges[n::3], workers=4), range(3)
                        )
                    )
                for outcome in outcomes:
                    assert not outcome.failed, outcome.failed[:3]
                wait_until(
                    lambda: all(
                        r.ready()["queue"]["pending"] + r.ready()["queue"]["leased"] == 0
                        for r in replicas
                    ),
                    timeout_s=300,
                    what="the shared queue to drain",
                )
                # Read-after-write across replicas: written on one, visible on the others
                # within the read-consistency interval.
                delays = []
                for n in range(6):
                    writer, reader = urls[n % 3], urls[(n + 1) % 3]
                    user = f"visible-{uuid.uuid4().hex[:6]}"
                    add_memory(writer, user, f"I keep bees number {n}")
                    written = time.monotonic()
                    wait_until(
                        lambda reader=reader, user=user: bool(memory_texts(reader, user)),
                        timeout_s=30,
                        what="a memory written on one replica to show on another",
                        interval_s=0.02,
                    )
                    delays.append(time.monotonic() - written)
            assert readers.reads > 50, readers.reads
            assert readers.failures == [], readers.failures[:5]
            assert max(delays) < READ_CONSISTENCY_S + 1.5, delays
            applied = [r.ready()["queue"]["applied"] for r in replicas]
            assert sum(applied) == EXCHANGES, applied
            assert min(applied) > 0, f"a replica did no learning: {applied}"
            for replica in replicas:
                code, _ = replica.terminate()
                assert code in (0, -signal.SIGTERM), replica.log()
        finally:
            for replica in replicas:
                replica.stop()

    # Maintenance ran, and never in two replicas at once.
    windows = maintenance_windows([replica.log(tail=None) for replica in replicas])
    assert windows, "no store maintenance ran"
    for (_, end, first), (start, _, second) in zip(windows, windows[1:], strict=False):
        assert start >= end, f"replicas {first} and {second} ran maintenance at the same time"

    # Every exchange applied exactly once on the shared store: no lost or duplicated write.
    snapshot = read_store(uri, users, s3_server.storage_options())
    for user in users:
        texts = [item["memory"] for item in snapshot.memories[user]]
        expected = {fact_of(i) for i, (u, _) in enumerate(exchanges) if u == user}
        assert len(texts) == len(set(texts)), f"{user}: duplicated memories"
        assert set(texts) == expected, user
    learned = {job: count for job, count in snapshot.history_by_job.items() if job is not None}
    assert len(learned) == EXCHANGES
    assert set(learned.values()) == {1}, "a job was applied twice"
    print(f"\nscale-out S3: read-after-write delays {[round(d, 3) for d in delays]} s")
