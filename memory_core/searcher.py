"""Search: the rankings of a scope's memories for a query (exact vector, BM25 full text, and
the vector search around a date the query names), their candidates scored by the fusion
(``retrieval.py``), then thresholds, metadata checks, recency and an optional reranker."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from .config import MemoryConfig
from .dates import DayRange, created_bounds, created_within, named_days
from .embedders import Embedder, Vectors
from .graph import GraphMemory
from .records import to_item
from .retrieval import (
    Candidate,
    Ranking,
    Reranker,
    apply_feedback,
    apply_recency,
    collect_candidates,
    fusion_weights,
    is_time_sensitive,
    score_candidates,
)
from .scope_cache import CachingStore
from .scope_index import ScopeIndex, detached
from .storage import Row, Selection, Store, TextHit
from .timestamps import now_stamp
from .types import MemoryItem, Scope

log = logging.getLogger("memory_core.search")
_FTS_UNSAFE = re.compile(r"[^\w\s]+")
MAX_CACHED_QUERY_CHARS = 4000  # longer query texts are embedded every time, never kept


class MemorySearcher:
    """Ranks a scope's memories in ``store`` for a query embedded by ``embedder``."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        config: MemoryConfig,
        reranker: Reranker | None = None,
        graph: GraphMemory | None = None,
    ) -> None:
        self._graph = graph
        self._store = store
        self._embedder = embedder
        self._config = config
        self._reranker = reranker
        self._query_vectors: OrderedDict[str, Vectors] = OrderedDict()

    @property
    def mode(self) -> str:
        return self._config.search.mode if self._config.hybrid_search else "vector"

    async def search(
        self,
        query: str,
        scope: Scope,
        *,
        limit: int,
        threshold: float | None,
        filters: Mapping[str, Any] | None,
        graph: bool = False,
        include_expired: bool = False,
    ) -> tuple[list[MemoryItem], list[dict[str, Any]]]:
        """The ``limit`` best memories of ``scope`` for ``query``, each with its similarity,
        and, with ``graph`` (and graph memory on), the relations the graph walk used; never a
        memory very negative feedback hides, nor (unless ``include_expired``) an expired one."""
        selection = Selection(
            scope,
            filters=filters,
            unexpired_at=None if include_expired else now_stamp(),
            hide_very_negative=True,
        )
        check = self._store.row_check(selection)  # also refuses bad filters before any I/O
        cfg = self._config.search
        reranker = self._reranker
        keep = limit  # results taken from the fused list (the reranker sees more)
        if reranker is not None:
            keep = max(limit, cfg.reranker.candidates if cfg.reranker is not None else 50)
        depth = max(cfg.candidates, keep)
        if check is not None:  # metadata is checked after the search: go deeper
            depth = max(depth, limit * 20, 500)
        walked = await self._walk(query, selection, depth) if graph else None
        extra = {"graph": walked[0]} if walked else None
        candidates = await self.candidates(query, selection, depth, extra=extra)
        mode = self.mode
        weights = fusion_weights(cfg, mode)
        if walked is not None and self._graph is not None:  # in the vector rank's units
            weights["graph_rank"] = self._graph.config.weight * weights.get("vector_rank", 1.0)
        learned = cfg.fusion == "learned" and mode == "hybrid"
        fused = [(c.row, c.similarity, c.score) for c in score_candidates(candidates, weights)]
        # A top rank's worth: in the learned score's units, or RRF's 1 / (k + 1).
        unit = (weights.get("vector_rank", 1.0) if learned else 1.0) / (cfg.rrf_k + 1.0)
        if cfg.recency_weight > 0 and (cfg.recency_always or is_time_sensitive(query)):
            fused = apply_recency(
                fused,
                weight=cfg.recency_weight,
                half_life_days=cfg.recency_half_life_days,
                unit=unit,
            )
        fused = apply_feedback(fused, weight=cfg.feedback_weight, unit=unit)
        results: list[MemoryItem] = []
        for row, similarity, _fused in fused:
            if threshold is not None and similarity < threshold:
                continue
            if check is not None and not check(row):
                continue
            results.append(to_item(detached(row), similarity))
            if len(results) >= keep:
                break
        if reranker is not None and len(results) > 1:
            try:
                results = await reranker.rerank(query, results)
            except Exception as exc:  # a failing rerank provider must not fail the search
                log.warning("rerank failed, using the fused order: %r", exc)
        return results[:limit], walked[1] if walked else []

    async def _walk(
        self, query: str, selection: Selection, depth: int
    ) -> tuple[Ranking, list[dict[str, Any]]] | None:
        """The graph's ranking of the scope's memories (walk order) and its relations."""
        if self._graph is None:
            return None
        vector = await self._query_vector(query)
        recall = await self._graph.recall(query, vector, selection.scope)
        relations = await self._visible_relations(recall.relations, selection)
        reached = recall.memory_ids[:depth]
        if not reached:
            return [], relations
        found = await self._store.vector_search(
            vector,
            replace(selection, ids=tuple(reached)),  # the lifecycle conditions too
            limit=len(reached),
        )
        order = {memory_id: index for index, memory_id in enumerate(reached)}
        ranking = sorted(found, key=lambda hit: order[hit[0]["id"]])
        return ranking, relations

    async def _visible_relations(
        self, relations: list[dict[str, Any]], selection: Selection
    ) -> list[dict[str, Any]]:
        """The relations resting on at least one memory the search may show: one whose
        memories all expired, or were hidden by very negative feedback, is not recalled."""
        if not relations or (selection.unexpired_at is None and not selection.hide_very_negative):
            return relations
        cited = {m for relation in relations for m in relation.get("memory_ids") or []}
        lifecycle = Selection(
            selection.scope,
            ids=tuple(sorted(cited)),
            unexpired_at=selection.unexpired_at,
            hide_very_negative=selection.hide_very_negative,
        )
        shown = {row["id"] for row in await self._store.fetch(lifecycle)} if cited else set()
        return [
            r for r in relations if not r.get("memory_ids") or shown.intersection(r["memory_ids"])
        ]

    async def candidates(
        self,
        query: str,
        selection: Selection,
        depth: int | None = None,
        *,
        extra: Mapping[str, Ranking] | None = None,
    ) -> list[Candidate]:
        """The union of the rankings (vector, full text, date window), unscored, each
        ``depth`` (default ``search.candidates``) deep under ``selection``'s prefilter; also
        what ``python -m bench locomo --fit`` fits the fusion weights on.

        A scope the per-process cache (``scope_cache``) holds, or loads while the query is
        embedded, is ranked in process with the same searches; any other goes to the store's
        vector and full-text queries. ``extra``: more rankings (the graph's), fused like the
        others. A candidate's row may be the cache's own: read it, or copy it
        (``scope_index.detached``) before changing it."""
        cfg = self._config.search
        depth = depth or cfg.candidates
        mode = self.mode
        text_query = _FTS_UNSAFE.sub(" ", query).strip() if mode != "vector" else ""
        days = named_days(query) if cfg.date_weight > 0 else []
        # The query is embedded on the engine's thread while the cache answers (loading the
        # scope if need be) or, when it cannot, while the store's full-text search runs.
        embedding = asyncio.ensure_future(self._query_vector(query))
        try:
            await asyncio.sleep(0)  # its first step hands the query to the engine thread
            index = await self._scope_index(selection)
            if index is not None:
                window = created_bounds(days, slack_days=cfg.date_slack_days) if days else []
                visible = index.visible(selection.unexpired_at, selection.hide_very_negative)
                # On this thread while the query is embedded on the engine's.
                text_rankings = rank_text_in_index(
                    index, text_query, window, mode=mode, depth=depth, visible=visible
                )
                vector = await embedding
                vector_rankings = rank_vectors_in_index(
                    index, vector, window, mode=mode, depth=depth, visible=visible
                )
            else:
                vector_rankings, text_rankings = await self._rank_in_store(
                    embedding, text_query, selection, days, depth
                )
                vector = await embedding
                self._start_loading(selection)
        finally:
            if not embedding.done():
                embedding.cancel()
        rankings: dict[str, Ranking] = {**vector_rankings, **(extra or {})}
        text_scores: dict[str, float] = {}
        for name, hits in text_rankings.items():
            # One matrix-vector product for the cosines, not one Python call per hit.
            similarities: Any = np.stack([v for _row, v, _s in hits]) @ vector if hits else []
            rankings[name] = [
                (row, float(sim)) for (row, _v, _s), sim in zip(hits, similarities, strict=True)
            ]
            if name == "text":
                text_scores = {row["id"]: score for row, _v, score in hits}
        return collect_candidates(query, rankings, text_scores=text_scores, k=cfg.rrf_k)

    async def _query_vector(self, query: str) -> Vectors:
        """The query's vector; a repeated query text (chat UIs re-send the same turn, titles
        and tags repeat it) comes from a small LRU instead of the embedder."""
        cached = self._query_vectors.get(query)
        if cached is not None:
            self._query_vectors.move_to_end(query)
            return cached
        vector: Vectors = (await self._embedder.embed([query], purpose="query"))[0]
        limit = self._config.cache.query_vectors
        if limit and len(query) <= MAX_CACHED_QUERY_CHARS:
            self._query_vectors[query] = vector
            while len(self._query_vectors) > limit:
                self._query_vectors.popitem(last=False)
        return vector

    async def _scope_index(self, selection: Selection) -> ScopeIndex | None:
        """The cached (or just loaded) index of a plain scope selection (caller filters go to
        the store; the lifecycle conditions are the index's ``visible`` mask)."""
        store = self._store
        if not isinstance(store, CachingStore) or not _plain(selection):
            return None
        return await store.scope_index(selection.scope)

    def _start_loading(self, selection: Selection) -> None:
        """After the store answered a plain scope selection the cache had no room to load
        (``cache.max_loads``), load the scope for the next search."""
        if isinstance(self._store, CachingStore) and _plain(selection):
            self._store.cache.load(selection.scope)

    async def _rank_in_store(
        self,
        embedding: Awaitable[Vectors],
        text_query: str,
        selection: Selection,
        days: list[DayRange],
        depth: int,
    ) -> tuple[dict[str, list[tuple[Row, float]]], dict[str, list[TextHit]]]:
        """The store's searches; the full-text ones start before ``embedding`` is done."""
        cfg = self._config.search
        mode = self.mode
        store = self._store
        text_searches: dict[str, Awaitable[list[TextHit]]] = {}
        around = created_within(days, slack_days=cfg.date_slack_days) if days else None
        if text_query:
            text_searches["text"] = store.text_search(text_query, selection, limit=depth)
            if around is not None and mode == "text":
                window = replace(selection, window=around)
                text_searches["date"] = store.text_search(text_query, window, limit=depth)

        async def vector_rankings() -> dict[str, list[tuple[Row, float]]]:
            vector = await embedding
            searches: dict[str, Awaitable[list[tuple[Row, float]]]] = {}
            if mode != "text":
                searches["vector"] = store.vector_search(vector, selection, limit=depth)
                if around is not None:  # "what did I say on 8 May, 2023?": around that date too
                    window = replace(selection, window=around)
                    searches["date"] = store.vector_search(vector, window, limit=depth)
            return dict(zip(searches, await asyncio.gather(*searches.values()), strict=True))

        vectors, texts = await asyncio.gather(
            vector_rankings(), asyncio.gather(*text_searches.values())
        )
        return vectors, dict(zip(text_searches, texts, strict=True))


