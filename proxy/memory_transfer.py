"""Export a scope as JSONL and import JSONL (idempotent by id, validated line by line): shared
by the REST API and ``memproxy memories export|import`` on a local data dir."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from memory_core import AsyncMemory
from memory_core.errors import InvalidInput, MemoryCoreError
from memory_core.graph_transfer import RELATION_RECORD
from memory_core.types import IDENTITY_FIELDS, Scope

from .api_models import ImportRecord, RelationRecord, ScopeQuery, validation_message
from .auth import Caller
from .errors import ProxyError
from .memory_access import authorize_scope
from .request_body import nesting_exceeds
from .settings import RequestLimits

EXPORT_CHUNK = 500
IMPORT_BATCH = 500
MAX_IMPORT_LINE = 1 << 20
MAX_IMPORT_DEPTH = RequestLimits().max_json_depth


async def export_lines(memory: AsyncMemory, scope: Scope) -> tuple[int, AsyncIterator[bytes]]:
    """The scope's memories as JSONL chunks (newest first), then, with graph memory on, its
    relations (``"type": "relation"``); and how many lines there are."""
    listing = await memory.get_all(
        user_id=scope.user_id,
        agent_id=scope.agent_id,
        run_id=scope.run_id,
        app_id=scope.app_id,
        limit=1_000_000,
        include_expired=True,  # an export loses nothing: expired memories go with theirs
    )
    items: list[Any] = list(listing["results"])
    if memory.graph is not None:  # the graph after the memories its relations rest on
        items += await memory.graph.export(scope)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(items), EXPORT_CHUNK):
            yield b"".join(orjson.dumps(i) + b"\n" for i in items[start : start + EXPORT_CHUNK])

    return len(items), chunks()


@dataclass(slots=True)
class ImportReport:
    imported: int = 0
    exists: int = 0
    duplicate: int = 0
    relations: int = 0  # graph relation lines stored
    relations_skipped: int = 0  # relation lines of a known id, or with graph memory off
    lines: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        counts = {"imported": self.imported, "exists": self.exists, "duplicate": self.duplicate}
        if self.relations or self.relations_skipped:  # a file with graph relation lines
            counts |= {"relations": self.relations, "relations_skipped": self.relations_skipped}
        return {**counts, "errors": self.errors}


async def split_lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Lines of a byte stream (without the newline); an over-long line is yielded cut off
    (and refused by the parser), the rest of it skipped."""
    buffer = b""
    skipping = False
    async for chunk in chunks:
        if skipping:
            if b"\n" not in chunk:
                continue
            chunk = chunk.split(b"\n", 1)[1]
            skipping = False
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line
        if len(buffer) > MAX_IMPORT_LINE:
            yield buffer
            buffer = b""
            skipping = True
    if buffer:
        yield buffer


Authorize = Callable[[dict[str, Any]], None]


async def import_lines(
    memory: AsyncMemory,
    lines: AsyncIterable[bytes],
    authorize: Authorize,
    *,
    on_batch: Callable[[ImportReport], Awaitable[None] | None] | None = None,
    max_depth: int = MAX_IMPORT_DEPTH,
) -> ImportReport:
    """Validate JSONL line by line; store good lines in batches; report bad ones by number.

    ``authorize(record)`` fills in / checks the record's scope and raises to refuse the line;
    a line nesting deeper than ``max_depth`` is refused like any other bad line.
    """
    report = ImportReport()
    batch: list[dict[str, Any]] = []
    relations: list[dict[str, Any]] = []  # stored last: they rest on the memories

    async def flush() -> None:
        if batch:
            for status in await memory.import_memories(batch):
                setattr(report, status, getattr(report, status) + 1)
            batch.clear()
        if on_batch is not None:
            maybe = on_batch(report)
            if maybe is not None:
                await maybe

    async for raw in lines:
        report.lines += 1
        if not raw.strip():
            continue
        try:
            record = _parse_import_line(raw, max_depth)
            authorize(record)
        except (ValueError, ProxyError, MemoryCoreError) as exc:
            message = exc.message if isinstance(exc, ProxyError) else str(exc)
            report.errors.append({"line": report.lines, "message": message})
            continue
        if record.get("type") == RELATION_RECORD:
            relations.append(record)
            continue
        batch.append(record)
        if len(batch) >= IMPORT_BATCH:
            await flush()
    await flush()
    for start in range(0, len(relations), IMPORT_BATCH):
        chunk = relations[start : start + IMPORT_BATCH]
        statuses = await memory.graph.import_records(chunk) if memory.graph is not None else []
        report.relations += statuses.count("imported")
        report.relations_skipped += len(chunk) - statuses.count("imported")
    return report


def _parse_import_line(raw: bytes, max_depth: int) -> dict[str, Any]:
    if len(raw) > MAX_IMPORT_LINE:
        raise ValueError(f"line longer than {MAX_IMPORT_LINE} bytes")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("each line must be a JSON object")
    if nesting_exceeds(data, max_depth):
        raise ValueError(f"the line nests arrays/objects deeper than {max_depth} levels")
    model = RelationRecord if data.get("type") == RELATION_RECORD else ImportRecord
    try:
        record = model.model_validate(data)
    except ValidationError as exc:
        raise ValueError(validation_message(exc)) from exc
    return record.checked()


def import_authorizer(caller: Caller, target: ScopeQuery) -> Authorize:
    """Lines take the target's ids when they have none, must match it when they do, and
    must name a user the key may act for."""

    def authorize(record: dict[str, Any]) -> None:
        for key in IDENTITY_FIELDS:
            wanted = getattr(target, key)
            if wanted is None:
                continue
            if record.get(key) is None:
                record[key] = wanted
            elif record[key] != wanted:
                raise InvalidInput(f"{key} {record[key]!r} differs from the import's {wanted!r}")
        scope = authorize_scope(caller, record)
        record.update(scope.as_dict())  # a bound key's lines default to its user

    return authorize
