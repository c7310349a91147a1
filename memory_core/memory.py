"""``AsyncMemory``: the memory API (Mem0's names and result shapes, ``{"results": [...]}``).

A facade: it checks what callers give it and hands writes to ``MemoryWriter`` (imports to
``MemoryImporter``), searches to ``MemorySearcher``; what it runs on, and its lifecycle, is
``MemoryResources`` (``memory_resources.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from .checks import (
    MessagesInput,
    check_limit,
    check_memory_id,
    check_metadata,
    memory_text,
    normalize_messages,
)
from .errors import InvalidInput, NotFound
from .exports import fill_schema, json_schema_of
from .extraction import ChatLLM
from .graph import mem0_relation
from .ingest import MediaIngest
from .learning_report import LearningReport
from .lifecycle import (
    check_categories,
    check_feedback,
    check_text_change,
    lifecycle_changes,
    requested_expiry,
)
from .media import find_media
from .memory_graph import learn_graph
from .memory_resources import MemoryResources
from .profiles import Profile, write_profile
from .records import scope_of, to_item
from .storage import Selection
from .timestamps import exchange_moment, now_stamp
from .types import AddResult, HistoryItem, MemoryItem, Scope, SearchResult
from .writer import WriteContext

ModelT = TypeVar("ModelT", bound=BaseModel)
log = logging.getLogger("memory_core.memory")


class AsyncMemory(MemoryResources):
    """Long-term memory for users, agents and runs, on LanceDB. All methods are coroutines."""

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
