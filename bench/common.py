"""Shared helpers of the benchmarks: processes, ports, machine facts, writing BENCHMARKS.md."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CACHE = BENCH / ".cache"
RESULTS = BENCH / "results"
DOCS = ROOT / "docs"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
LITELLM_VENV = BENCH / ".venv-litellm"
PY = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or "uncommitted"
    except OSError:
        return "unknown"


_SIMD = (
    ("avx2", "AVX2"),
    ("avx512f", "AVX-512"),
    ("avx512_vnni", "VNNI"),
    ("avx_vnni", "AVX-VNNI"),
    ("amx_int8", "AMX"),
)


def machine() -> str:
    cpu = platform.processor() or "cpu"
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    # The query embedding's speed depends on these more than on the model name (hosts differ).
    simd = [n for f, n in _SIMD if f in flags]
    if simd:
        cpu = f"{cpu} ({' '.join(simd)})"
    mem_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
                break
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def stamp() -> dict[str, str]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "machine": machine(),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    cells = [[str(c) for c in row] for row in rows]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(out)


PREAMBLE = """# Benchmarks

Measured on this project's machine (2 cores, 24 GiB RAM, no GPU) with `python -m bench ...`;
each section names its command, date, commit and machine, and is rewritten by its command.
Benchmarks are not CI tests. One-time setup:

```bash
pip install -e '.[bench]'          # matplotlib, for docs/bench-*.png
apt-get install -y wrk             # the load generator of the overhead benchmark
python -m venv bench/.venv-litellm && bench/.venv-litellm/bin/pip install 'litellm[proxy]'
```
"""


def write_section(title: str, body: str) -> None:
    """Replace ``## {title}`` (up to the next ``## ``) in BENCHMARKS.md, or append it.

    The file is re-read right before writing: other benchmarks own other sections.
    """
    heading = f"## {title}"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else PREAMBLE
    section = f"{heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(heading)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    BENCHMARKS_MD.write_text(text.rstrip("\n") + "\n")


def save_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def load_result(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def wait_http(
    url: str,
    *,
    timeout_s: float = 120.0,
    headers: dict[str, str] | None = None,
    proc: subprocess.Popen[Any] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status < 500:
                    return
        except Exception as exc:  # noqa: BLE001 - polling until it answers
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s}s: {last!r}")


@contextlib.contextmanager
def process(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    cwd: Path | None = None,
    capture_stdout: bool = False,
) -> Iterator[subprocess.Popen[Any]]:
    """Run ``cmd`` for the duration of the block; stopped with SIGINT, then SIGKILL.

    Output goes to ``log`` (or nowhere). Only with ``capture_stdout`` is stdout a pipe, and
    then only its first lines may be read: a pipe nobody drains blocks a chatty server (an
    access log) once it is full.
    """
    full_env = {**os.environ, **(env or {})}
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    stdout = subprocess.PIPE if capture_stdout else out
    proc = subprocess.Popen(
        cmd, env=full_env, stdout=stdout, stderr=out, cwd=cwd, start_new_session=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]


@contextlib.contextmanager
def fast_upstream(chunks: int = 20, gap_ms: float = 0.0) -> Iterator[str]:
    """Start ``bench.fast_upstream`` in its own process; yields its ``.../v1`` base URL."""
    cmd = [
        PY,
        "-m",
        "bench.fast_upstream",
        "--port",
        "0",
        "--chunks",
        str(chunks),
        "--chunk-gap-ms",
        str(gap_ms),
    ]
    with process(cmd, cwd=ROOT, capture_stdout=True) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        if not line.startswith("FAKE_UPSTREAM_URL="):
            raise RuntimeError(f"fast upstream did not start: {line!r}")
        yield line.split("=", 1)[1]
