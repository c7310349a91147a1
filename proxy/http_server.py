"""uvicorn with the bounds it lacks: a deadline and a size limit for a request's headers.

uvicorn's keep-alive timeout only runs between requests; a client that sends its request
line and headers a byte at a time would hold a connection open forever (slowloris), and the
httptools parser puts no cap on their size. Body deadlines and sizes are checked by the app
(``proxy/request_body.py``), after the API key.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import HeadersTooLarge
from .settings import RequestLimits

_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-length: 0\r\nconnection: close\r\n\r\n"
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """httptools' protocol, closing connections whose headers are too slow or too large."""

    header_timeout_s = 10.0
    max_header_bytes = 64 * 1024

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0  # raw bytes of still incomplete headers
        self._parsed_bytes = 0  # request line and headers as parsed
        self._awaiting_headers = True
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self.transport.is_closing():
            self.transport.write(_408)
            self.transport.close()

    def _refuse_large_headers(self) -> None:
        self._disarm_header_timer()
        if not self.transport.is_closing():
            self.transport.write(_431)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Still incomplete headers after parsing: every byte of this read was header bytes.
        if self._awaiting_headers and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse_large_headers()

    def _count_parsed(self, size: int) -> None:
        # Headers that arrive within one read are counted as the parser sees them; raising
        # stops the parser, and uvicorn answers the invalid request with a 400 and closes.
        self._parsed_bytes += size
        if self._parsed_bytes > self.max_header_bytes:
            self._disarm_header_timer()
            raise HeadersTooLarge(f"request headers exceed {self.max_header_bytes} bytes")

    def on_url(self, url: bytes) -> None:
        self._count_parsed(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_parsed(len(name) + len(value))
        super().on_header(name, value)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_headers = True
        self._parsed_bytes = 0
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._header_bytes = 0
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.pipeline:  # a pipelined request already has its headers
            # The next request's headers (or an unread body's stragglers) are on the clock:
            # uvicorn's keep-alive timer stops at the first byte that arrives.
            self._awaiting_headers = True
            self._header_bytes = 0
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)


def bounded_protocol(limits: RequestLimits) -> type[BoundedHttpToolsProtocol]:
    """The protocol class with this config's header bounds."""
    return type(
        "ConfiguredHttpToolsProtocol",
        (BoundedHttpToolsProtocol,),
        {"header_timeout_s": limits.header_timeout_s, "max_header_bytes": limits.max_header_bytes},
    )


def uvicorn_options(limits: RequestLimits) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config``/``uvicorn.run`` that apply ``limits``."""
    return {
        "http": bounded_protocol(limits),
        "h11_max_incomplete_event_size": limits.max_header_bytes,
    }


__all__ = ["BoundedHttpToolsProtocol", "bounded_protocol", "uvicorn_options"]
