"""Helpers for the learning-queue tests and bench that run real processes.

- ``FakeProcess``: the fake OpenAI-compatible LLM (``python -m tests.fake_upstream``) in its own
  process, so that ``kill -9`` of the proxy never touches it; controlled over ``/_control``.
- ``ProxyProcess``: ``memproxy serve`` as a subprocess on a free port, with ``kill9()``,
  ``terminate()`` and its log kept in a file.
- ``write_config``, ``send_chats``, ``wait_drained``, ``queue_stats``, ``read_store``: the shared
  plumbing of the crash / failure / ordering tests and of ``bench/queue_drain.py``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
MODEL = "fake-model"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def end_process(proc: subprocess.Popen[Any], timeout_s: float = 10) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``timeout_s``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class FakeProcess:
    """``python -m tests.fake_upstream`` in a subprocess; ``url`` ends in ``/v1``."""

    def __init__(self, *, extract_delay_s: float = 0.0) -> None:
        self._args = [
            sys.executable,
            "-m",
            "tests.fake_upstream",
            "--port",
            "0",
            "--extract-delay",
            str(extract_delay_s),
            "--max-recorded",
            "100",
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> FakeProcess:
        self.proc = subprocess.Popen(
            self._args,
            cwd=ROOT,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("FAKE_UPSTREAM_URL="):
            self.proc.kill()
            raise RuntimeError(f"fake upstream did not start: {line!r}")
        self.url = line.strip().split("=", 1)[1]
        return self

    @property
    def base_url(self) -> str:
        return self.url.removesuffix("/v1")

    def control(self, **values: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.base_url}/_control", json=values, timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.base_url}/_stats", timeout=10).json())

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            end_process(self.proc)


def write_config(
    path: Path,
    *,
    fake_url: str,
    storage: Path | str,
    queue: dict[str, Any] | None = None,
    memory: dict[str, Any] | None = None,
) -> Path:
    """A proxy YAML config: one ``fake-model`` deployment, extraction through it."""
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": fake_url,
                    "api_key": "sk-fake",
                },
            }
        ],
        "memory": {
            "storage_uri": str(storage),
            "extraction_model": MODEL,
            "queue": {"concurrency": 4, "backoff_base_s": 0.05, "max_attempts": 6, **(queue or {})},
            **(memory or {}),
        },
        "server": {"log_level": "info"},
    }
    path.write_text(yaml.safe_dump(config))
    return path


class ProxyProcess:
    """``memproxy serve --config CFG --port PORT`` as a subprocess (log in ``log_path``)."""

    def __init__(self, config: Path, log_path: Path, *, port: int | None = None) -> None:
        self.config = config
        self.log_path = log_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout_s: float = 90.0, wait: bool = True) -> ProxyProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proxy.cli",
                "serve",
                "--config",
                str(self.config),
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait:
            self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"proxy not ready after {timeout_s}s:\n{self.log()}")

    def ready(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/ready", timeout=10).json())

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, timeout_s: float = 60.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds until exit)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout_s)
        return code, time.monotonic() - started

    def stop(self) -> None:
        """Best-effort cleanup for ``finally:`` blocks."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def log(self, *, tail: int | None = 20_000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
            return text[-tail:] if tail else text
        except OSError:
            return ""


@dataclass
class ChatOutcome:
    sent: int = 0
    ok: list[tuple[str, str]] = field(default_factory=list)  # (user, text) answered 200
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (user, text, why)
    latencies_s: list[float] = field(default_factory=list)


