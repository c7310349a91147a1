"""``AsyncMemory`` — the one implementation of the memory API — and ``Memory``, its sync wrapper.

Names and result shapes follow Mem0 (``{"results": [...]}``), so Mem0 users can switch.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
import uuid
import weakref
from collections.abc import Awaitable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .config import MemoryConfig
from .dates import created_within, named_days
from .embedders import Embedder, create_embedder
from .errors import InvalidFilter, InvalidInput, NotFound
from .extraction import (
    ChatLLM,
    Decision,
    LiteLLMChat,
    complete_json,
    offer_ids,
    parse_decisions,
    parse_facts,
)
from .filters import combine_sql, compile_filters, format_timestamp, ids_sql, normalize_timestamp
from .messages import cap_exchange, check_messages, message_text
from .prompts import (
    build_fact_extraction_messages,
    build_update_messages,
    learnable_messages,
)
from .retrieval import (
    Candidate,
    LiteLLMReranker,
    Reranker,
    apply_recency,
    collect_candidates,
    fusion_weights,
    is_time_sensitive,
    score_candidates,
)
from .store import SEARCH_TEXT, LanceStore, TextHit
from .types import AddResult, HistoryItem, MemoryItem, Message, Scope

T = TypeVar("T")
log = logging.getLogger("memory_core.memory")
RESERVED_METADATA = ("user_id", "agent_id", "run_id")
RRF_K = 60  # the usual reciprocal-rank-fusion constant (config: search.rrf_k)
MAX_MEMORY_CHARS = 10_000
_FTS_UNSAFE = re.compile(r"[^\w\s]+")

MessagesInput = str | Mapping[str, Any] | Sequence[Mapping[str, Any] | str]


def content_hash(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def normalize_messages(messages: MessagesInput) -> list[Message]:
    """Accept a string, one message, or a list of messages/strings; return chat messages."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if isinstance(messages, Mapping):
        messages = [messages]
    if not isinstance(messages, Sequence):
        raise InvalidInput("messages must be a string, a message object or a list of them")
    result: list[Message] = []
    for message in messages:
        if isinstance(message, str):
            result.append({"role": "user", "content": message})
        elif isinstance(message, Mapping):
            result.append({"role": "user", **message})
        else:
            raise InvalidInput("each message must be a string or an object with role and content")
    check_messages(result)
    return result


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Caller metadata, refusing identity keys (they would move memories between users)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidInput("metadata must be an object")
    clash = [key for key in RESERVED_METADATA if key in metadata]
    if clash:
        raise InvalidInput(f"metadata may not set {', '.join(clash)}; pass them as arguments")
    return dict(metadata)


def to_item(row: Mapping[str, Any], score: float | None = None) -> MemoryItem:
    item = MemoryItem(
        id=row["id"],
        memory=row["memory"],
        hash=row["hash"],
        metadata=row.get("metadata") or {},
        categories=list(row.get("categories") or []),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        user_id=row.get("user_id"),
        agent_id=row.get("agent_id"),
        run_id=row.get("run_id"),
    )
    if score is not None:
        item["score"] = round(score, 6)
    return item


