"""HTTP errors in the calling API's shape (OpenAI's, or Anthropic's on ``/v1/messages``), and
the one edge that maps every error type to a response."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import Any, Literal

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from memory_core import errors as core

log = logging.getLogger("proxy.errors")


class ProxyError(Exception):
    """An error with an HTTP status and OpenAI's error fields."""

    status = 500
    type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class BadRequest(ProxyError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(ProxyError):
    status = 401
    type = "authentication_error"


class Forbidden(ProxyError):
    status = 403
    type = "permission_error"


class NotFoundError(ProxyError):
    status = 404
    type = "not_found_error"


class Conflict(ProxyError):
    """The request is valid but this proxy's config cannot serve it (e.g. no model for it)."""

    status = 409
    type = "invalid_request_error"


class RequestTimeout(ProxyError):
    status = 408
    type = "invalid_request_error"


class PayloadTooLarge(ProxyError):
    status = 413
    type = "invalid_request_error"


class UnsupportedMediaType(ProxyError):
    status = 415
    type = "invalid_request_error"


class MemoryDisabled(ProxyError):
    status = 503
    type = "server_error"


class NotReady(ProxyError):
    """A request that came before the app's lifespan built its state."""

    status = 503
    type = "server_error"


class UpstreamError(ProxyError):
    """The provider failed; ``status`` is the provider's (or 502/504 when it is unreachable)."""

    type = "upstream_error"

    def __init__(self, message: str, *, status: int = 502, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status


class HeadersTooLarge(Exception):
    """Raised inside uvicorn's parser callbacks to stop the parser (it answers 400, closes)."""


_CORE_STATUS: list[tuple[type[core.MemoryCoreError], int, str]] = [
    (core.InvalidIdentity, 400, "invalid_request_error"),
    (core.InvalidFilter, 400, "invalid_request_error"),
    (core.InvalidInput, 400, "invalid_request_error"),
    (core.NotFound, 404, "not_found_error"),
    (core.ImmutableMemory, 409, "invalid_request_error"),
    (core.ExtractionError, 502, "upstream_error"),
    (core.EmbedderError, 503, "server_error"),
    (core.StoreError, 503, "server_error"),
    (core.QueueStoreError, 503, "server_error"),
]


_SERVER_MESSAGES: dict[type[core.MemoryCoreError], str] = {
    core.EmbedderError: "the embedder is unavailable (see the proxy's log)",
    core.StoreError: "the memory store is unavailable (see the proxy's log)",
    core.QueueStoreError: "the learning queue is unavailable (see the proxy's log)",
}


def error_body(
    message: str, type_: str, *, param: str | None = None, code: str | None = None
) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


# Anthropic's error types (docs.anthropic.com/en/api/errors), from OpenAI's types and statuses.
_ANTHROPIC_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "rate_limit_error": "rate_limit_error",
}
_ANTHROPIC_BY_STATUS = {413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}
ErrorShape = Literal["openai", "anthropic"]


def anthropic_error_type(status: int, type_: str) -> str:
    if status in _ANTHROPIC_BY_STATUS:
        return _ANTHROPIC_BY_STATUS[status]
    if type_ in _ANTHROPIC_TYPES:
        return _ANTHROPIC_TYPES[type_]
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def shaped_error_body(
    shape: ErrorShape,
    status: int,
    message: str,
    type_: str,
    *,
    param: str | None = None,
    code: str | None = None,
) -> bytes:
    """The error body in the calling API's shape."""
    if shape == "anthropic":
        kind = anthropic_error_type(status, type_)
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
    return error_body(message, type_, param=param, code=code)


def error_response(
    status: int,
    message: str,
    type_: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
    shape: ErrorShape = "openai",
) -> Response:
    return Response(
        shaped_error_body(shape, status, message, type_, param=param, code=code),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def to_response(exc: BaseException, shape: ErrorShape = "openai") -> Response:
    """The one mapping from any exception to an error response in ``shape``."""
    fail = partial(error_response, shape=shape)
    if isinstance(exc, ProxyError):
        return fail(exc.status, exc.message, exc.type, param=exc.param, code=exc.code)
    if isinstance(exc, core.MemoryCoreError):
        for kind, status, type_ in _CORE_STATUS:
            if isinstance(exc, kind):
                if kind in _SERVER_MESSAGES:
                    # Store and embedder messages carry internals (SQL, paths): log them only.
                    log.error("memory failure: %s", exc)
                    return fail(status, _SERVER_MESSAGES[kind], type_)
                param = exc.param if isinstance(exc, core.InvalidInput) else None
                return fail(status, str(exc), type_, param=param)
        log.error("memory failure: %s", exc)
        return fail(500, "memory error (see the proxy's log)", "server_error")
    if isinstance(exc, HTTPException):
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return fail(exc.status_code, str(exc.detail), type_, headers=exc.headers)
    log.error("unhandled error", exc_info=exc)
    return fail(500, "internal error (see the proxy's log)", "server_error")


ANTHROPIC_PATHS = ("/v1/messages", "/messages")


def shape_of(path: str) -> ErrorShape:
    """Anthropic's error shape for its Messages route, OpenAI's everywhere else."""
    return "anthropic" if path in ANTHROPIC_PATHS else "openai"


async def handle_exception(request: Request, exc: Exception) -> Response:
    return to_response(exc, shape_of(request.url.path))


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ProxyError: handle_exception,
    core.MemoryCoreError: handle_exception,
    HTTPException: handle_exception,
    Exception: handle_exception,
}
