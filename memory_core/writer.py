"""Every write of the library but imports (``importer.py``): verbatim adds, learned adds
(extraction, then ADD / UPDATE / DELETE / NONE decisions applied), near-duplicate folding,
updates and deletes.

One lock per scope serialises a scope's writes (they would race on UPDATE/DELETE); every
vector of a write is computed before its first row changes; each change writes history.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np

from .changes import ChangeObserver, changes_of
from .checks import memory_text
from .config import MemoryConfig
from .duplicate_guard import near_duplicates
from .embedders import Embedder
from .extraction import Decision
from .inference import infer
from .learning_report import LearningReport
from .lifecycle import default_expiry, protect_immutable
from .llm_client import ChatLLM
from .messages import message_text
from .records import (
    content_hash,
    history_row,
    memory_row,
    scope_of,
    updated_values,
    with_context,
)
from .storage import Row, Selection, Store
from .timestamps import format_timestamp, now_stamp
from .types import AddResult, Event, MemoryItem, Message, Scope

HASH_BATCH = 500  # hashes or ids per lookup query


@dataclass(frozen=True, slots=True)
class WriteContext:
    """What one add call writes with: whose memories, when it was said, the caller's
    metadata, the queue job it applies (idempotency), and the conversation just before."""

    scope: Scope
    when: datetime
    metadata: Mapping[str, Any]
    job_id: str | None = None
    context: str | None = None
    source: str | None = None
    # What the new rows carry (``lifecycle.py``): None expires_at falls back to the configured
    # TTL of the categories, if any.
    categories: tuple[str, ...] = ()
    expires_at: str | None = None
    immutable: bool = False

    def history(
        self, memory_id: str, old: str | None, new: str | None, event: Event, stamp: str
    ) -> Row:
        """The history row of one change this write makes (its scope, job and source)."""
        return history_row(memory_id, self.scope, old, new, event, stamp, self.job_id, self.source)


class MemoryWriter:
    """Writes memories of any scope into ``store``, embedding with ``embedder``."""

    def __init__(self, store: Store, embedder: Embedder, config: MemoryConfig) -> None:
        self._store = store
        self._embedder = embedder
        self._config = config
        self.observers: list[ChangeObserver] = []
        self._locks: weakref.WeakValueDictionary[Scope, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def lock(self, scope: Scope) -> asyncio.Lock:
        lock = self._locks.get(scope)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[scope] = lock
        return lock

    @property
    def store(self) -> Store:
        return self._store

    @property
    def config(self) -> MemoryConfig:
        return self._config

    async def record_history(self, rows: Sequence[Row]) -> None:
        """Store history rows, then tell the observers what changed (every change of every
        write path passes here)."""
        if not rows:
            return
        await self._store.add_history(rows)
        changes = changes_of(rows)
        for observer in list(self.observers):
            await observer.memories_changed(changes)

    async def embed(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        return await self._embedder.embed(list(texts), purpose="passage")

    # ---- add ---------------------------------------------------------------------------

    async def add(
        self,
        write: WriteContext,
        chat: list[Message],
        *,
        llm: ChatLLM | None,
        report: LearningReport | None = None,
    ) -> list[AddResult]:
        """Store ``chat`` verbatim (``llm`` None) or learn from it, counting what happened in
        ``report``; a job applied before is a no-op."""
        report = report if report is not None else LearningReport()
        async with self.lock(write.scope):
            if write.job_id is not None and await self._store.job_applied(write.job_id):
                report.skipped = "already_applied"
                return []
            if llm is None:
                results = await self._add_verbatim(write, [message_text(m) for m in chat])
                report.applied.update(r["event"] for r in results)
                return results
            return await self._add_inferred(write, chat, llm, report)

    async def add_each(
        self, write: WriteContext, texts: Sequence[str], metadatas: Sequence[Mapping[str, Any]]
    ) -> list[AddResult]:
        """Store ``texts`` verbatim, each with its own metadata (a document's passages)."""
        async with self.lock(write.scope):
            return await self._add_verbatim(write, texts, metadatas)

    async def _add_verbatim(
        self,
        write: WriteContext,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[AddResult]:
        fresh = await self.without_known(write.scope, texts, job_id=write.job_id)
        if not fresh:
            return []
        vectors = await self.embed([with_context(text, write.context) for text in fresh])
        own = dict(zip(map(memory_text, texts), metadatas or (), strict=False))
        return await self._insert(write, fresh, vectors, [own.get(t, {}) for t in fresh])

    async def without_known(
        self, scope: Scope, texts: Sequence[str], *, job_id: str | None = None
    ) -> list[str]:
        """Drop empty texts, repeats, and texts this scope already holds (exact-hash guard).

        For a queued job, a known text whose row has no history at all was inserted by an
        earlier run of this job that died before writing history: its ADD row is written now.
        """
        return (await self.split_known(scope, texts, job_id=job_id))[0]

    async def split_known(
        self, scope: Scope, texts: Sequence[str], *, job_id: str | None = None
    ) -> tuple[list[str], list[Row]]:
        """``without_known``, and the stored rows of the known texts."""
        unique: dict[str, str] = {}
        for text in texts:
            clean = memory_text(text)
            if clean:
                unique.setdefault(content_hash(clean), clean)
        known: dict[str, Row] = {}
        hashes = list(unique)
        now = now_stamp()  # an expired memory is as good as gone: saying it again stores it
        for start in range(0, len(hashes), HASH_BATCH):
            chunk = Selection(
                scope, hashes=tuple(hashes[start : start + HASH_BATCH]), unexpired_at=now
            )
            known.update((row["hash"], row) for row in await self._store.fetch(chunk))
        if job_id is not None and known:
            await self._repair_history(scope, list(known.values()), job_id)
        fresh = [text for digest, text in unique.items() if digest not in known]
        return fresh, [known[digest] for digest in unique if digest in known]

    async def _repair_history(self, scope: Scope, rows: Sequence[Row], job_id: str) -> None:
        recorded = await self._store.memory_ids_with_history([row["id"] for row in rows])
        missing = [row for row in rows if row["id"] not in recorded]
        if missing:
            stamp = now_stamp()
            await self.record_history(
                [
                    history_row(row["id"], scope, None, row["memory"], "ADD", stamp, job_id)
                    for row in missing
                ]
            )

    async def _insert(
        self,
        write: WriteContext,
        texts: Sequence[str],
        vectors: np.ndarray[Any, Any],
        own: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[AddResult]:
        """Write new rows; ``vectors`` were made from ``with_context(text, write.context)``;
        ``own`` adds each row's own metadata to the write's."""
        stamp = format_timestamp(write.when)
        now = now_stamp()
        expiration = self._config.expiration
        expires_at = write.expires_at or default_expiry(
            write.categories, expiration.by_category, write.when
        )
        rows = [
            memory_row(
                write.scope,
                text,
                vector,
                {**write.metadata, **extra},
                created_at=stamp,
                context=write.context,
                categories=write.categories,
                expires_at=expires_at,
                immutable=write.immutable,
            )
            for text, vector, extra in zip(texts, vectors, own or [{}] * len(texts), strict=True)
        ]
        await self._store.insert(rows)
        await self.record_history(
            [write.history(row["id"], None, row["memory"], "ADD", now) for row in rows]
        )
        return [AddResult(id=row["id"], memory=row["memory"], event="ADD") for row in rows]

    async def _add_inferred(
        self, write: WriteContext, chat: list[Message], llm: ChatLLM, report: LearningReport
    ) -> list[AddResult]:
        inferred = await infer(self, write, chat, llm, report)
        if inferred is None:
            return []
        results = await self._apply(
            write, inferred.decisions, inferred.existing, inferred.vectors, report
        )
        report.applied.update(r["event"] for r in results)
        report.applied["NONE"] += sum(1 for d in inferred.decisions if d.event == "NONE")
        return results

    async def _apply(
        self,
        write: WriteContext,
        decisions: Sequence[Decision],
        existing: Mapping[str, Row],
        known_vectors: Mapping[str, np.ndarray[Any, Any]],
        report: LearningReport,
    ) -> list[AddResult]:
        """Apply validated decisions, each logged in ``report`` (none changing an immutable
        memory); every vector is computed before the first write."""
        origin = "update_answer" if existing else "extraction"  # no update call without rows
        decisions, refused = protect_immutable(decisions, existing)
        # With the job id: an ADD an earlier run of this job stored without its history (its
        # history write failed) gets that history now, as the extracted facts do.
        adds, known = await self.split_known(
            write.scope, [d.text for d in decisions if d.event == "ADD"], job_id=write.job_id
        )
        report.known(known)
        updates = [
            d
            for d in decisions
            if d.event == "UPDATE" and d.text != existing[d.memory_id or ""]["memory"]
        ]
        deletes = [d for d in decisions if d.event == "DELETE"]
        need = [t for t in adds + [d.text for d in updates] if t not in known_vectors]
        vectors = dict(known_vectors)
        folded: set[str] = set()
        if need:
            vectors.update(zip(need, await self.embed(need), strict=True))
        if adds and self._config.duplicate_threshold is not None:
            busy = {d.memory_id or "" for d in updates + deletes}
            before = len(adds)
            kept, refined = await near_duplicates(
                self._store, self._config, write.scope, adds, vectors, busy
            )
            report.near_duplicates += before - len(kept)
            folded = {decision.text for decision, _row in refined}
            for text in adds:
                if text not in kept and text not in folded:  # the same as a stored memory
                    report.decided("NONE", None, text=text, origin="near_duplicate")
            adds = kept
            existing = {**existing, **{row["id"]: row for _d, row in refined}}
            updates += [decision for decision, _row in refined]
        results: list[AddResult] = []
        if adds:
            add_vectors = np.stack([vectors[t] for t in adds])
            results += await self._insert(replace(write, context=None), adds, add_vectors)
        now = now_stamp()
        history = []
        for decision in updates:
            memory_id = decision.memory_id or ""
            old = existing[memory_id]["memory"]
            await self._store.update(
                memory_id,
                updated_values(
                    decision.text,
                    vectors[decision.text],
                    existing[memory_id].get("metadata", {}),
                    write.metadata,
                    format_timestamp(write.when),
                ),
            )
            history.append(write.history(memory_id, old, decision.text, "UPDATE", now))
            results.append(
                AddResult(id=memory_id, memory=decision.text, event="UPDATE", previous_memory=old)
            )
        if deletes:
            await self._store.delete(Selection.of_ids([d.memory_id or "" for d in deletes]))
            for decision in deletes:
                memory_id = decision.memory_id or ""
                old = existing[memory_id]["memory"]
                history.append(write.history(memory_id, old, None, "DELETE", now))
                results.append(AddResult(id=memory_id, memory=old, event="DELETE"))
        report.log_applied(results, decisions, existing, origin=origin, folded=folded)
        await self.record_history(history)
        return refused + results

    # ---- change --------------------------------------------------------------------------

    async def update(
        self,
        current: MemoryItem,
        text: str | None,
        metadata: Mapping[str, Any],
        source: str | None = None,
        lifecycle: Mapping[str, Any] | None = None,
    ) -> None:
        """Replace ``current``'s text (``text`` already checked; None keeps it), merging
        ``metadata`` and setting the ``lifecycle`` columns given (``expires_at``,
        ``immutable``)."""
        scope = scope_of(current)
        async with self.lock(scope):
            stamp = now_stamp()
            values: dict[str, Any]
            if text is None:
                text = current["memory"]
                values = {
                    "metadata": {**current.get("metadata", {}), **metadata},
                    "updated_at": stamp,
                }
            else:
                vector = (await self.embed([text]))[0]
                values = updated_values(text, vector, current.get("metadata", {}), metadata, stamp)
            await self._store.update(current["id"], {**values, **(lifecycle or {})})
            await self.record_history(
                [
                    history_row(
                        current["id"], scope, current["memory"], text, "UPDATE", stamp, None, source
                    )
                ]
            )

    async def set_feedback(
        self, current: MemoryItem, feedback: str | None, reason: str | None
    ) -> None:
        """Record (or, with None, take back) the feedback on ``current``."""
        async with self.lock(scope_of(current)):
            await self._store.update(
                current["id"], {"feedback": feedback, "feedback_reason": reason}
            )

    async def delete(self, current: MemoryItem, source: str | None = None) -> None:
        """Delete one memory; its history stays, with a DELETE row."""
        scope = scope_of(current)
        async with self.lock(scope):
            await self._store.delete(Selection.of_ids([current["id"]]))
            stamp = now_stamp()
            await self.record_history(
                [
                    history_row(
                        current["id"], scope, current["memory"], None, "DELETE", stamp, None, source
                    )
                ]
            )

    async def delete_all(self, scope: Scope) -> int:
        """Delete every memory of ``scope``; how many there were."""
        selection = Selection(scope)
        async with self.lock(scope):
            rows = await self._store.fetch(selection)
            if rows:
                await self._store.delete(selection)
                stamp = now_stamp()
                await self.record_history(
                    [
                        history_row(r["id"], scope, r["memory"], None, "DELETE", stamp, None)
                        for r in rows
                    ]
                )
        return len(rows)


__all__ = ["MemoryWriter", "WriteContext"]
