"""Imports of exported memories: stored under their own ids, idempotent by id, one scope's
lines under that scope's write lock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .checks import check_memory_id, check_metadata, memory_text
from .lifecycle import check_feedback
from .records import history_row, memory_row, scope_of
from .storage import Selection
from .timestamps import normalize_timestamp, now_stamp
from .types import Scope
from .writer import HASH_BATCH, MemoryWriter


def _expiry(value: Any) -> str | None:
    return normalize_timestamp(value) if value else None


class MemoryImporter:
    """Writes JSONL-exported records through ``writer``'s store, locks and exact-text guard."""

    def __init__(self, writer: MemoryWriter) -> None:
        self._writer = writer

    async def import_memories(self, records: Sequence[Mapping[str, Any]]) -> list[str]:
        """Store exported memories under their own ids (idempotent by id); per record
        ``"imported"``, ``"exists"`` (that id is stored) or ``"duplicate"`` (the scope holds
        that exact text)."""
        statuses = ["imported"] * len(records)
        by_scope: dict[Scope, list[int]] = {}
        for index, record in enumerate(records):
            by_scope.setdefault(scope_of(record).require(), []).append(index)
        now = now_stamp()
        for scope, indexes in by_scope.items():
            async with self._writer.lock(scope):
                keep = await self._new_records(scope, records, indexes, statuses)
                if not keep:
                    continue
                texts = [memory_text(str(records[i]["memory"])) for i in keep]
                vectors = await self._writer.embed(texts)
                rows = []
                for index, text, vector in zip(keep, texts, vectors, strict=True):
                    record = records[index]
                    created = normalize_timestamp(record.get("created_at") or now)
                    rows.append(
                        memory_row(
                            scope,
                            text,
                            vector,
                            check_metadata(record.get("metadata")),
                            memory_id=str(record["id"]),
                            categories=list(record.get("categories") or []),
                            created_at=created,
                            updated_at=normalize_timestamp(record.get("updated_at") or created),
                            expires_at=_expiry(record.get("expires_at")),
                            immutable=record.get("immutable") is True,
                        )
                    )
                    feedback, reason = check_feedback(
                        record.get("feedback"), record.get("feedback_reason")
                    )
                    rows[-1].update(feedback=feedback, feedback_reason=reason)
                await self._writer.store.insert(rows)
                await self._writer.record_history(
                    [history_row(r["id"], scope, None, r["memory"], "ADD", now, None) for r in rows]
                )
        return statuses

    async def _new_records(
        self,
        scope: Scope,
        records: Sequence[Mapping[str, Any]],
        indexes: Sequence[int],
        statuses: list[str],
    ) -> list[int]:
        """The records of ``indexes`` to store; marks the others ``exists``/``duplicate``."""
        ids = [check_memory_id(str(records[i]["id"])) for i in indexes]
        taken: set[str] = set()
        for start in range(0, len(ids), HASH_BATCH):
            chunk = Selection.of_ids(ids[start : start + HASH_BATCH])
            taken.update(row["id"] for row in await self._writer.store.fetch(chunk))
        texts = [memory_text(str(records[i]["memory"])) for i in indexes]
        fresh = set(await self._writer.without_known(scope, texts))
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
        return keep


__all__ = ["MemoryImporter"]
