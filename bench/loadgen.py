"""Load generators: ``wrk`` (C, closed loop, one connection per concurrent client) for request
rates and latency percentiles, and a raw asyncio client for streaming time-to-first-byte.

Python HTTP clients top out at a few hundred requests/s on this machine (DESIGN.md §7), so
rates come from wrk; the streaming client runs at concurrency 1, where the client's own cost
is the same for every target and cancels out of the "added" figures, and at the few
connections of a burst of cold users (``bench cold``), whose figure is the proxy's own
``X-Memory-Overhead-Ms`` header, not the client's clock.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

LUA = Path(__file__).with_name("post.lua")
REQUEST_TIMEOUT_S = 30.0


@dataclass
class WrkResult:
    concurrency: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    errors: int
    non_2xx: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def write_bodies(bodies: list[bytes]) -> Path:
    handle = tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False, prefix="bench-")
    with handle:
        for body in bodies:
            assert b"\n" not in body
            handle.write(body + b"\n")
    return Path(handle.name)


def run_wrk(
    url: str,
    bodies_file: Path,
    *,
    concurrency: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    threads: int | None = None,
    timeout_s: float = 10.0,
) -> WrkResult:
    """POST the bodies round robin to ``url`` for ``seconds`` with ``concurrency`` connections."""
    threads = threads or min(concurrency, 2)
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(LUA),
        url,
        "--",
        str(bodies_file),
        *[f"{k}: {v}" for k, v in (headers or {}).items()],
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=seconds + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
    raw = json.loads(line[len("WRK_JSON ") :])
    duration = raw["duration_us"] / 1e6
    errors = raw["err_connect"] + raw["err_read"] + raw["err_write"] + raw["err_timeout"]
    return WrkResult(
        concurrency=concurrency,
        seconds=duration,
        requests=raw["requests"],
        rps=raw["requests"] / duration if duration else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p95_ms=raw["p95_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000,
        errors=errors,
        non_2xx=raw["err_status"],
    )


# ---- raw asyncio HTTP/1.1 client (streaming TTFB) ---------------------------------------------


@dataclass
class StreamSample:
    status: int
    ttfb_ms: float  # request written -> first byte of the first SSE event
    total_ms: float  # request written -> end of the response
    events: int
    headers: dict[str, str]


class RawClient:
    """One keep-alive connection; just enough HTTP/1.1 for chunked and sized responses."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def post(self, body: bytes, headers: dict[str, str]) -> StreamSample:
        if self.writer is None:
            await self.connect()
        assert self.reader is not None and self.writer is not None
        head = (
            f"POST {self.path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + "\r\n"
        ).encode()
        start = time.perf_counter()
        self.writer.write(head + body)
        raw_head = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        resp_headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                resp_headers[k.strip().lower()] = v.strip()
        first: float | None = None
        events = 0
        if resp_headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await self.reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                data = await self.reader.readexactly(size + 2)
                if first is None and b"data:" in data:
                    first = time.perf_counter()
                events += data.count(b"data:")
        else:
            length = int(resp_headers.get("content-length", "0"))
            data = await self.reader.readexactly(length)
            first = time.perf_counter()
            events += data.count(b"data:")
        end = time.perf_counter()
        if resp_headers.get("connection", "").lower() == "close":
            await self.close()
            self.writer = None
        return StreamSample(
            status, ((first or end) - start) * 1000, (end - start) * 1000, events, resp_headers
        )


async def _one_client(
    url: str,
    bodies: list[bytes],
    headers: dict[str, str],
    turns: Iterator[int],
    warmup: int,
    samples: list[StreamSample],
) -> None:
    client = RawClient(url)
    await client.connect()
    try:
        for i in turns:
            try:
                sample = await asyncio.wait_for(
                    client.post(bodies[i % len(bodies)], headers), timeout=REQUEST_TIMEOUT_S
                )
            except TimeoutError as exc:
                raise RuntimeError(f"request to {url} timed out") from exc
            if sample.status != 200:
                raise RuntimeError(f"stream request to {url} returned {sample.status}")
            if i >= warmup:
                samples.append(sample)
    finally:
        await client.close()


async def _stream_series(
    url: str,
    bodies: list[bytes],
    headers: dict[str, str],
    n: int,
    warmup: int,
    concurrency: int,
) -> list[StreamSample]:
    # One shared iterator: each client takes the next body when its previous request ended.
    turns = iter(range(warmup + n))
    samples: list[StreamSample] = []
    await asyncio.gather(
        *(_one_client(url, bodies, headers, turns, warmup, samples) for _ in range(concurrency))
    )
    return samples


def stream_series(
    url: str,
    bodies: list[bytes],
    headers: dict[str, str],
    *,
    n: int,
    warmup: int = 20,
    concurrency: int = 1,
) -> list[StreamSample]:
    """``n`` streamed requests over ``concurrency`` keep-alive connections, each sending its
    next request when its previous one ended (closed loop); samples in completion order."""
    try:
        import uvloop

        return uvloop.run(_stream_series(url, bodies, headers, n, warmup, concurrency))
    except ImportError:  # pragma: no cover
        return asyncio.run(_stream_series(url, bodies, headers, n, warmup, concurrency))


def one_request(url: str, body: bytes, headers: dict[str, str]) -> StreamSample:
    """A single request (to read the diagnostic headers of a target)."""
    return stream_series(url, [body], headers, n=1, warmup=0)[0]


def percentiles(values: list[float], qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {f"p{q:g}": float(np.percentile(array, q)) for q in qs}
