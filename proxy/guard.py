"""Web pages the user visits must not be able to use the proxy (docs/security.md).

As Jupyter and Ollama do it: a request whose ``Origin`` is neither the server's own nor a
configured ``server.allowed_origins`` entry gets 403; bodies sent to JSON routes must say
``Content-Type: application/json`` (415, ``proxy/request_body.py``), which a page can only
send after a CORS preflight; and the ``Host`` header must be a loopback name or a
``server.allowed_hosts`` entry, so a DNS-rebound name cannot make a page same-origin with
the proxy. Allowed origins get CORS headers, preflight included. A pure ASGI middleware:
no per-request objects on the hot path.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from .errors import error_body

Scope = dict[str, Any]
Receive = Any
Send = Any

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_EXPOSED = (
    "x-memory-status, x-memory-recalled, x-memory-overhead-ms, x-memory-mode, "
    "x-memory-upstream, x-memory-task, x-memory-count, server-timing, x-request-id"
)
DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host(value: str) -> tuple[str, int | None]:
    """``host[:port]`` (IPv6 in brackets) → (lower-case host, port or None)."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    try:
        return host, int(port) if port else None
    except ValueError:
        return host, -1  # never equal to a real port


def is_loopback_host(host: str) -> bool:
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_origin(origin: str) -> tuple[str, str, int] | None:
    """``scheme://host[:port]`` → (scheme, host, port with the scheme's default)."""
    scheme, sep, rest = origin.strip().lower().partition("://")
    if not sep or scheme not in DEFAULT_PORTS or not rest or "/" in rest:
        return None
    host, port = split_host(rest)
    return scheme, host, DEFAULT_PORTS[scheme] if port is None else port


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class BrowserGuard:
    """Refuses cross-site and DNS-rebound requests; answers CORS for configured origins."""

    def __init__(
        self,
        app: Any,
        *,
        check_host: bool,
        allowed_hosts: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.check_host = check_host
        self.allowed_hosts = frozenset(allowed_hosts)
        origins = frozenset(allowed_origins)
        self.any_origin = "*" in origins
        self.allowed_origins = frozenset(o for o in origins if o != "*")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if self.check_host and host is not None and not self.host_allowed(host):
            message = "this Host is not allowed (server.allowed_hosts)"
            await _refuse(send, 403, message, "host_not_allowed")
            return
        origin = _header(scope, b"origin")
        cross_origin = origin is not None and not self.same_origin(origin, host)
        if cross_origin and not self.origin_allowed(origin or ""):
            message = "requests from this web origin are not allowed (server.allowed_origins)"
            await _refuse(send, 403, message, "origin_not_allowed")
            return
        method = scope["method"]
        if cross_origin and method == "OPTIONS":
            await self._preflight(scope, send, origin or "")
            return
        if not cross_origin:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _with_cors(send, origin or ""))

    def host_allowed(self, value: str) -> bool:
        host, port = split_host(value)
        if is_loopback_host(host):
            return True
        if host in self.allowed_hosts or "*" in self.allowed_hosts:
            return True
        full = f"{host}:{port}" if port is not None else host
        return full in self.allowed_hosts or any(
            entry.startswith("*.") and host.endswith(entry[1:]) for entry in self.allowed_hosts
        )

    def same_origin(self, origin: str, host: str | None) -> bool:
        parsed = parse_origin(origin)
        if parsed is None or host is None:
            return False
        scheme, origin_host, origin_port = parsed
        host_name, host_port = split_host(host)
        return (origin_host, origin_port) == (host_name, host_port or DEFAULT_PORTS[scheme])

    def origin_allowed(self, origin: str) -> bool:
        return self.any_origin or origin.strip().lower().rstrip("/") in self.allowed_origins

    async def _preflight(self, scope: Scope, send: Send, origin: str) -> None:
        requested = _header(scope, b"access-control-request-headers") or ""
        headers = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", CORS_METHODS.encode()),
            (b"access-control-max-age", b"600"),
            (b"vary", b"Origin"),
            (b"content-length", b"0"),
        ]
        if requested:
            headers.append((b"access-control-allow-headers", requested.encode("latin-1")))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def _with_cors(send: Send, origin: str) -> Send:
    extra = [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-expose-headers", CORS_EXPOSED.encode()),
        (b"vary", b"Origin"),
    ]

    async def send_with_cors(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return send_with_cors


async def _refuse(send: Send, status: int, message: str, code: str) -> None:
    type_ = "permission_error" if status == 403 else "invalid_request_error"
    body = error_body(message, type_, code=code)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


__all__ = ["BrowserGuard", "is_loopback_host", "parse_origin", "split_host"]