class AsyncMemory:
    """Long-term memory for users, agents and runs, on LanceDB. All methods are coroutines."""

    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        embedder: Embedder | None = None,
        llm: ChatLLM | None = None,
        store: LanceStore | None = None,
        reranker: Reranker | None = None,
    ) -> None:
        self.config = config or MemoryConfig()
        self._embedder = embedder
        self._reranker = reranker
        self._owns_embedder = embedder is None  # close only what we created
        self._llm = llm
        self._store = store
        self._open_lock = asyncio.Lock()
        self._scope_locks: weakref.WeakValueDictionary[Scope, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    @classmethod
    def from_config(
        cls, config: MemoryConfig | Mapping[str, Any] | str | Path | None = None
    ) -> AsyncMemory:
        """Build from a ``MemoryConfig``, a dict, or a YAML file path."""
        source = dict(config) if isinstance(config, Mapping) else config
        return cls(MemoryConfig.parse(source))

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
                    self._store = LanceStore(
                        self.config.storage_uri,
                        embedder.dimension,
                        storage_options=self.config.storage_options,
                        read_consistency_interval_s=self.config.read_consistency_interval_s,
                        optimize_every=self.config.optimize_every,
                        cleanup_retention_s=self.config.cleanup_retention_s,
                    )
                await self._store.open()
        return self

    async def _ready(self) -> LanceStore:
        if self._store is None or not self._store.is_open:
            await self.open()
        assert self._store is not None
        return self._store

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
        close = getattr(self._embedder, "close", None)
        if self._owns_embedder and callable(close):
            close()

    @property
    def store(self) -> LanceStore | None:
        return self._store

    def _lock_for(self, scope: Scope) -> asyncio.Lock:
        lock = self._scope_locks.get(scope)
        if lock is None:
            lock = asyncio.Lock()
            self._scope_locks[scope] = lock
        return lock

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
        metadata: Mapping[str, Any] | None = None,
        infer: bool = True,
        timestamp: str | float | datetime | None = None,
        job_id: str | None = None,
        llm: ChatLLM | None = None,
        context: str | None = None,
    ) -> dict[str, list[AddResult]]:
        """Learn from ``messages``. ``infer=False`` stores each non-system message verbatim.

        ``timestamp`` is when the exchange happened (default: now); ``job_id`` makes a repeated
        call with the same id a no-op (used by the durable queue); ``llm`` overrides the
        configured extraction LLM for this call. ``context`` is the conversation just before
        ``messages`` (e.g. the turn a reply answers); it is never stored as a memory itself:
        with ``infer=False`` each stored message is embedded and full-text indexed after it
        (so "Yes, last Sunday!" is found by what it answers), with ``infer=True`` the
        extractor sees it as background it must not learn from.
        """
        scope = Scope(user_id, agent_id, run_id).require()
        extra = check_metadata(metadata)
        if context is not None and not isinstance(context, str):
            raise InvalidInput("context must be a string")
        context = (context or "").strip()[:MAX_MEMORY_CHARS] or None
        chat = [m for m in normalize_messages(messages) if m.get("role") != "system"]
        if infer:
            limits = self.config.limits
            chat = [
                dict(m)
                for m in cap_exchange(
                    chat,
                    max_user_chars=limits.max_exchange_user_chars,
                    max_reply_chars=limits.max_exchange_reply_chars,
                )
            ]
        when = _moment(timestamp)
        store = await self._ready()
        async with self._lock_for(scope):
            if job_id is not None and await store.job_applied(job_id):
                return {"results": []}
            if not infer:
                texts = [message_text(m) for m in chat]
                return {
                    "results": await self._add_verbatim(
                        store, scope, texts, extra, when, job_id, context
                    )
                }
            results = await self._add_inferred(
                store, scope, chat, extra, when, job_id, llm or self._chat_llm(), context
            )
            return {"results": results}

    async def _add_verbatim(
        self,
        store: LanceStore,
        scope: Scope,
        texts: Sequence[str],
        metadata: dict[str, Any],
        when: datetime,
        job_id: str | None,
        context: str | None = None,
    ) -> list[AddResult]:
        fresh = await self._without_known(store, scope, texts, job_id=job_id)
        if not fresh:
            return []
        vectors = await self.embedder.embed(
            [with_context(text, context) for text in fresh], purpose="passage"
        )
        return await self._insert(
            store, scope, fresh, vectors, metadata, when, job_id, context=context
        )

    async def _without_known(
        self,
        store: LanceStore,
        scope: Scope,
        texts: Sequence[str],
        *,
        job_id: str | None = None,
    ) -> list[str]:
        """Drop empty texts, repeats, and texts this scope already holds (exact-hash guard).

        For a queued job, a known text whose row has no history at all was inserted by an
        earlier run of this job that died before writing history: its ADD row is written now.
        """
        unique: dict[str, str] = {}
        for text in texts:
            clean = text.strip()[:MAX_MEMORY_CHARS]
            if clean:
                unique.setdefault(content_hash(clean), clean)
        known: dict[str, dict[str, Any]] = {}
        hashes = list(unique)
        for start in range(0, len(hashes), 500):
            where = combine_sql(
                compile_filters(scope, None).sql, ids_sql("hash", hashes[start : start + 500])
            )
            known.update((row["hash"], row) for row in await store.fetch(where))
        if job_id is not None and known:
            await self._repair_history(store, scope, list(known.values()), job_id)
        return [text for digest, text in unique.items() if digest not in known]

    async def _repair_history(
        self, store: LanceStore, scope: Scope, rows: Sequence[dict[str, Any]], job_id: str
    ) -> None:
        recorded = await store.memory_ids_with_history([row["id"] for row in rows])
        missing = [row for row in rows if row["id"] not in recorded]
        if missing:
            stamp = _now()
            await store.add_history(
                [
                    _history_row(row["id"], scope, None, row["memory"], "ADD", stamp, job_id)
                    for row in missing
                ]
            )

    async def _insert(
        self,
        store: LanceStore,
        scope: Scope,
        texts: Sequence[str],
        vectors: np.ndarray[Any, Any],
        metadata: dict[str, Any],
        when: datetime,
        job_id: str | None,
        *,
        context: str | None = None,
    ) -> list[AddResult]:
        """Write new rows; ``vectors`` were made from ``with_context(text, context)``."""
        stamp = format_timestamp(when)
        now = _now()
        rows = []
        history = []
        for text, vector in zip(texts, vectors, strict=True):
            memory_id = str(uuid.uuid4())
            rows.append(
                {
                    "id": memory_id,
                    **scope.as_dict(),
                    "memory": text,
                    "hash": content_hash(text),
                    "vector": vector,
                    "metadata": metadata,
                    "categories": [],
                    "created_at": stamp,
                    "updated_at": stamp,
                    SEARCH_TEXT: with_context(text, context),
                }
            )
            history.append(_history_row(memory_id, scope, None, text, "ADD", now, job_id))
        await store.insert(rows)
        await store.add_history(history)
        return [AddResult(id=row["id"], memory=row["memory"], event="ADD") for row in rows]

    async def _add_inferred(
        self,
        store: LanceStore,
        scope: Scope,
        chat: list[Message],
        metadata: dict[str, Any],
        when: datetime,
        job_id: str | None,
        llm: ChatLLM,
        context: str | None = None,
    ) -> list[AddResult]:
        cfg = self.config
        chat = learnable_messages(chat)
        if not chat:  # only recalled memories, task prompts or nothing from the user
            return []
        extraction = build_fact_extraction_messages(
            chat,
            today=when.date().isoformat(),
            include=cfg.include,
            exclude=cfg.exclude,
            categories=cfg.categories,
            custom_prompt=cfg.fact_extraction_prompt,
            context=context,
        )
        facts = parse_facts(await complete_json(llm, extraction))
        facts = await self._without_known(store, scope, facts, job_id=job_id)
        if not facts:
            return []
        vectors = await self.embedder.embed(facts, purpose="passage")
        base = compile_filters(scope, None).sql
        neighbours = await asyncio.gather(
            *(store.vector_search(v, base, limit=cfg.similar_memories) for v in vectors)
        )
        existing: dict[str, dict[str, Any]] = {}
        for hits in neighbours:
            for row, _similarity in hits:
                existing.setdefault(row["id"], row)
        if existing:
            offered = offer_ids(list(existing))
            update = build_update_messages(
                facts,
                [(small, existing[real]["memory"]) for small, real in offered.items()],
                custom_prompt=cfg.update_memory_prompt,
            )
            decisions = parse_decisions(await complete_json(llm, update), offered)
        else:  # nothing similar stored yet: every fact is new, no second LLM call
            decisions = [Decision("ADD", fact) for fact in facts]
        known_vectors = dict(zip(facts, vectors, strict=True))
        return await self._apply(
            store, scope, decisions, existing, known_vectors, metadata, when, job_id
        )

    async def _apply(
        self,
        store: LanceStore,
        scope: Scope,
        decisions: Sequence[Decision],
        existing: Mapping[str, dict[str, Any]],
        known_vectors: Mapping[str, np.ndarray[Any, Any]],
        metadata: dict[str, Any],
        when: datetime,
        job_id: str | None,
    ) -> list[AddResult]:
        """Apply validated decisions; every vector is computed before the first write."""
        adds = await self._without_known(
            store, scope, [d.text for d in decisions if d.event == "ADD"]
        )
        updates = [
            d
            for d in decisions
            if d.event == "UPDATE" and d.text != existing[d.memory_id or ""]["memory"]
        ]
        deletes = [d for d in decisions if d.event == "DELETE"]
        need = [t for t in adds + [d.text for d in updates] if t not in known_vectors]
        vectors = dict(known_vectors)
        if need:
            vectors.update(
                zip(need, await self.embedder.embed(need, purpose="passage"), strict=True)
            )
        if adds and self.config.duplicate_threshold is not None:
            busy = {d.memory_id or "" for d in updates + deletes}
            adds, refined = await self._near_duplicates(store, scope, adds, vectors, busy)
            existing = {**existing, **{row["id"]: row for _d, row in refined}}
            updates += [decision for decision, _row in refined]
        results: list[AddResult] = []
        if adds:
            add_vectors = np.stack([vectors[t] for t in adds])
            results += await self._insert(store, scope, adds, add_vectors, metadata, when, job_id)
        now = _now()
        history = []
        for decision in updates:
            memory_id = decision.memory_id or ""
            old = existing[memory_id]["memory"]
            merged = {**existing[memory_id].get("metadata", {}), **metadata}
            await store.update(
                memory_id,
                {
                    "memory": decision.text,
                    "hash": content_hash(decision.text),
                    "vector": vectors[decision.text],
                    "metadata": merged,
                    "updated_at": format_timestamp(when),
                },
            )
            history.append(
                _history_row(memory_id, scope, old, decision.text, "UPDATE", now, job_id)
            )
            results.append(
                AddResult(id=memory_id, memory=decision.text, event="UPDATE", previous_memory=old)
            )
        if deletes:
            await store.delete(ids_sql("id", [d.memory_id or "" for d in deletes]))
            for decision in deletes:
                memory_id = decision.memory_id or ""
                old = existing[memory_id]["memory"]
                history.append(
                    _history_row(memory_id, scope, old, None, "DELETE", now, job_id, deleted=True)
                )
                results.append(AddResult(id=memory_id, memory=old, event="DELETE"))
        await store.add_history(history)
        return results

    async def _near_duplicates(
        self,
        store: LanceStore,
        scope: Scope,
        adds: Sequence[str],
        vectors: Mapping[str, np.ndarray[Any, Any]],
        busy: set[str],
    ) -> tuple[list[str], list[tuple[Decision, dict[str, Any]]]]:
        """Split new texts into real additions and near-duplicates of what the scope holds.

        A text with cosine >= ``duplicate_threshold`` to a memory of the scope (one not already
        updated or deleted in this call) or to an earlier new text of this call is not a new
        row: it becomes an UPDATE of that memory when it only adds words to it, else NONE.
        """
        threshold = self.config.duplicate_threshold
        assert threshold is not None
        base = compile_filters(scope, None).sql
        hits = await asyncio.gather(*(store.vector_search(vectors[t], base, limit=3) for t in adds))
        kept: list[str] = []
        refined: list[tuple[Decision, dict[str, Any]]] = []
        for text, found in zip(adds, hits, strict=True):
            vector = vectors[text]
            if any(
                is_near_duplicate(float(np.dot(vector, vectors[other])), text, other, threshold)
                for other in kept
            ):
                continue
            match = next(
                (
                    row
                    for row, sim in found
                    if row["id"] not in busy
                    and is_near_duplicate(sim, text, row["memory"], threshold)
                ),
                None,
            )
            if match is None:
                kept.append(text)
            elif refines(text, match["memory"]):
                busy.add(match["id"])
                refined.append((Decision("UPDATE", text, match["id"]), match))
        return kept, refined

    # ---- read --------------------------------------------------------------------------

    async def search(
        self,
        query: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        limit: int = 10,
        threshold: float | None = None,
        filters: Mapping[str, Any] | None = None,
    ) -> dict[str, list[MemoryItem]]:
        """Memories of the scope most relevant to ``query``, best first, with a ``score``."""
        scope = Scope(user_id, agent_id, run_id).require()
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("query must be a non-empty string")
        limit = _check_limit(limit)
        compiled = compile_filters(scope, filters, self.config.limits)
        cfg = self.config.search
        reranker = self.reranker
        keep = limit  # results taken from the fused list (the reranker sees more)
        if reranker is not None:
            keep = max(limit, cfg.reranker.candidates if cfg.reranker is not None else 50)
        depth = max(cfg.candidates, keep)
        if compiled.predicate is not None:  # metadata is checked after the search: go deeper
            depth = max(depth, limit * 20, 500)
        candidates = await self._candidates(query, scope, filters, compiled.sql, depth)
        mode = cfg.mode if self.config.hybrid_search else "vector"
        weights = fusion_weights(cfg, mode)
        learned = cfg.fusion == "learned" and mode == "hybrid"
        fused = [(c.row, c.similarity, c.score) for c in score_candidates(candidates, weights)]
        if cfg.recency_weight > 0 and (cfg.recency_always or is_time_sensitive(query)):
            fused = apply_recency(
                fused,
                weight=cfg.recency_weight,
                half_life_days=cfg.recency_half_life_days,
                # A top rank's worth: in the learned score's units, or RRF's 1 / (k + 1).
                unit=(weights.get("vector_rank", 1.0) if learned else 1.0) / (cfg.rrf_k + 1.0),
            )
        results: list[MemoryItem] = []
        for row, similarity, _fused in fused:
            if threshold is not None and similarity < threshold:
                continue
            if not compiled.matches(row):
                continue
            results.append(to_item(row, similarity))
            if len(results) >= keep:
                break
        if reranker is not None and len(results) > 1:
            try:
                results = await reranker.rerank(query, results)
            except Exception as exc:  # a failing rerank provider must not fail the search
                log.warning("rerank failed, using the fused order: %r", exc)
        return {"results": results[:limit]}

    async def search_candidates(
        self, query: str, *, user_id: str, depth: int | None = None
    ) -> list[Candidate]:
        """What ``search`` scores for ``query``: every candidate with its features (used to
        fit the fusion weights, ``python -m bench locomo --fit``)."""
        scope = Scope(user_id).require()
        where = compile_filters(scope, None).sql
        depth = depth or self.config.search.candidates
        return await self._candidates(query, scope, None, where, depth)

    async def _candidates(
        self,
        query: str,
        scope: Scope,
        filters: Mapping[str, Any] | None,
        where: str,
        depth: int,
    ) -> list[Candidate]:
        """The union of the rankings (vector, full text, date window), unscored, each
        ``depth`` deep under the prefilter ``where``."""
        store = await self._ready()
        cfg = self.config.search
        mode = cfg.mode if self.config.hybrid_search else "vector"
        text_query = _FTS_UNSAFE.sub(" ", query).strip() if mode != "vector" else ""
        vector = (await self.embedder.embed([query], purpose="query"))[0]
        vector_searches: dict[str, Awaitable[list[tuple[dict[str, Any], float]]]] = {}
        text_searches: dict[str, Awaitable[list[TextHit]]] = {}
        if mode != "text":
            vector_searches["vector"] = store.vector_search(vector, where, limit=depth)
        if text_query:
            text_searches["text"] = store.text_search(text_query, where, limit=depth)
        days = named_days(query) if cfg.date_weight > 0 else []
        if days:  # "what did I say on 8 May, 2023?": rank what was said around that date too
            around = created_within(days, slack_days=cfg.date_slack_days)
            window = combine_sql(where, compile_filters(scope, around).sql)
            if mode != "text":
                vector_searches["date"] = store.vector_search(vector, window, limit=depth)
            elif text_query:
                text_searches["date"] = store.text_search(text_query, window, limit=depth)
        found = await asyncio.gather(*vector_searches.values(), *text_searches.values())
        rankings = dict(zip(vector_searches, found, strict=False))
        text_scores: dict[str, float] = {}
        for name, hits in zip(text_searches, found[len(vector_searches) :], strict=True):
            # One matrix-vector product for the cosines, not one Python call per hit.
            similarities = np.stack([v for _row, v, _s in hits]) @ vector if hits else []
            rankings[name] = [
                (row, float(sim)) for (row, _v, _s), sim in zip(hits, similarities, strict=True)
            ]
            if name == "text":
                text_scores = {row["id"]: score for row, _v, score in hits}
        return collect_candidates(query, rankings, text_scores=text_scores, k=cfg.rrf_k)

    async def get(self, memory_id: str) -> MemoryItem:
        """One memory by id; ``NotFound`` if absent."""
        store = await self._ready()
        rows = await store.fetch(ids_sql("id", [_check_memory_id(memory_id)]), limit=1)
        if not rows:
            raise NotFound(f"memory {memory_id} not found")
        return to_item(rows[0])

    async def get_all(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        limit: int = 100,
        filters: Mapping[str, Any] | None = None,
        before: tuple[str, str] | None = None,
    ) -> dict[str, list[MemoryItem]]:
        """The scope's memories, newest first; ``before=(created_at, id)`` pages past an item."""
        scope = Scope(user_id, agent_id, run_id).require()
        limit = _check_limit(limit, maximum=1_000_000)
        compiled = compile_filters(scope, filters, self.config.limits)
        store = await self._ready()
        rows = [
            row
            for row in await store.fetch(compiled.sql)
            if compiled.matches(row) and (before is None or (row["created_at"], row["id"]) < before)
        ]
        rows.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
        return {"results": [to_item(row) for row in rows[:limit]]}

    async def history(self, memory_id: str) -> list[HistoryItem]:
        """Every change to a memory, oldest first (also after it was deleted)."""
        store = await self._ready()
        return await store.history(_check_memory_id(memory_id))

    # ---- change ------------------------------------------------------------------------

    async def update(
        self, memory_id: str, text: str, *, metadata: Mapping[str, Any] | None = None
    ) -> MemoryItem:
        """Replace a memory's text (and optionally merge metadata); returns the new item."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput("text must be a non-empty string")
        text = text.strip()[:MAX_MEMORY_CHARS]
        extra = check_metadata(metadata)
        current = await self.get(memory_id)
        store = await self._ready()
        scope = Scope(current.get("user_id"), current.get("agent_id"), current.get("run_id"))
        async with self._lock_for(scope):
            vector = (await self.embedder.embed([text], purpose="passage"))[0]
            stamp = _now()
            merged = {**current.get("metadata", {}), **extra}
            await store.update(
                memory_id,
                {
                    "memory": text,
                    "hash": content_hash(text),
                    "vector": vector,
                    "metadata": merged,
                    "updated_at": stamp,
                },
            )
            await store.add_history(
                [_history_row(memory_id, scope, current["memory"], text, "UPDATE", stamp, None)]
            )
        return await self.get(memory_id)

    async def delete(self, memory_id: str) -> dict[str, str]:
        """Delete one memory (its history stays, with a DELETE row)."""
        current = await self.get(memory_id)
        store = await self._ready()
        scope = Scope(current.get("user_id"), current.get("agent_id"), current.get("run_id"))
        async with self._lock_for(scope):
            await store.delete(ids_sql("id", [memory_id]))
            await store.add_history(
                [
                    _history_row(
                        memory_id,
                        scope,
                        current["memory"],
                        None,
                        "DELETE",
                        _now(),
                        None,
                        deleted=True,
                    )
                ]
            )
        return {"message": "Memory deleted successfully!"}

    async def delete_all(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """Delete every memory of the scope (all of them, however many)."""
        scope = Scope(user_id, agent_id, run_id).require()
        store = await self._ready()
        where = compile_filters(scope, None).sql
        async with self._lock_for(scope):
            rows = await store.fetch(where)
            if rows:
                await store.delete(where)
                stamp = _now()
                await store.add_history(
                    [
                        _history_row(
                            r["id"], scope, r["memory"], None, "DELETE", stamp, None, deleted=True
                        )
                        for r in rows
                    ]
                )
        return {"message": "Memories deleted successfully!", "deleted": len(rows)}

    async def import_memories(self, records: Sequence[Mapping[str, Any]]) -> list[str]:
        """Store exported memories under their own ids (idempotent by id).

        Each record: ``id, memory, user_id/agent_id/run_id, metadata?, created_at?,
        updated_at?``. Returns, per record, ``"imported"``, ``"exists"`` (that id is already
        stored) or ``"duplicate"`` (the scope already holds that exact text).
        """
        store = await self._ready()
        statuses = ["imported"] * len(records)
        by_scope: dict[Scope, list[int]] = {}
        for index, record in enumerate(records):
            scope = Scope(record.get("user_id"), record.get("agent_id"), record.get("run_id"))
            by_scope.setdefault(scope.require(), []).append(index)
        now = _now()
        for scope, indexes in by_scope.items():
            async with self._lock_for(scope):
                ids = [_check_memory_id(str(records[i]["id"])) for i in indexes]
                taken: set[str] = set()
                for start in range(0, len(ids), 500):
                    chunk = ids_sql("id", ids[start : start + 500])
                    taken.update(row["id"] for row in await store.fetch(chunk))
                texts = [str(records[i]["memory"]).strip()[:MAX_MEMORY_CHARS] for i in indexes]
                fresh = set(await self._without_known(store, scope, texts))
                keep: list[int] = []
                for index, memory_id, text in zip(indexes, ids, texts, strict=True):
                    if memory_id in taken:
                        statuses[index] = "exists"
                    elif text not in fresh:
                        statuses[index] = "duplicate"
                    else:
                        fresh.discard(text)  # a repeat later in the batch is a duplicate
                        taken.add(memory_id)
                        keep.append(index)
                if not keep:
                    continue
                kept_texts = [str(records[i]["memory"]).strip()[:MAX_MEMORY_CHARS] for i in keep]
                vectors = await self.embedder.embed(kept_texts, purpose="passage")
                rows = []
                history = []
                for index, text, vector in zip(keep, kept_texts, vectors, strict=True):
                    record = records[index]
                    created = normalize_timestamp(record.get("created_at") or now)
                    updated = normalize_timestamp(record.get("updated_at") or created)
                    memory_id = str(record["id"])
                    rows.append(
                        {
                            "id": memory_id,
                            **scope.as_dict(),
                            "memory": text,
                            "hash": content_hash(text),
                            "vector": vector,
                            "metadata": check_metadata(record.get("metadata")),
                            "categories": list(record.get("categories") or []),
                            "created_at": created,
                            "updated_at": updated,
                        }
                    )
                    history.append(_history_row(memory_id, scope, None, text, "ADD", now, None))
                await store.insert(rows)
                await store.add_history(history)
        return statuses

    async def reset(self) -> None:
        """Delete every memory and all history of every user."""
        store = await self._ready()
        await store.reset()


def with_context(text: str, context: str | None) -> str:
    """What is embedded and full-text indexed for a memory said after ``context``."""
    return f"{context}\n{text}" if context else text


_WORDS = re.compile(r"\w+")
_NUMBERS = re.compile(r"\d+(?:[.,]\d+)*")


def is_near_duplicate(similarity: float, new: str, old: str, threshold: float) -> bool:
    """Same fact in other words: cosine >= ``threshold`` and the same numbers (dates, ages and
    amounts are where near-identical sentences differ: "born in 1990" vs "born in 1985")."""
    return similarity >= threshold and set(_NUMBERS.findall(new)) == set(_NUMBERS.findall(old))


def refines(new: str, old: str) -> bool:
    """True when ``new`` says everything ``old`` says and more (all its words, plus others)."""
    new_words = set(_WORDS.findall(new.lower()))
    old_words = set(_WORDS.findall(old.lower()))
    return old_words < new_words


def _history_row(
    memory_id: str,
    scope: Scope,
    old: str | None,
    new: str | None,
    event: str,
    stamp: str,
    job_id: str | None,
    *,
    deleted: bool = False,
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "memory_id": memory_id,
        **scope.as_dict(),
        "old_memory": old,
        "new_memory": new,
        "event": event,
        "job_id": job_id,
        "created_at": stamp,
        "updated_at": stamp,
        "is_deleted": deleted,
    }


def _now() -> str:
    return format_timestamp(datetime.now(UTC))


def _moment(timestamp: str | float | datetime | None) -> datetime:
    if timestamp is None:
        return datetime.now(UTC)
    if isinstance(timestamp, datetime):
        return timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
    try:
        return datetime.fromisoformat(normalize_timestamp(timestamp))
    except InvalidFilter as exc:  # same parser as filters, but here it is bad input
        raise InvalidInput(f"timestamp: {exc}") from exc


def _check_limit(limit: int, *, maximum: int = 1000) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= maximum:
        raise InvalidInput(f"limit must be an integer from 1 to {maximum}")
    return limit


def _check_memory_id(memory_id: str) -> str:
    if not isinstance(memory_id, str) or not 1 <= len(memory_id) <= 128:
        raise NotFound("memory not found")
    return memory_id


class Memory:
    """Synchronous facade over ``AsyncMemory``: each call runs on a private event loop thread."""

    def __init__(self, config: MemoryConfig | None = None, **components: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="memory")
        self._thread.start()
        self._async = self._run(_construct(config, components))

    @classmethod
    def from_config(
        cls, config: MemoryConfig | Mapping[str, Any] | str | Path | None = None
    ) -> Memory:
        source = dict(config) if isinstance(config, Mapping) else config
        return cls(MemoryConfig.parse(source))

    @property
    def async_memory(self) -> AsyncMemory:
        return self._async

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def add(self, messages: MessagesInput, **kwargs: Any) -> dict[str, list[AddResult]]:
        return self._run(self._async.add(messages, **kwargs))

    def search(self, query: str, **kwargs: Any) -> dict[str, list[MemoryItem]]:
        return self._run(self._async.search(query, **kwargs))

    def get(self, memory_id: str) -> MemoryItem:
        return self._run(self._async.get(memory_id))

    def get_all(self, **kwargs: Any) -> dict[str, list[MemoryItem]]:
        return self._run(self._async.get_all(**kwargs))

    def update(self, memory_id: str, text: str, **kwargs: Any) -> MemoryItem:
        return self._run(self._async.update(memory_id, text, **kwargs))

    def delete(self, memory_id: str) -> dict[str, str]:
        return self._run(self._async.delete(memory_id))

    def delete_all(self, **kwargs: Any) -> dict[str, Any]:
        return self._run(self._async.delete_all(**kwargs))

    def history(self, memory_id: str) -> list[HistoryItem]:
        return self._run(self._async.history(memory_id))

    def import_memories(self, records: Sequence[Mapping[str, Any]]) -> list[str]:
        return self._run(self._async.import_memories(records))

    def reset(self) -> None:
        self._run(self._async.reset())

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._async.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _construct(config: MemoryConfig | None, components: dict[str, Any]) -> AsyncMemory:
    # AsyncMemory creates asyncio locks, so it is built on the loop that will use it.
    return AsyncMemory(config, **components)
