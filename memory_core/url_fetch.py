"""Downloading an image or document a request names by URL, as hostile input: only when the
config allows it, only from listed hosts, never to a private address unless that host is
listed for it (checked on the address actually connected to, so DNS rebinding between the
check and the connection cannot move it), no redirects, bounded in size and time."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore

from .config import UrlFetchConfig
from .errors import InvalidInput


class FetchRefused(InvalidInput):
    """The URL may not be fetched, or fetching it failed (the caller's input is at fault)."""


class PrivateAddress(FetchRefused):
    """The host resolves to a private (non-global) address the policy does not allow."""


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, policy: UrlFetchConfig) -> tuple[str, str]:
    """The URL's (scheme, host) when policy allows fetching it at all; ``FetchRefused`` else."""
    if not policy.enabled:
        raise FetchRefused(
            "fetching URLs is off (memory.multimodal.fetch_urls.enabled); send the content "
            "inline as base64 or a data: URL"
        )
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in policy.schemes:
        raise FetchRefused(f"URL scheme {scheme or 'none'!r} is not allowed ({policy.schemes})")
    if not host or parts.username or parts.password:
        raise FetchRefused("the URL must name a host, without credentials")
    allowed = {h.lower() for h in policy.allow_hosts}
    private_ok = {h.lower() for h in policy.allow_private_hosts}
    if not ("*" in allowed or host in allowed or host in private_ok):
        raise FetchRefused(f"host {host!r} is not in memory.multimodal.fetch_urls.allow_hosts")
    return scheme, host


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves each host itself and connects only to addresses the policy allows."""

    def __init__(self, private_ok: Iterable[str]) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._private_ok = {h.lower() for h in private_ok}

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise FetchRefused(f"cannot resolve {host!r}") from exc
        addresses = [str(info[4][0]) for info in infos]
        if host.lower() not in self._private_ok and not all(is_public(a) for a in addresses):
            raise PrivateAddress(f"host {host!r} resolves to a private address")
        return await self._inner.connect_tcp(
            addresses[0], port, timeout, local_address, socket_options
        )

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


async def fetch_url(url: str, policy: UrlFetchConfig, *, max_bytes: int) -> tuple[bytes, str]:
    """The body and media type at ``url``, at most ``min(max_bytes, policy.max_bytes)``."""
    check_url(url, policy)
    limit = min(max_bytes, policy.max_bytes)
    backend = GuardedBackend(policy.allow_private_hosts)
    headers = [(b"Accept", b"*/*"), (b"User-Agent", b"memproxy")]
    try:
        async with (
            asyncio.timeout(policy.timeout_s),
            httpcore.AsyncConnectionPool(network_backend=backend, retries=0) as pool,
            pool.stream("GET", url, headers=headers) as response,
        ):
            if response.status != 200:
                raise FetchRefused(f"fetching {url} answered HTTP {response.status}")
            kind = media_type_of(response.headers)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_stream():
                size += len(chunk)
                if size > limit:
                    raise FetchRefused(f"{url} is larger than {limit} bytes")
                chunks.append(chunk)
    except TimeoutError as exc:
        raise FetchRefused(f"fetching {url} took longer than {policy.timeout_s:g} s") from exc
    except httpcore.TimeoutException as exc:
        raise FetchRefused(f"fetching {url} timed out") from exc
    except (httpcore.NetworkError, httpcore.UnsupportedProtocol) as exc:
        raise FetchRefused(f"cannot fetch {url}: {type(exc).__name__}") from exc
    except httpcore.ProtocolError as exc:
        raise FetchRefused(f"cannot fetch {url}: the server broke HTTP") from exc
    return b"".join(chunks), kind


def media_type_of(headers: Iterable[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.decode("latin-1").split(";", 1)[0].strip().lower()
    return ""


__all__ = [
    "FetchRefused",
    "GuardedBackend",
    "PrivateAddress",
    "check_url",
    "fetch_url",
    "is_public",
]