def post_chat(
    client: httpx.Client, url: str, user: str, text: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return client.post(
        f"{url}/v1/chat/completions",
        json={"model": MODEL, "user_id": user, "messages": [{"role": "user", "content": text}]},
        headers=headers,
    )


def send_chats(
    url: str, exchanges: Sequence[tuple[str, str]], *, workers: int = 16, timeout_s: float = 60
) -> ChatOutcome:
    """POST each (user_id, text) to the chat endpoint from a thread pool."""
    outcome = ChatOutcome(sent=len(exchanges))
    with httpx.Client(timeout=timeout_s, limits=httpx.Limits(max_connections=workers)) as client:

        def one(item: tuple[str, str]) -> tuple[str, str, str | None, float]:
            user, text = item
            started = time.perf_counter()
            try:
                response = post_chat(client, url, user, text)
            except httpx.HTTPError as exc:
                return user, text, repr(exc), 0.0
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                return user, text, f"HTTP {response.status_code}: {response.text[:200]}", elapsed
            return user, text, None, elapsed

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for user, text, error, elapsed in pool.map(one, exchanges):
                if error is None:
                    outcome.ok.append((user, text))
                    outcome.latencies_s.append(elapsed)
                else:
                    outcome.failed.append((user, text, error))
    return outcome


def send_in_order(urls: Sequence[str], chats: Sequence[tuple[str, str]]) -> None:
    """(user_id, text) chats one after the other, each after the previous answer, the replicas
    at ``urls`` taking turns: the enqueue order is the send order."""
    with httpx.Client(timeout=60) as client:
        for index, (user, text) in enumerate(chats):
            response = post_chat(client, urls[index % len(urls)], user, text)
            assert response.status_code == 200, response.text


def queue_file(storage: Path) -> Path:
    return storage / "queue.sqlite3"


def queue_stats(storage: Path) -> dict[str, Any]:
    """Counts read straight from the queue's SQLite file (works with no server running)."""
    from memory_core.queue import SqliteJobStore

    store = SqliteJobStore(queue_file(storage))
    try:
        stats = store.stats()
        stats["dead_jobs"] = store.dead_jobs()
        return stats
    finally:
        store.close()


def remaining(proxy: ProxyProcess | InProcessProxy) -> int:
    queue = proxy.ready()["queue"]
    return int(queue["pending"]) + int(queue["leased"])


def wait_until(predicate: Any, *, timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def wait_drained(
    proxy: ProxyProcess | InProcessProxy, *, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Wait until ``/ready`` shows pending=0 and leased=0; returns the queue stats."""
    wait_until(lambda: remaining(proxy) == 0, timeout_s=timeout_s, what="the queue to drain")
    return dict(proxy.ready()["queue"])


def run_cli(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", "queue", "--config", str(config), *args],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@dataclass
class StoreSnapshot:
    memories: dict[str, list[dict[str, Any]]]  # user -> get_all results
    history: dict[str, list[dict[str, Any]]]  # memory id -> history rows (Memory.history)
    history_by_job: dict[str | None, int]  # job_id -> history rows carrying it (raw table)


def read_store(
    storage: Path | str, users: Iterable[str], storage_options: dict[str, str] | None = None
) -> StoreSnapshot:
    """Open the LanceDB data dir or ``s3://`` store and read memories and history."""
    import lancedb

    from memory_core import Memory

    options = storage_options or {}
    memory = Memory.from_config({"storage_uri": str(storage), "storage_options": options})
    try:
        memories: dict[str, list[dict[str, Any]]] = {}
        history: dict[str, list[dict[str, Any]]] = {}
        for user in users:
            items = memory.get_all(user_id=user, limit=1000)["results"]
            memories[user] = [dict(item) for item in items]
            for item in items:
                history[item["id"]] = [dict(row) for row in memory.history(item["id"])]
    finally:
        memory.close()
    table = lancedb.connect(str(storage), storage_options=options or None).open_table(
        "memory_history"
    )
    job_ids = table.to_arrow().column("job_id").to_pylist()
    by_job: dict[str | None, int] = {}
    for job_id in job_ids:
        by_job[job_id] = by_job.get(job_id, 0) + 1
    return StoreSnapshot(memories, history, by_job)


def log_time_of(stamp: str) -> float:
    """Epoch seconds of a ``logging`` asctime (``2026-11-26 09:38:01,929``, local time)."""
    moment, millis = stamp.split(",")
    return time.mktime(time.strptime(moment, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class InProcessProxy:
    """memproxy in a uvicorn thread of this process, sharing the session's embedder.

    ``with InProcessProxy(config_path, embedder) as proxy: proxy.url`` — same HTTP surface as
    ``ProxyProcess`` (``ready()``, ``metrics()``), much faster to start.
    """

    def __init__(self, config: Path, embedder: Any) -> None:
        from memory_core import AsyncMemory
        from proxy import Settings, create_app
        from tests.servers import ServerThread

        self.settings = Settings.load(config)
        self.embedder = embedder
        self.memory = AsyncMemory(self.settings.memory.core_config(), embedder=embedder)
        self._server = ServerThread(create_app(self.settings, memory=self.memory))
        self.url = self._server.base_url

    def __enter__(self) -> InProcessProxy:
        self._server.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.__exit__(None, None, None)

    def ready(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/ready", timeout=10).json())

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text


def backend_label(proxy: ProxyProcess | InProcessProxy) -> str:
    """The ``backend="..."`` label of the queue gauges of ``proxy``."""
    return f'backend="{proxy.ready()["queue"]["backend"]}"'


def metric(text: str, name: str, labels: str = "") -> float | None:
    """The value of one sample in a Prometheus text exposition (None when absent)."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == wanted:
            return float(value)
    return None
