"""Reading a request body as hostile input: bounded in size and time while it arrives, then
parsed once with a bounded nesting depth (the same bound the forwarder can serialise)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request

from .errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType

# An import's JSON Lines may also be labelled as JSON; never as a type a web page can send
# cross-site without a CORS preflight (text/plain, forms) or with no type at all.
JSON_LINES_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/json"})


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json_type(kind: str) -> bool:
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def check_content_type(request: Request, *, lines: bool = False) -> None:
    """415 for a body not labelled JSON (JSON Lines when ``lines``)."""
    headers = request.headers
    length = headers.get("content-length")
    if (length is None and "transfer-encoding" not in headers) or length in ("0", ""):
        return  # no body
    kind = media_type(headers.get("content-type"))
    if (kind in JSON_LINES_TYPES) if lines else is_json_type(kind):
        return
    wanted = "application/x-ndjson" if lines else "application/json"
    raise UnsupportedMediaType(
        f"send the body as Content-Type: {wanted} (got {kind or 'none'!r})",
        code="unsupported_media_type",
    )


def declared_length(request: Request, limit: int) -> None:
    """413 at once when the client announces more than ``limit`` bytes."""
    header = request.headers.get("content-length")
    if header is None:
        return
    try:
        length = int(header)
    except ValueError as exc:
        raise BadRequest("Content-Length is not a number") from exc
    if length > limit:
        raise PayloadTooLarge(
            f"request body of {length} bytes exceeds the limit of {limit} bytes",
            code="request_too_large",
        )


async def bounded_stream(
    request: Request, *, limit: int, timeout_s: float, lines: bool = False
) -> AsyncIterator[bytes]:
    """The body's chunks, once its type is JSON (JSON Lines when ``lines``): 415 otherwise;
    413 once more than ``limit`` bytes came, 408 when the whole body took longer than
    ``timeout_s``."""
    check_content_type(request, lines=lines)
    declared_length(request, limit)
    size = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    stream = request.stream().__aiter__()
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await stream.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            raise RequestTimeout(
                f"the request body did not arrive within {timeout_s:g} s", code="body_timeout"
            ) from exc
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"request body exceeds the limit of {limit} bytes", code="request_too_large"
            )
        yield chunk


async def read_body(request: Request, *, limit: int, timeout_s: float) -> bytes:
    """The whole body, within ``limit`` bytes and ``timeout_s`` seconds."""
    chunks = [c async for c in bounded_stream(request, limit=limit, timeout_s=timeout_s)]
    return b"".join(chunks)


def nesting_exceeds(value: Any, limit: int) -> bool:
    """True when arrays/objects nest deeper than ``limit`` (walked without recursion)."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def parse_json(raw: bytes, *, max_depth: int) -> Any:
    """Parse once; 400 for invalid JSON or nesting deeper than ``max_depth``."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    # Fewer brackets than the limit cannot nest deeper: most chat bodies skip the walk.
    if isinstance(data, dict | list) and raw.count(b"[") + raw.count(b"{") > max_depth:
        if nesting_exceeds(data, max_depth):
            raise BadRequest(
                f"request body nests arrays/objects deeper than {max_depth} levels",
                code="json_too_deep",
            )
    return data


__all__ = [
    "bounded_stream",
    "check_content_type",
    "nesting_exceeds",
    "parse_json",
    "read_body",
]
