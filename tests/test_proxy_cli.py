"""The ``memproxy`` command: ``serve`` as a real subprocess (start, chat, SIGTERM, exit 0) and
the small in-process subcommands."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from proxy.cli import main
from tests.fake_upstream import FakeUpstream


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


def write_config(tmp_path: Path, fake_url: str, *, host: str | None = None) -> Path:
    """The minimal config: one model behind the fake upstream; memory uses it to learn."""
    server = f"server:\n  host: '{host}'\n" if host else ""
    path = tmp_path / "memproxy.yaml"
    path.write_text(
        "model_list:\n"
        "  - model_name: fake-model\n"
        "    litellm_params:\n"
        "      model: openai/fake-model\n"
        f"      api_base: {fake_url}\n"
        "      api_key: sk-fake\n"
        "memory:\n"
        "  extraction_model: fake-model\n"
        f"  storage_uri: {tmp_path / 'data'}\n" + server,
        encoding="utf-8",
    )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_chat_and_sigterm(fake: FakeUpstream, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake.url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config), "--port", str(port)],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120  # imports are slow on a busy machine
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "memproxy serve did not become healthy"
            time.sleep(0.2)

        client = openai.OpenAI(base_url=base + "/v1", api_key="sk-x", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="fake-model",
            messages=[{"role": "user", "content": "I'm vegetarian and my sister lives in Lisbon"}],
            extra_body={"user_id": "cli-user"},
        )
        assert raw.parse().choices[0].message.content == (
            "ECHO: I'm vegetarian and my sister lives in Lisbon"
        )
        assert raw.headers["x-memory-status"] == "ok"
        assert raw.headers["x-memory-upstream"] == "passthrough"
        assert [m.id for m in client.models.list()] == ["fake-model"]
        # The server's own app froze what its startup built (``proxy/heap.py``).
        served = (tmp_path / "serve.log").read_text()
        frozen = re.search(r"startup heap frozen: (\d+) objects", served)
        assert frozen is not None and int(frozen.group(1)) > 10_000

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
        assert code == 0, (tmp_path / "serve.log").read_text()
        assert time.monotonic() - started < 20
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    assert (tmp_path / "data" / "queue.sqlite3").exists()


def test_check_config(
    fake: FakeUpstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, fake.url)
    assert main(["check-config", "--config", str(config)]) == 0
    assert "config OK: models fake-model" in capsys.readouterr().out


def test_check_config_refuses_open_public_bind(
    fake: FakeUpstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, fake.url, host="0.0.0.0")
    assert main(["check-config", "--config", str(config)]) == 2
    assert "refusing to bind 0.0.0.0" in capsys.readouterr().err


def test_check_config_reports_bad_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model_list: [\n", encoding="utf-8")
    assert main(["check-config", "--config", str(path)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_keys_hash(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "hash", "sk-secret"]) == 0
    assert capsys.readouterr().out.strip() == hashlib.sha256(b"sk-secret").hexdigest()


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_serve_with_two_workers(fake: FakeUpstream, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake.url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config), "--port", str(port)]
        + ["--workers", "2"],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 180  # two processes import everything on a busy machine
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(base + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "memproxy serve --workers 2 did not get ready"
            time.sleep(0.2)
        workers = _children(process.pid)
        assert len(workers) >= 2
        client = openai.OpenAI(base_url=base + "/v1", api_key="sk-x", max_retries=0)
        for _ in range(6):  # new connections: the kernel spreads them over both workers
            raw = client.chat.completions.with_raw_response.create(
                model="fake-model",
                messages=[{"role": "user", "content": "My sister lives in Lisbon"}],
                extra_body={"user_id": "cli-user"},
            )
            assert raw.headers["x-memory-status"] == "ok"
            assert raw.parse().choices[0].message.content == "ECHO: My sister lives in Lisbon"
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        gone = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in workers):
            assert time.monotonic() < gone, "a worker outlived memproxy serve"
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
