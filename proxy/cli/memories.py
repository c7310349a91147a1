"""``memproxy memories list|search|add|delete|export|import``: against a local data dir
(``--config`` / ``--data``) or a running proxy (``--url`` with ``--api-key``), through the
backends of ``memory_backends``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

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

from memory_core.errors import MemoryCoreError
from memory_core.types import MemoryItem, Scope

from ..errors import ProxyError
from .memory_backends import Backend, CommandError, make_backend

READ_CHUNK = 1 << 16


def scope_of(args: argparse.Namespace, *, required: bool = True) -> Scope | None:
    scope = Scope(args.user, args.agent, args.run, args.app)
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


def add_parsers(sub: Any) -> None:
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
    who.add_argument("--app", help="app_id")

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
