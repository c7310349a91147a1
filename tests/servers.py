"""Run an ASGI app under a real uvicorn server on a free loopback port, in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from tests.fake_extractor import parse_conversation


class ServerThread:
    """``with ServerThread(app) as server: server.url`` — a real uvicorn server for tests."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", **options: Any) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self.port = int(self._sock.getsockname()[1])
        self.base_url = f"http://{host}:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", access_log=False, **options
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return self.base_url + "/v1"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server failed to start")
            time.sleep(0.01)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()


# ---- probes of a running proxy's learning (metrics and /ready) ------------------------------


def metric(srv: ServerThread, name: str) -> float:
    """The value of an unlabelled Prometheus sample (0 when absent)."""
    for line in httpx.get(srv.base_url + "/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def labelled_metric(srv: ServerThread, name: str, **labels: str) -> float:
    """The value of one labelled Prometheus sample (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in httpx.get(srv.base_url + "/metrics").text.splitlines():
        if line.startswith(name + "{" + wanted + "}"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def learn_state(srv: ServerThread) -> dict[str, float]:
    queue = httpx.get(srv.base_url + "/ready").json()["queue"]
    enqueued = metric(srv, "memproxy_learning_enqueued_total")
    return {"enqueued": enqueued, "busy": queue["pending"] + queue["leased"], **queue}


def settled_state(srv: ServerThread, *, timeout: float = 30) -> dict[str, float]:
    """``learn_state`` once no job is pending or leased: a baseline no earlier test's job can
    still move (under load, a job enqueued before may be running yet)."""
    deadline = time.monotonic() + timeout
    while (state := learn_state(srv))["busy"]:
        assert time.monotonic() < deadline, f"the queue did not settle: {state}"
        time.sleep(0.05)
    return state


def wait_learned(
    srv: ServerThread, before: dict[str, float], jobs: int = 1, *, timeout: float = 30
) -> dict[str, float]:
    """Wait until ``jobs`` more exchanges were enqueued and the queue is idle again."""
    deadline = time.monotonic() + timeout
    while True:
        state = learn_state(srv)
        if state["enqueued"] >= before["enqueued"] + jobs and state["busy"] == 0:
            assert state["dead"] == before["dead"], "a learning job died"
            return state
        assert time.monotonic() < deadline, f"learning did not finish: {state}"
        time.sleep(0.05)


def conversation_of(request: Any) -> list[tuple[str, str]]:
    """The ``(role, text)`` lines of the exchange inside an extraction request."""
    text = request.messages[-1]["content"]
    start = text.index("<conversation>") + len("<conversation>")
    return parse_conversation(text[start : text.rindex("</conversation>")].strip())


def wait_for(check: Callable[[], bool], timeout: float = 60, pause: float = 0.1) -> None:
    """Poll ``check`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(pause)


def fake_model_proxy(fake_url: str, storage: str, **memory_settings: Any) -> Any:
    """A memproxy app with one deployment, ``fake-model``, on the fake upstream at
    ``fake_url`` (also the extraction model), storing in ``storage``, retrying fast;
    ``memory_settings`` are more ``memory:`` settings (e.g. ``graph={"enabled": True}``)."""
    from proxy import Settings, create_app

    deployment = {
        "model_name": "fake-model",
        "litellm_params": {"model": "openai/fake-model", "api_base": fake_url, "api_key": "sk-f"},
    }
    memory = {
        "storage_uri": storage,
        "extraction_model": "fake-model",
        "queue": {"backoff_base_s": 0.05, "shutdown_grace_s": 1},
        **memory_settings,
    }
    return create_app(Settings.from_dict({"model_list": [deployment], "memory": memory}))
