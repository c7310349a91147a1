"""``Memory``: the synchronous wrapper over ``AsyncMemory`` (one private event-loop thread)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .checks import MessagesInput
from .config import MemoryConfig
from .memory import AsyncMemory
from .profiles import Profile
from .types import AddResult, HistoryItem, MemoryItem, SearchResult

T = TypeVar("T")


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
        return cls(MemoryConfig.parse(config))

    @property
    def async_memory(self) -> AsyncMemory:
        return self._async

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def add(self, messages: MessagesInput, **kwargs: Any) -> dict[str, list[AddResult]]:
        return self._run(self._async.add(messages, **kwargs))

    def search(self, query: str, **kwargs: Any) -> SearchResult:
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

    def profile(self, *, user_id: str) -> Profile | None:
        return self._run(self._async.profile(user_id=user_id))

    def build_profile(self, *, user_id: str, **kwargs: Any) -> Profile | None:
        return self._run(self._async.build_profile(user_id=user_id, **kwargs))

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


__all__ = ["Memory"]
