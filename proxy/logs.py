"""Logging: text (default) or one JSON object per line (``server.log_format: json``), a request
id on every line, secrets scrubbed from every line.

The request id is the client's ``X-Request-Id`` when it is a short token, else a new one; it is
echoed in the response and carried into the learning job of the exchange (``learning.py``), so
a chat and the learning it caused share it. The proxy never logs headers, bodies or memory
texts; the scrubber is the second line: configured provider keys and other secrets, bearer
tokens and ``sk-``-style keys become ``[redacted]`` in messages and tracebacks alike.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "memproxy_request_id", default=None
)
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
SECRET_FIELDS = re.compile(r"(key|secret|token|password|credential)", re.I)
TOKENS = re.compile(
    r"(?i)(bearer\s+)[^\s\"',;]+"  # Authorization: Bearer ...
    r"|\b(sk|pk|rk)-[A-Za-z0-9_\-]{8,}"  # OpenAI / Anthropic style keys
    r"|(://[^:/\s]*:)[^@/\s]+(@)"  # passwords in URLs (redis://:pw@host)
)
MIN_SECRET = 6  # shorter configured values would scrub ordinary words
ASGIApp = Any


def secrets_in(value: Any, *, under_secret: bool = False) -> Iterator[str]:
    """Every string of a config tree under a key naming a secret (``api_key``,
    ``aws_secret_access_key``...)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from secrets_in(
                item, under_secret=under_secret or bool(SECRET_FIELDS.search(key))
            )
    elif isinstance(value, list | tuple):
        for item in value:
            yield from secrets_in(item, under_secret=under_secret)
    elif hasattr(value, "get_secret_value"):  # pydantic SecretStr
        yield from secrets_in(value.get_secret_value(), under_secret=True)
    elif isinstance(value, str) and under_secret and len(value) >= MIN_SECRET:
        yield value


class Scrubber:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        ordered = sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True)
        self._secrets = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        if self._secrets is not None:
            text = self._secrets.sub("[redacted]", text)
        return TOKENS.sub(_token_redacted, text)


def _token_redacted(found: re.Match[str]) -> str:
    if found.group(1):
        return f"{found.group(1)}[redacted]"
    if found.group(3):
        return f"{found.group(3)}[redacted]{found.group(4)}"
    return "[redacted]"


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self, scrub: Scrubber) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        line = self._scrub(super().format(record))
        rid = getattr(record, "request_id", None)
        return f"{line} [request_id={rid}]" if rid else line


class JsonFormatter(logging.Formatter):
    def __init__(self, scrub: Scrubber) -> None:
        super().__init__()
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self._scrub(record.getMessage()),
            "request_id": getattr(record, "request_id", None),
        }
        if record.exc_info:
            entry["exception"] = self._scrub(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


def configure_logging(level: str, log_format: str, secrets: Iterable[str]) -> None:
    """The root logger's one handler; loggers that libraries gave handlers of their own
    (LiteLLM's) lose them and propagate to it, so every line has one format. Call it after
    importing such libraries."""
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and logger.handlers:
            for old in list(logger.handlers):
                logger.removeHandler(old)
            logger.propagate = True
    scrub = Scrubber(secrets)
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(JsonFormatter(scrub) if log_format == "json" else TextFormatter(scrub))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


access_log = logging.getLogger("proxy.access")


class RequestIds:
    """ASGI middleware: sets ``request_id`` for the request, returns it as ``x-request-id``,
    and logs one access line (method, route template — never the query —, status, time)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next(
            (v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-request-id"), ""
        )
        rid = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                template = getattr(scope.get("route"), "path", "unmatched")
                access_log.info(
                    "%s %s %d %.1fms",
                    scope.get("method", "")[:16],
                    template,
                    message["status"],
                    (time.perf_counter() - started) * 1000,
                )
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
