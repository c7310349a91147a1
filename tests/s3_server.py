"""An S3-compatible server for the tests: moto's server mode (PyPI ``moto[server]``) on
loopback, in its own process, with one bucket. Its objects live in that process's memory, so
an outage is simulated with ``pause()`` (SIGSTOP: the endpoint stops answering, as a
partitioned or overloaded S3 does) and ``resume()``; ``kill9`` would lose the data.

moto implements ``If-None-Match: *`` on PutObject, the conditional put Lance's
``ConditionalPutCommitHandler`` commits manifests with (``test_conditional_put_is_atomic``).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.queue_procs import end_process, free_port

ACCESS_KEY = "memproxy-test-key"
SECRET_KEY = "memproxy-test-secret"
REGION = "us-east-1"


def storage_options(endpoint: str, *, from_env: bool = False) -> dict[str, str]:
    keys = (
        ("os.environ/MEMPROXY_TEST_S3_KEY", "os.environ/MEMPROXY_TEST_S3_SECRET")
        if from_env
        else (ACCESS_KEY, SECRET_KEY)
    )
    return {
        "endpoint": endpoint,
        "region": REGION,
        "allow_http": "true",
        "aws_access_key_id": keys[0],
        "aws_secret_access_key": keys[1],
    }


class S3Server:
    def __init__(self, directory: Path, *, bucket: str = "memproxy-test") -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.bucket = bucket
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> S3Server:
        log = (self.directory / "moto.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.endpoint, timeout=1)
                break
            except httpx.HTTPError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def storage_options(self, *, from_env: bool = False) -> dict[str, str]:
        """LanceDB's ``storage_options`` for this server; ``from_env``: the credentials as
        ``os.environ/`` references (set ``env()`` in the process's environment)."""
        return storage_options(self.endpoint, from_env=from_env)

    @staticmethod
    def env() -> dict[str, str]:
        return {"MEMPROXY_TEST_S3_KEY": ACCESS_KEY, "MEMPROXY_TEST_S3_SECRET": SECRET_KEY}

    def uri(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.resume()
            end_process(self.proc)
