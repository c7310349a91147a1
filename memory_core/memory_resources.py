"""The resources behind ``AsyncMemory`` (``memory.py``) and their lifecycle: built from the
config or injected (tests, benchmarks), opened on first use, closed together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from .changes import ChangeObserver
from .config import MemoryConfig
from .embedders import Embedder, create_embedder
from .errors import InvalidInput, MemoryCoreError, StoreError
from .extraction import ChatLLM, LiteLLMChat
from .graph import GraphMemory
from .importer import MemoryImporter
from .maintenance_lock import MaintenanceLock
from .memory_graph import open_graph
from .profiles import ProfileStore
from .records import expiry_history, scope_of
from .retrieval import LiteLLMReranker, Reranker
from .scope_cache import CachingStore, with_scope_cache
from .searcher import MemorySearcher
from .storage import Store
from .store import LanceStore
from .timestamps import now_stamp
from .types import Scope
from .writer import MemoryWriter

log = logging.getLogger("memory_core.memory")


class MemoryResources:
    """What ``AsyncMemory`` runs on: its config, embedder, extraction/vision LLMs, reranker,
    the store (behind the scope cache), graph memory, profiles, change observers, and the
    writer/searcher pipelines over them; opened lazily, closed together."""

    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        embedder: Embedder | None = None,
        llm: ChatLLM | None = None,
        store: Store | None = None,
        reranker: Reranker | None = None,
        maintenance_lock: MaintenanceLock | None = None,
        profiles: ProfileStore | None = None,
    ) -> None:
        self.config = config or MemoryConfig()
        self._profiles = profiles
        self._observers: list[ChangeObserver] = []
        self._maintenance_lock = maintenance_lock
        self._embedder = embedder
        self._reranker = reranker
        self._owns_embedder = embedder is None  # close only what we created
        self._llm = llm
        self._vision: ChatLLM | None = None
        self._store = store
        self._writer: MemoryWriter | None = None
        self._importer: MemoryImporter | None = None
        self._searcher: MemorySearcher | None = None
        self._graph: GraphMemory | None = None
        self._open_lock = asyncio.Lock()

    @classmethod
    def from_config(
        cls, config: MemoryConfig | Mapping[str, Any] | str | Path | None = None
    ) -> Self:
        """Build from a ``MemoryConfig``, a dict, or a YAML file path."""
        return cls(MemoryConfig.parse(config))

    # ---- lifecycle -----------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = create_embedder(self.config.embedder)
        return self._embedder

    @property
    def reranker(self) -> Reranker | None:
        """The second-stage reranker: the one given, else one built from ``search.reranker``."""
        if self._reranker is None and self.config.search.reranker is not None:
            self._reranker = LiteLLMReranker(self.config.search.reranker)
        return self._reranker

    async def open(self) -> Self:
        """Load the embedder and open the store (idempotent; also done lazily on first use)."""
        async with self._open_lock:
            if self._store is None or not self._store.is_open:
                embedder = self.embedder
                if self._store is None:
                    self._store = with_scope_cache(
                        LanceStore(
                            self.config.storage_uri,
                            embedder.dimension,
                            storage_options=self.config.storage_options,
                            read_consistency_interval_s=self.config.read_consistency_interval_s,
                            optimize_every=self.config.optimize_every,
                            cleanup_retention_s=self.config.cleanup_retention_s,
                            cluster_budget_s=self.config.cluster_budget_s,
                            limits=self.config.limits,
                            maintenance_lock=self._maintenance_lock,
                            purge_expired=self.config.expiration.purge,
                        ),
                        self.config,
                    )
                await self._store.open()
            if self.config.graph.enabled and self._graph is None:
                self._graph = await open_graph(self.config, self.embedder)
            elif self._graph is not None and not self._graph.store.is_open:
                await self._graph.store.open()
            lance = self._store.inner if isinstance(self._store, CachingStore) else self._store
            if isinstance(lance, LanceStore):
                lance.on_purged = self._purged
            self._build_pipelines(self._store)
        return self

    async def graph_memory(self) -> GraphMemory | None:
        """The graph memory, opened, when ``graph.enabled``; else None."""
        await self._ready()
        return self._graph

    def _build_pipelines(self, store: Store) -> None:
        if self._writer is None:
            self._writer = MemoryWriter(store, self.embedder, self.config)
            self._writer.observers = self._observers  # one list: watch() works before open()
            self._importer = MemoryImporter(self._writer)
            self._searcher = MemorySearcher(
                store, self.embedder, self.config, self.reranker, graph=self._graph
            )

    async def _ready(self) -> Store:
        if self._store is None or not self._store.is_open:
            await self.open()
        assert self._store is not None
        self._build_pipelines(self._store)  # a store given already open skips open()
        return self._store

    async def _writes(self) -> MemoryWriter:
        await self._ready()
        assert self._writer is not None
        return self._writer

    def watch(self, observer: ChangeObserver) -> None:
        """Tell ``observer`` about every stored change (``memory_core.changes``)."""
        self._observers.append(observer)

    def unwatch(self, observer: ChangeObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    @property
    def profiles(self) -> ProfileStore:
        """The ``profiles`` table of this store (opened on first use)."""
        if self._profiles is None:
            config = self.config
            self._profiles = ProfileStore(
                config.storage_uri,
                storage_options=config.storage_options,
                read_consistency_interval_s=config.read_consistency_interval_s,
                optimize_every=config.optimize_every,
                cleanup_retention_s=config.cleanup_retention_s,
            )
        return self._profiles

    async def close(self) -> None:
        if self._profiles is not None:
            await self._profiles.close()
        if self._store is not None:
            await self._store.close()
        if self._graph is not None:
            await self._graph.store.close()
        close = getattr(self._embedder, "close", None)
        if self._owns_embedder and callable(close):
            close()

    async def store_stats(self) -> dict[str, dict[str, int]]:
        """The LanceDB store's table versions and maintenance outcomes (empty for other
        stores)."""
        store = await self._ready()
        if isinstance(store, CachingStore):  # the scope cache in front of the LanceDB store
            store = store.inner
        if not isinstance(store, LanceStore):
            return {}
        try:
            versions = await store.table_versions()
        except (OSError, RuntimeError, ValueError) as exc:
            raise StoreError(f"cannot read the table versions: {exc}") from exc
        return {"versions": versions, "maintenance": dict(store.maintenance_runs)}

    @property
    def is_ready(self) -> bool:
        """True once the store is open (``/ready``)."""
        return self._store is not None and self._store.is_open

    @property
    def store(self) -> Store | None:
        return self._store

    @property
    def graph(self) -> GraphMemory | None:
        """Graph memory, once open with ``graph.enabled`` (docs/graph.md)."""
        return self._graph

    @property
    def searcher(self) -> MemorySearcher:
        """The search pipeline (its ``candidates`` are what ``bench locomo --fit`` fits on)."""
        if self._store is None or not self._store.is_open:
            raise StoreError("memory is not open: await open() first")
        self._build_pipelines(self._store)
        assert self._searcher is not None
        return self._searcher

    def _chat_llm(self) -> ChatLLM:
        if self._llm is None:
            if self.config.llm is None:
                raise InvalidInput(
                    "add(infer=True) needs an LLM: set 'llm' in the config, or use infer=False"
                )
            self._llm = LiteLLMChat(self.config.llm)
        return self._llm

    def _vision_llm(self, chosen: ChatLLM | None) -> ChatLLM | None:
        """The model that looks at images: ``multimodal.llm``, else the extraction LLM."""
        cfg = self.config.multimodal
        if chosen is None or not cfg.enabled:
            return None
        if cfg.llm is not None:
            if self._vision is None:
                self._vision = LiteLLMChat(cfg.llm)
            return self._vision
        return chosen

    async def _purged(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Expired memories purged by maintenance: their DELETE history goes through the writer
        (change observers hear of it, as of any delete), and graph memory forgets them."""
        writer = await self._writes()
        stamp = now_stamp()
        by_scope: dict[Scope, list[Mapping[str, Any]]] = {}
        for row in rows:
            by_scope.setdefault(scope_of(row), []).append(row)
        for scope, purged in by_scope.items():
            async with writer.lock(scope):  # observers are told under the scope's lock
                await writer.record_history(expiry_history(purged, stamp))
            if self._graph is None:
                continue
            try:
                await self._graph.forget(scope, [str(row["id"]) for row in purged])
            except MemoryCoreError as exc:  # best effort: recall skips relations of gone rows
                log.warning("graph memory kept relations of purged memories: %s", exc)


__all__ = ["MemoryResources"]
