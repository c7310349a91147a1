"""What a write changed, for whoever watches the store: one ``MemoryChange`` per history row
(ADD / UPDATE / DELETE of one memory), handed to each ``ChangeObserver`` after it is stored.

Every write path (the REST API, MCP tools, learning from chat, imports) writes history through
``MemoryWriter.record_history``, so an observer sees them all; the proxy's turns them into
webhook deliveries and profile rebuilds (docs/webhooks.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .types import Event, Scope


@dataclass(frozen=True, slots=True)
class MemoryChange:
    """One stored change: ``change_id`` is its history row's id (unique, stable: a webhook
    event's id), ``old`` / ``new`` the memory's text before and after."""

    change_id: str
    memory_id: str
    event: Event
    scope: Scope
    old: str | None
    new: str | None
    at: str
    job_id: str | None = None
    source: str | None = None


class ChangeObserver(Protocol):
    """Told about each batch of changes once it is stored (under the scope's write lock)."""

    async def memories_changed(self, changes: Sequence[MemoryChange]) -> None: ...


def changes_of(rows: Sequence[Mapping[str, Any]]) -> list[MemoryChange]:
    """The changes written as these history rows."""
    return [
        MemoryChange(
            change_id=row["id"],
            memory_id=row["memory_id"],
            event=row["event"],
            scope=Scope(row.get("user_id"), row.get("agent_id"), row.get("run_id")),
            old=row.get("old_memory"),
            new=row.get("new_memory"),
            at=row["created_at"],
            job_id=row.get("job_id"),
            source=row.get("source"),
        )
        for row in rows
    ]


__all__ = ["ChangeObserver", "MemoryChange", "changes_of"]