def _plain(selection: Selection) -> bool:
    """A whole scope, no caller filters: what the scope cache can answer."""
    return not (
        selection.filters
        or selection.ids is not None
        or selection.hashes is not None
        or selection.window
    )


def rank_in_index(
    index: ScopeIndex,
    vector: Vectors,
    text_query: str,
    window: list[tuple[str, str]],
    *,
    mode: str,
    depth: int,
    visible: npt.NDArray[np.bool_] | None = None,
) -> tuple[dict[str, list[tuple[Row, float]]], dict[str, list[TextHit]]]:
    """The searches of ``MemorySearcher._rank_in_store``, run on a cached scope (only its
    ``visible`` rows, when given)."""
    text_rankings = rank_text_in_index(
        index, text_query, window, mode=mode, depth=depth, visible=visible
    )
    vector_rankings = rank_vectors_in_index(
        index, vector, window, mode=mode, depth=depth, visible=visible
    )
    return vector_rankings, text_rankings


def rank_text_in_index(
    index: ScopeIndex,
    text_query: str,
    window: list[tuple[str, str]],
    *,
    mode: str,
    depth: int,
    visible: npt.NDArray[np.bool_] | None,
) -> dict[str, list[TextHit]]:
    """``rank_in_index``'s full-text rankings (they need no query vector)."""
    rankings: dict[str, list[TextHit]] = {}
    if text_query:
        rankings["text"] = index.text_search(text_query, limit=depth, where=visible)
        if window and mode == "text":
            around = _window_mask(index, window, visible)
            rankings["date"] = index.text_search(text_query, limit=depth, where=around)
    return rankings


def rank_vectors_in_index(
    index: ScopeIndex,
    vector: Vectors,
    window: list[tuple[str, str]],
    *,
    mode: str,
    depth: int,
    visible: npt.NDArray[np.bool_] | None,
) -> dict[str, list[tuple[Row, float]]]:
    """``rank_in_index``'s vector rankings."""
    rankings: dict[str, list[tuple[Row, float]]] = {}
    if mode != "text":
        rankings["vector"] = index.vector_search(vector, limit=depth, where=visible)
        if window:
            around = _window_mask(index, window, visible)
            rankings["date"] = index.vector_search(vector, limit=depth, where=around)
    return rankings


def _window_mask(
    index: ScopeIndex, window: list[tuple[str, str]], visible: npt.NDArray[np.bool_] | None
) -> npt.NDArray[np.bool_]:
    around = index.created_between(window)
    if visible is not None:
        around &= visible
    return around


__all__ = ["MemorySearcher", "rank_in_index", "rank_text_in_index", "rank_vectors_in_index"]
