"""``AsyncMemory``: the memory API (Mem0's names and result shapes, ``{"results": [...]}``).

A facade: it checks what callers give it, owns the lifecycle of the store, the embedder, the
extraction LLM and the reranker, and hands writes to ``MemoryWriter`` (imports to
``MemoryImporter``) and searches to ``MemorySearcher``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from .changes import ChangeObserver
from .checks import (
    MessagesInput,
    check_limit,
    check_memory_id,
    check_metadata,
    memory_text,
    normalize_messages,
)
from .config import MemoryConfig
from .embedders import Embedder, create_embedder
from .errors import InvalidInput, MemoryCoreError, NotFound, StoreError
from .exports import fill_schema, json_schema_of
from .extraction import ChatLLM, LiteLLMChat
from .graph import GraphMemory, mem0_relation
from .importer import MemoryImporter
from .ingest import MediaIngest
from .learning_report import LearningReport
from .lifecycle import (
    check_categories,
    check_feedback,
    check_text_change,
    lifecycle_changes,
    requested_expiry,
)
from .maintenance_lock import MaintenanceLock
from .media import find_media
from .memory_graph import learn_graph, open_graph
from .profiles import Profile, ProfileStore, write_profile
from .records import scope_of, to_item
from .retrieval import LiteLLMReranker, Reranker
from .scope_cache import CachingStore, with_scope_cache
from .searcher import MemorySearcher
from .storage import Selection, Store
from .store import LanceStore, expiry_history
from .timestamps import exchange_moment, now_stamp
from .types import AddResult, HistoryItem, MemoryItem, Scope, SearchResult
from .writer import MemoryWriter, WriteContext

ModelT = TypeVar("ModelT", bound=BaseModel)
log = logging.getLogger("memory_core.memory")


class AsyncMemory:
    """Long-term memory for users, agents and runs, on LanceDB. All methods are coroutines."""

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
    ) -> AsyncMemory:
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

    async def open(self) -> AsyncMemory:
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

    # ---- add ---------------------------------------------------------------------------

    async def add(
        self,
        messages: MessagesInput,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        app_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        infer: bool = True,
        timestamp: str | float | datetime | None = None,
        job_id: str | None = None,
        llm: ChatLLM | None = None,
        context: str | None = None,
        source: str | None = None,
        report: LearningReport | None = None,
        categories: Sequence[str] | None = None,
        expiration_date: str | None = None,
        ttl_s: int | None = None,
        immutable: bool = False,
    ) -> dict[str, list[AddResult]]:
        """Learn from ``messages``. ``infer=False`` stores each non-system message verbatim.

        ``timestamp`` is when the exchange happened (default: now); ``job_id`` makes a repeated
        call with the same id a no-op (used by the durable queue); ``llm`` overrides the
        configured extraction LLM for this call. ``context`` is the conversation just before
        ``messages`` (e.g. the turn a reply answers); it is never stored as a memory itself:
        with ``infer=False`` each stored message is embedded and full-text indexed after it
        (so "Yes, last Sunday!" is found by what it answers), with ``infer=True`` the
        extractor sees it as background it must not learn from. ``source`` is recorded on the
        history rows this call writes (which way in: ``"mcp"``...). ``report``, when given, is
        filled with what happened: facts extracted, decisions applied, items rejected and why.

        The memories this call stores get ``categories``, expire per ``expiration_date``
        (``YYYY-MM-DD``, the day included) or ``ttl_s`` (seconds after ``timestamp``), else per
        ``expiration.by_category``, and with ``immutable`` extraction may never change them.
        """
        scope = Scope(user_id, agent_id, run_id, app_id).require()
        moment = exchange_moment(timestamp)
        labels = check_categories(categories)
        expires_at = requested_expiry(expiration_date, ttl_s, moment)
        if not isinstance(immutable, bool):
            raise InvalidInput("immutable must be true or false", param="immutable")
        extra = check_metadata(metadata)
        if context is not None and not isinstance(context, str):
            raise InvalidInput("context must be a string")
        context = memory_text(context or "") or None
        chat = [m for m in normalize_messages(messages) if m.get("role") != "system"]
        chosen = (llm or self._chat_llm()) if infer else None
        # Images are learned from only with infer and multimodal on; otherwise left unread.
        see = self._vision_llm(chosen)
        refs = find_media(chat, self.config.multimodal, images=see is not None)
        write = WriteContext(
            scope, moment, extra, job_id, context, source, labels, expires_at, immutable
        )
        writer = await self._writes()
        if job_id is not None and await writer.store.job_applied(job_id):
            if report is not None:
                report.skipped = "already_applied"
            return {"results": []}  # the writer checks again under the scope's lock
        results: list[AddResult] = []
        if refs:
            # Media first: each image/document part has its own job id, the text the job's.
            results += await MediaIngest(writer, self.config).add(
                write, chat, refs, llm=chosen, vision=see, report=report
            )
        results += await writer.add(write, chat, llm=chosen, report=report)
        if self._graph is not None and chosen is not None:
            await learn_graph(
                self._graph, scope, results, chosen, when=write.when, job_id=job_id, report=report
            )
        return {"results": results}

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

    # ---- read --------------------------------------------------------------------------

    async def search(
        self,
        query: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        app_id: str | None = None,
        limit: int = 10,
        threshold: float | None = None,
        filters: Mapping[str, Any] | None = None,
        graph: bool | None = None,
        include_expired: bool = False,
    ) -> SearchResult:
        """Memories of the scope most relevant to ``query``, best first, with a ``score``;
        with graph memory (``graph``, default: on when configured) the graph walk's memories
        join the fusion and its ``relations`` come back too (Mem0's shape). Expired memories
        only with ``include_expired``, never those very negative feedback hides."""
        scope = Scope(user_id, agent_id, run_id, app_id).require()
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("query must be a non-empty string")
        limit = check_limit(limit)
        await self._ready()
        walk = self._graph is not None and graph is not False
        results, relations = await self.searcher.search(
            query,
            scope,
            limit=limit,
            threshold=threshold,
            filters=filters,
            graph=walk,
            include_expired=include_expired,
        )
        if not walk:
            return SearchResult(results=results)
        return SearchResult(results=results, relations=[mem0_relation(r) for r in relations])

    async def get(self, memory_id: str) -> MemoryItem:
        """One memory by id; ``NotFound`` if absent."""
        store = await self._ready()
        rows = await store.fetch(Selection.of_ids([check_memory_id(memory_id)]), limit=1)
        if not rows:
            raise NotFound(f"memory {memory_id} not found")
        return to_item(rows[0])

    async def get_all(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        app_id: str | None = None,
        limit: int = 100,
        filters: Mapping[str, Any] | None = None,
        before: tuple[str, str] | None = None,
        include_expired: bool = False,
    ) -> dict[str, list[MemoryItem]]:
        """The scope's memories, newest first; ``before=(created_at, id)`` pages past an item.
        Expired memories only with ``include_expired`` (as Mem0's get_all)."""
        scope = Scope(user_id, agent_id, run_id, app_id).require()
        limit = check_limit(limit, maximum=1_000_000)
        store = await self._ready()
        live = None if include_expired else now_stamp()
        rows = [
            row
            for row in await store.fetch(Selection(scope, filters=filters, unexpired_at=live))
            if before is None or (row["created_at"], row["id"]) < before
        ]
        rows.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
        return {"results": [to_item(row) for row in rows[:limit]]}

    async def export_structured(
        self,
        schema: type[ModelT] | Mapping[str, Any],
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        app_id: str | None = None,
        instructions: str | None = None,
        filters: Mapping[str, Any] | None = None,
        limit: int = 500,
        llm: ChatLLM | None = None,
    ) -> ModelT | dict[str, Any]:
        """The scope's memories (newest ``limit``) poured into ``schema`` by the LLM: an
        instance of the Pydantic model given, or a dict valid against the JSON Schema given;
        ``ExportInvalid`` when the answer still fails validation after one corrected retry."""
        target = json_schema_of(schema)
        listed = await self.get_all(
            user_id=user_id,
            agent_id=agent_id,
            run_id=run_id,
            app_id=app_id,
            limit=limit,
            filters=filters,
        )
        texts = [item["memory"] for item in listed["results"]]
        model = schema if isinstance(schema, type) else None
        data = await fill_schema(
            llm or self._chat_llm(), target, texts, instructions=instructions, model=model
        )
        return model.model_validate(data) if model is not None else data

    async def history(self, memory_id: str) -> list[HistoryItem]:
        """Every change to a memory, oldest first (also after it was deleted)."""
        store = await self._ready()
        return await store.history(check_memory_id(memory_id))

    # ---- profiles ----------------------------------------------------------------------

    async def profile(self, *, user_id: str) -> Profile | None:
        """The user's stored profile (None before the first build)."""
        Scope(user_id=user_id).require()
        return await self.profiles.get(user_id)

    async def build_profile(self, *, user_id: str, llm: ChatLLM | None = None) -> Profile | None:
        """(Re)build the user's profile from their newest memories (``profile.max_memories``)
        with ``llm`` (default: the configured one) and store it; a user without memories has
        none (a stored one is deleted). The profile's ``source_at`` is when the memories were
        read: every change stored before it is in it."""
        Scope(user_id=user_id).require()
        chosen = llm or self._chat_llm()
        started = time.time()
        listed = await self.get_all(user_id=user_id, limit=self.config.profile.max_memories)
        memories = listed["results"]
        if not memories:
            await self.profiles.delete(user_id)
            return None
        text = await write_profile(chosen, memories, self.config.profile)
        return await self.profiles.put(user_id, text, len(memories), started)

    # ---- change ------------------------------------------------------------------------

    async def update(
        self,
        memory_id: str,
        text: str | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        source: str | None = None,
        expiration_date: str | None = None,
        ttl_s: int | None = None,
        clear_expiration: bool = False,
        immutable: bool | None = None,
    ) -> MemoryItem:
        """Replace a memory's text (None keeps it), merge metadata, set when it expires
        (``expiration_date`` / ``ttl_s`` from now, ``clear_expiration``: never) and whether it
        is ``immutable``; returns the new item. A new text for an immutable memory raises
        ``ImmutableMemory`` unless this call also says ``immutable=False``."""
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise InvalidInput("text must be a non-empty string")
        extra = check_metadata(metadata)
        now = datetime.now(UTC)
        lifecycle = lifecycle_changes(expiration_date, ttl_s, clear_expiration, immutable, now)
        if text is None and metadata is None and not lifecycle:
            raise InvalidInput("nothing to update: give text, metadata, an expiration or immutable")
        current = await self.get(memory_id)
        new_text = memory_text(text) if text is not None else None
        check_text_change(current, new_text, immutable)
        await (await self._writes()).update(current, new_text, extra, source, lifecycle)
        return await self.get(memory_id)

    async def feedback(
        self, memory_id: str, feedback: str | None, feedback_reason: str | None = None
    ) -> dict[str, str | None]:
        """Mem0's feedback on a memory (``POSITIVE`` / ``NEGATIVE`` / ``VERY_NEGATIVE``, None
        takes it back): negative lowers it in search, very negative hides it from search and
        recall."""
        value, reason = check_feedback(feedback, feedback_reason)
        current = await self.get(memory_id)
        await (await self._writes()).set_feedback(current, value, reason)
        return {"id": current["id"], "feedback": value, "feedback_reason": reason}

    async def purge_expired(self) -> int:
        """Delete every memory expired by now (a DELETE history row each, source
        ``expired``); how many. Maintenance does it too (``expiration.purge``)."""
        store = await self._ready()
        purge = getattr(store, "purge_expired", None)
        return int(await purge()) if callable(purge) else 0

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

    async def delete(self, memory_id: str, *, source: str | None = None) -> dict[str, str]:
        """Delete one memory (its history stays, with a DELETE row)."""
        current = await self.get(memory_id)
        await (await self._writes()).delete(current, source)
        if self._graph is not None:
            await self._graph.forget(scope_of(current), [memory_id])
        return {"message": "Memory deleted successfully!"}

    async def delete_all(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        app_id: str | None = None,
    ) -> dict[str, Any]:
        """Delete every memory of the scope (all of them, however many)."""
        scope = Scope(user_id, agent_id, run_id, app_id).require()
        deleted = await (await self._writes()).delete_all(scope)
        if self._graph is not None:
            await self._graph.delete_scope(scope)
        if user_id is not None and agent_id is None and run_id is None and app_id is None:
            await self.profiles.delete(user_id)  # nothing of the user is left to summarise
        return {"message": "Memories deleted successfully!", "deleted": deleted}

    async def import_memories(self, records: Sequence[Mapping[str, Any]]) -> list[str]:
        """Store exported memories under their own ids (idempotent by id).

        Each record: ``id, memory, user_id/agent_id/run_id/app_id, metadata?, created_at?,
        updated_at?``. Returns, per record, ``"imported"``, ``"exists"`` (that id is already
        stored) or ``"duplicate"`` (the scope already holds that exact text).
        """
        await self._writes()
        assert self._importer is not None
        return await self._importer.import_memories(records)

    async def reset(self) -> None:
        """Delete every memory and all history of every user."""
        store = await self._ready()
        await store.reset()
        if self._graph is not None:
            await self._graph.store.reset()
        await self.profiles.reset()


__all__ = ["AsyncMemory"]
