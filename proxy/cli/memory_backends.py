"""Where ``memproxy memories`` works: a local data dir, or a running proxy's memory API.

Both backends implement one small protocol, so every command has one implementation.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, Protocol

import httpx

from memory_core import AsyncMemory, MemoryConfig
from memory_core.extraction import ChatLLM
from memory_core.queue import LearningQueue, open_job_store
from memory_core.types import MemoryItem, Scope

from ..api_models import ScopeQuery
from ..auth import OPEN_CALLER
from ..learning import ExtractionModels
from ..memory_transfer import export_lines, import_authorizer, import_lines, split_lines
from ..model_routing import ModelRouter
from ..settings import Settings


class CommandError(Exception):
    """A failure to report as one line."""


class Backend(Protocol):
    async def list_memories(self, scope: Scope, limit: int) -> list[MemoryItem]: ...
    async def search(
        self, query: str, scope: Scope, limit: int, threshold: float | None
    ) -> list[MemoryItem]: ...
    async def add(
        self, texts: list[str], scope: Scope, metadata: dict[str, Any] | None, infer: bool
    ) -> list[dict[str, Any]]: ...
    async def delete(self, memory_id: str) -> None: ...
    async def delete_all(self, scope: Scope) -> int: ...
    async def export(self, scope: Scope) -> tuple[int, AsyncIterator[bytes]]: ...
    async def import_jsonl(
        self, chunks: AsyncIterable[bytes], scope: Scope | None
    ) -> dict[str, Any]: ...
    async def close(self) -> None: ...


class LocalBackend:
    """Works on the data dir directly (the proxy need not run; do not run both on one dir
    when writing)."""

    def __init__(
        self, memory: AsyncMemory, llm: ChatLLM | None, queue: LearningQueue | None = None
    ) -> None:
        self._memory = memory
        self._llm = llm
        self._queue = queue  # where its writes' webhook and profile jobs go (the proxy runs them)

    async def list_memories(self, scope: Scope, limit: int) -> list[MemoryItem]:
        result = await self._memory.get_all(**_scope_kwargs(scope), limit=limit)
        return result["results"]

    async def search(
        self, query: str, scope: Scope, limit: int, threshold: float | None
    ) -> list[MemoryItem]:
        result = await self._memory.search(
            query, **_scope_kwargs(scope), limit=limit, threshold=threshold
        )
        return result["results"]

    async def add(
        self, texts: list[str], scope: Scope, metadata: dict[str, Any] | None, infer: bool
    ) -> list[dict[str, Any]]:
        llm = self._llm if infer and self._memory.config.llm is None else None
        result = await self._memory.add(
            texts,
            user_id=scope.user_id,
            agent_id=scope.agent_id,
            run_id=scope.run_id,
            app_id=scope.app_id,
            metadata=metadata,
            infer=infer,
            llm=llm,
        )
        return [dict(r) for r in result["results"]]

    async def delete(self, memory_id: str) -> None:
        await self._memory.delete(memory_id)

    async def delete_all(self, scope: Scope) -> int:
        return int((await self._memory.delete_all(**_ids(scope)))["deleted"])

    async def export(self, scope: Scope) -> tuple[int, AsyncIterator[bytes]]:
        return await export_lines(self._memory, scope)

    async def import_jsonl(
        self, chunks: AsyncIterable[bytes], scope: Scope | None
    ) -> dict[str, Any]:
        target = ScopeQuery.model_validate(scope.as_dict() if scope else {})
        report = await import_lines(
            self._memory, split_lines(chunks), import_authorizer(OPEN_CALLER, target)
        )
        return report.as_dict()

    async def close(self) -> None:
        await self._memory.close()
        if self._queue is not None:
            await self._queue.stop()


class HttpBackend:
    """Talks to a running proxy's memory API."""

    def __init__(self, url: str, api_key: str | None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._base = url.rstrip("/")
        if not self._base.endswith("/v1"):
            self._base += "/v1"
        self._client = httpx.AsyncClient(
            base_url=self._base, headers=headers, timeout=httpx.Timeout(600, connect=10)
        )

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CommandError(f"cannot reach {self._base}: {exc or type(exc).__name__}") from exc
        _raise_for_error(response)
        return response.json()

    async def list_memories(self, scope: Scope, limit: int) -> list[MemoryItem]:
        items: list[MemoryItem] = []
        cursor: str | None = None
        while len(items) < limit:
            params: dict[str, Any] = {**_ids(scope), "top_k": min(limit - len(items), 1000)}
            if cursor:
                params["cursor"] = cursor
            page = await self._call("GET", "/memories", params=params)
            items += page["results"]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return items

    async def search(
        self, query: str, scope: Scope, limit: int, threshold: float | None
    ) -> list[MemoryItem]:
        body = {"query": query, **_ids(scope), "top_k": limit, "threshold": threshold}
        results: list[MemoryItem] = (await self._call("POST", "/search", json=body))["results"]
        return results

    async def add(
        self, texts: list[str], scope: Scope, metadata: dict[str, Any] | None, infer: bool
    ) -> list[dict[str, Any]]:
        body = {"messages": texts, **_ids(scope), "metadata": metadata, "infer": infer}
        results: list[dict[str, Any]] = (await self._call("POST", "/memories", json=body))[
            "results"
        ]
        return results

    async def delete(self, memory_id: str) -> None:
        await self._call("DELETE", f"/memories/{_quote(memory_id)}")

    async def delete_all(self, scope: Scope) -> int:
        return int((await self._call("DELETE", "/memories", params=_ids(scope)))["deleted"])

    async def export(self, scope: Scope) -> tuple[int, AsyncIterator[bytes]]:
        request = self._client.build_request("GET", "/memories/export", params=_ids(scope))
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise CommandError(f"cannot reach {self._base}: {exc or type(exc).__name__}") from exc
        if response.status_code >= 400:
            await response.aread()
            _raise_for_error(response)
        total = int(response.headers.get("x-memory-count", "0"))

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_bytes():
                    yield chunk
            finally:
                await response.aclose()

        return total, body()

    async def import_jsonl(
        self, chunks: AsyncIterable[bytes], scope: Scope | None
    ) -> dict[str, Any]:
        params = _ids(scope) if scope else {}
        headers = {"Content-Type": "application/x-ndjson"}
        result: dict[str, Any] = await self._call(
            "POST", "/memories/import", params=params, content=chunks, headers=headers
        )
        return result

    async def close(self) -> None:
        await self._client.aclose()


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _scope_kwargs(scope: Scope) -> dict[str, Any]:
    return dict(scope.as_dict())


def _ids(scope: Scope) -> dict[str, str]:
    return {k: v for k, v in scope.as_dict().items() if v is not None}


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200] or response.reason_phrase
    raise CommandError(f"HTTP {response.status_code}: {message}")


def make_backend(args: argparse.Namespace) -> Backend:
    if args.url:
        return HttpBackend(args.url, args.api_key or os.environ.get("MEMPROXY_API_KEY"))
    if args.data:
        return LocalBackend(AsyncMemory(MemoryConfig(storage_uri=args.data)), None)
    settings = Settings.load(args.config)
    extraction = ExtractionModels(settings, ModelRouter(settings.model_list))
    memory = AsyncMemory(settings.memory.core_config())
    queue = None
    if settings.webhooks or settings.memory.profile.enabled:
        from ..app import queue_path
        from ..change_events import watch_changes
        from ..metrics import Metrics

        # The proxy's queue: these writes' events wait there for the proxy to deliver them.
        store = open_job_store(settings.memory.queue, queue_path(settings))
        queue = LearningQueue(store, None, settings.memory.queue)
        watch_changes(memory, queue, settings, extraction, Metrics())
    return LocalBackend(memory, extraction.configured(), queue)
