"""The scale-out topology of the tests and of ``python -m bench scaleout``: N ``memproxy serve``
replicas sharing one ``s3://`` store (moto, ``tests/s3_server.py``) and one Redis queue
(``tests/redis_server.py``), as docs/deploying.md's compose file runs them.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.queue_procs import ProxyProcess, log_time_of, write_config
from tests.redis_server import RedisServer
from tests.s3_server import S3Server

READ_CONSISTENCY_S = 0.5


def replica_config(
    path: Path,
    *,
    fake_url: str,
    s3: S3Server | None,
    redis: RedisServer | None,
    storage: str | Path,
    queue: dict[str, Any] | None = None,
    memory: dict[str, Any] | None = None,
) -> Path:
    """One config all replicas share: the store on S3 (credentials as ``os.environ/`` refs)
    when ``s3`` is given, the queue on Redis when ``redis`` is given."""
    memory_settings: dict[str, Any] = {"read_consistency_interval_s": READ_CONSISTENCY_S}
    if s3 is not None:
        memory_settings["storage_options"] = s3.storage_options(from_env=True)
    queue_settings: dict[str, Any] = {"concurrency": 4}
    if redis is not None:
        queue_settings.update(
            backend="redis", redis_url=redis.url, redis_prefix=f"q{uuid.uuid4().hex[:10]}"
        )
    return write_config(
        path,
        fake_url=fake_url,
        storage=storage,
        queue={**queue_settings, **(queue or {})},
        memory={**memory_settings, **(memory or {})},
    )


def start_replicas(
    config: Path, directory: Path, count: int, *, timeout_s: float = 180.0
) -> list[ProxyProcess]:
    """``count`` replicas started at once (each loads the embedding model: slow on a busy
    machine)."""
    replicas = [ProxyProcess(config, directory / f"replica-{n}.log") for n in range(count)]
    for replica in replicas:
        replica.start(wait=False)
    try:
        for replica in replicas:
            replica.wait_ready(timeout_s)
    except BaseException:
        for replica in replicas:
            replica.stop()
        raise
    return replicas


def add_memory(url: str, user: str, text: str) -> str:
    response = httpx.post(
        f"{url}/v1/memories",
        json={"messages": [{"role": "user", "content": text}], "user_id": user, "infer": False},
        timeout=60,
    )
    response.raise_for_status()
    return str(response.json()["results"][0]["id"])


def memory_texts(url: str, user: str) -> list[str]:
    response = httpx.get(f"{url}/v1/memories", params={"user_id": user}, timeout=60)
    response.raise_for_status()
    return [item["memory"] for item in response.json()["results"]]


@dataclass
class Readers:
    """Background readers: search and list on every replica until stopped; every answer that
    is not a 200 is recorded (a maintenance run must never break a read)."""

    urls: Sequence[str]
    users: Sequence[str]
    reads: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Readers:
        for index, url in enumerate(self.urls):
            thread = threading.Thread(target=self._read, args=(url, index), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _read(self, url: str, index: int) -> None:
        with httpx.Client(timeout=60) as client:
            turn = index
            while not self._stop.is_set():
                user = self.users[turn % len(self.users)]
                turn += 1
                try:
                    if turn % 2:
                        response = client.post(
                            f"{url}/v1/search", json={"query": "friend", "user_id": user}
                        )
                    else:
                        response = client.get(f"{url}/v1/memories", params={"user_id": user})
                except httpx.HTTPError as exc:
                    self.failures.append(f"{url}: {exc!r}")
                    continue
                self.reads += 1
                if response.status_code != 200:
                    self.failures.append(f"{url}: {response.status_code} {response.text[:200]}")
                time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


MAINTENANCE = re.compile(
    r"^(\S+ \S+) INFO memory_core\.store: store maintenance (started|finished)", re.M
)


def maintenance_windows(logs: Sequence[str]) -> list[tuple[float, float, int]]:
    """(start, end, replica) of every store maintenance run in the replicas' logs."""
    windows = []
    for replica, text in enumerate(logs):
        started: float | None = None
        for line in text.splitlines():
            found = MAINTENANCE.match(line)
            if not found:
                continue
            moment = log_time_of(found.group(1))
            if found.group(2) == "started":
                started = moment
            elif started is not None:
                windows.append((started, moment, replica))
                started = None
    return sorted(windows)
