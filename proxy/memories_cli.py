"""``memproxy memories list|search|add|delete|export|import``: against a local data dir
(``--config`` / ``--data``) or a running proxy (``--url`` with ``--api-key``).

Both backends implement one small protocol, so every command has one implementation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from memory_core import AsyncMemory, MemoryConfig
from memory_core.errors import MemoryCoreError
from memory_core.extraction import ChatLLM, LiteLLMChat
from memory_core.types import MemoryItem, Scope

from .api_models import ScopeQuery
from .auth import OPEN_CALLER
from .errors import ProxyError
from .memory_transfer import export_lines, import_authorizer, import_lines, split_lines
from .settings import Settings

Progressed = Callable[[int], None]
READ_CHUNK = 1 << 16


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

    def __init__(self, memory: AsyncMemory, llm: ChatLLM | None) -> None:
        self._memory = memory
        self._llm = llm

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
            texts, **_ids(scope), metadata=metadata, infer=infer, llm=llm
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


# ---- commands ----------------------------------------------------------------------------


def make_backend(args: argparse.Namespace) -> Backend:
    if args.url:
        return HttpBackend(args.url, args.api_key or os.environ.get("MEMPROXY_API_KEY"))
    if args.data:
        return LocalBackend(AsyncMemory(MemoryConfig(storage_uri=args.data)), None)
    settings = Settings.load(args.config)
    llm_config = settings.extraction_llm()
    memory = AsyncMemory(settings.memory.core_config())
    return LocalBackend(memory, LiteLLMChat(llm_config) if llm_config else None)


def scope_of(args: argparse.Namespace, *, required: bool = True) -> Scope | None:
    scope = Scope(args.user, args.agent, args.run)
    if scope.is_empty:
        if required:
            raise CommandError("name whose memories: --user (or --agent / --run)")
        return None
    return scope


def print_items(items: list[MemoryItem], as_json: bool, out: Console) -> None:
    if as_json:
        for item in items:
            sys.stdout.write(orjson.dumps(item).decode() + "\n")
        return
    for item in items:
        score = f"{item['score']:.3f}  " if "score" in item else ""
        out.print(f"{item['id']}  {item['created_at'][:19]}  {score}{item['memory']}", markup=False)
    if not items:
        out.print("(no memories)", style="dim")


def progress_bar(err: Console, *, bytes_: bool = False) -> Progress:
    counter = DownloadColumn() if bytes_ else MofNCompleteColumn()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        counter,
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


async def run_command(args: argparse.Namespace, backend: Backend) -> int:
    """Run one subcommand; returns the exit code."""
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    command = args.memories_command
    if command == "list":
        print_items(
            await backend.list_memories(_require(scope_of(args)), args.limit), args.json, out
        )
    elif command == "search":
        items = await backend.search(
            args.query, _require(scope_of(args)), args.limit, args.threshold
        )
        print_items(items, args.json, out)
    elif command == "add":
        metadata = _metadata(args.metadata)
        results = await backend.add(args.text, _require(scope_of(args)), metadata, args.infer)
        for r in results:
            out.print(f"{r['event']}  {r['id']}  {r['memory']}", markup=False)
        if not results:
            out.print("nothing new to remember", style="dim")
    elif command == "delete":
        await _delete(args, backend, out)
    elif command == "export":
        await _export(args, backend, err)
    elif command == "import":
        return await _import(args, backend, out, err)
    return 0


def _require(scope: Scope | None) -> Scope:
    assert scope is not None
    return scope


def _metadata(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CommandError(f"--metadata is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CommandError("--metadata must be a JSON object")
    return value


async def _delete(args: argparse.Namespace, backend: Backend, out: Console) -> None:
    if args.all:
        scope = _require(scope_of(args))
        if args.ids:
            raise CommandError("give memory ids or --all, not both")
        if not args.yes:
            raise CommandError("deleting every memory of a scope needs --yes")
        out.print(f"deleted {await backend.delete_all(scope)} memories")
        return
    if not args.ids:
        raise CommandError("give memory ids to delete (or --all --user NAME --yes)")
    for memory_id in args.ids:
        await backend.delete(memory_id)
        out.print(f"deleted {memory_id}", markup=False)


async def _export(args: argparse.Namespace, backend: Backend, err: Console) -> None:
    total, chunks = await backend.export(_require(scope_of(args)))
    target = sys.stdout.buffer if args.output in (None, "-") else None
    handle = target or open(args.output, "wb")  # closed below
    written = 0
    try:
        with progress_bar(err) as progress:
            task = progress.add_task("export", total=total)
            async for chunk in chunks:
                handle.write(chunk)
                lines = chunk.count(b"\n")
                written += lines
                progress.advance(task, lines)
    finally:
        if target is None:
            handle.close()
        else:
            handle.flush()
    if args.output not in (None, "-"):
        err.print(f"exported {written} memories to {args.output}", markup=False)


async def _import(args: argparse.Namespace, backend: Backend, out: Console, err: Console) -> int:
    path = Path(args.file)
    try:
        size = path.stat().st_size
        handle = path.open("rb")
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from exc
    with handle, progress_bar(err, bytes_=True) as progress:
        task = progress.add_task("import", total=size)

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := handle.read(READ_CHUNK):
                progress.advance(task, len(chunk))
                yield chunk

        report = await backend.import_jsonl(chunks(), scope_of(args, required=False))
    out.print(
        f"imported {report['imported']}, already present {report['exists']}, "
        f"duplicates {report['duplicate']}, bad lines {len(report['errors'])}"
    )
    for error in report["errors"][:50]:
        err.print(f"line {error['line']}: {error['message']}", markup=False)
    return 1 if report["errors"] else 0


async def _run(args: argparse.Namespace) -> int:
    backend = make_backend(args)
    try:
        return await run_command(args, backend)
    finally:
        await backend.close()


def memories_command(args: argparse.Namespace) -> int:
    """Entry point of ``memproxy memories ...``: errors are one line on stderr, exit 1."""
    try:
        return asyncio.run(_run(args))
    except (CommandError, ProxyError, MemoryCoreError) as exc:
        message = exc.message if isinstance(exc, ProxyError) else str(exc)
        print(f"memproxy: {message}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1


def add_memories_parser(sub: Any) -> None:
    """Register ``memories`` on the ``memproxy`` sub-parsers."""
    where = argparse.ArgumentParser(add_help=False)
    group = where.add_argument_group("where the memories are")
    group.add_argument("--config", help="proxy YAML config (local data dir; default: ./data)")
    group.add_argument("--data", help="a LanceDB data dir (local; overrides --config)")
    group.add_argument("--url", help="a running proxy, e.g. http://127.0.0.1:8787")
    group.add_argument("--api-key", help="API key for --url (default: $MEMPROXY_API_KEY)")
    who = argparse.ArgumentParser(add_help=False)
    who.add_argument("--user", "-u", help="user_id")
    who.add_argument("--agent", help="agent_id")
    who.add_argument("--run", help="run_id")

    memories = sub.add_parser("memories", help="list, search, add, delete, export, import")
    msub = memories.add_subparsers(dest="memories_command", required=True)
    parents = [where, who]
    cmd = msub.add_parser("list", parents=parents, help="a scope's memories, newest first")
    cmd.add_argument("--limit", type=int, default=100)
    cmd.add_argument("--json", action="store_true", help="one JSON object per line")
    cmd = msub.add_parser("search", parents=parents, help="memories relevant to a query")
    cmd.add_argument("query")
    cmd.add_argument("--limit", type=int, default=10)
    cmd.add_argument("--threshold", type=float)
    cmd.add_argument("--json", action="store_true")
    cmd = msub.add_parser("add", parents=parents, help="store texts (verbatim unless --infer)")
    cmd.add_argument("text", nargs="+")
    cmd.add_argument("--metadata", help="a JSON object")
    cmd.add_argument("--infer", action="store_true", help="extract facts with the LLM")
    cmd = msub.add_parser("delete", parents=parents, help="delete by id, or --all of a scope")
    cmd.add_argument("ids", nargs="*")
    cmd.add_argument("--all", action="store_true")
    cmd.add_argument("--yes", action="store_true", help="confirm --all")
    cmd = msub.add_parser("export", parents=parents, help="write a scope as JSONL")
    cmd.add_argument("--output", "-o", help="file (default: stdout)")
    cmd = msub.add_parser("import", parents=parents, help="read JSONL (idempotent by id)")
    cmd.add_argument("file")
    for parser in msub.choices.values():
        parser.set_defaults(func=memories_command)
