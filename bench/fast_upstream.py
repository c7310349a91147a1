"""A minimal, fast fake OpenAI-compatible upstream for load tests (raw asyncio + uvloop).

``tests/fake_upstream.py`` is a full Starlette app (scripted extraction, magic strings,
request log): right for tests, too slow to be a load-test baseline. This one parses just
enough HTTP/1.1 (keep-alive, Content-Length bodies) to answer:

- ``POST .../chat/completions``: a fixed tiny ``chat.completion``; with ``"stream": true`` a
  fixed stream of ``--chunks`` content events + a finish event (+ a usage event when
  ``stream_options.include_usage`` is asked) + ``[DONE]``, each event its own HTTP chunk,
  written with ``--chunk-gap-ms`` between events (0: back to back).
- ``POST .../responses`` (OpenAI Responses) and ``POST .../v1/messages`` (Anthropic
  Messages): the same fixed reply in those shapes, streamed as their typed events (the same
  ``--chunks`` text deltas).
- ``GET .../models`` and ``GET /health``.

Run: ``python -m bench.fast_upstream --port 0`` prints ``FAKE_UPSTREAM_URL=http://127.0.0.1:P/v1``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import sys
import time

import orjson

_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
_INCLUDE_USAGE = re.compile(rb'"include_usage"\s*:\s*true')
_CREATED = int(time.time())
REPLY = "Hello! This is a fixed reply from the fast fake upstream."


def _completion() -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-fast",
            "object": "chat.completion",
            "created": _CREATED,
            "model": "fake-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": REPLY},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 12, "total_tokens": 24},
        }
    )


def _event(payload: dict | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
    event = b"data: " + data + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)  # one HTTP/1.1 chunk per SSE event


def _chunk(delta: dict, finish: str | None = None) -> dict:
    return {
        "id": "chatcmpl-fast",
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def stream_events(chunks: int, include_usage: bool) -> list[bytes]:
    events = []
    for i in range(chunks):
        delta = {"content": f"tok{i} "}
        if i == 0:
            delta["role"] = "assistant"
        events.append(_event(_chunk(delta)))
    events.append(_event(_chunk({}, "stop")))
    if include_usage:
        usage = _chunk({})
        usage["choices"] = []
        usage["usage"] = {
            "prompt_tokens": 12,
            "completion_tokens": chunks,
            "total_tokens": 12 + chunks,
        }
        events.append(_event(usage))
    events.append(_event("[DONE]"))
    events.append(b"0\r\n\r\n")
    return events


def _typed(event: str, payload: dict) -> bytes:
    data = f"event: {event}\n".encode() + b"data: " + orjson.dumps(payload) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def _response_object(done: bool) -> dict:
    text = {"type": "output_text", "text": REPLY, "annotations": []}
    message = {"type": "message", "id": "msg_fast", "status": "completed", "role": "assistant"}
    return {
        "id": "resp_fast",
        "object": "response",
        "created_at": _CREATED,
        "status": "completed" if done else "in_progress",
        "model": "fake-model",
        "output": [{**message, "content": [text]}] if done else [],
        "usage": {"input_tokens": 12, "output_tokens": 12, "total_tokens": 24} if done else None,
    }


def responses_events(chunks: int) -> list[bytes]:
    events = [
        _typed(
            "response.created", {"type": "response.created", "response": _response_object(False)}
        )
    ]
    for i in range(chunks):
        delta = {
            "type": "response.output_text.delta",
            "item_id": "msg_fast",
            "output_index": 0,
            "content_index": 0,
            "delta": f"tok{i} ",
        }
        events.append(_typed("response.output_text.delta", delta))
    done = {"type": "response.completed", "response": _response_object(True)}
    events += [_typed("response.completed", done), b"0\r\n\r\n"]
    return events


def _message_object() -> dict:
    return {
        "id": "msg_fast",
        "type": "message",
        "role": "assistant",
        "model": "fake-model",
        "content": [{"type": "text", "text": REPLY}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 12},
    }


def messages_events(chunks: int) -> list[bytes]:
    start = {**_message_object(), "content": [], "stop_reason": None}
    events = [
        _typed("message_start", {"type": "message_start", "message": start}),
        _typed(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
    ]
    for i in range(chunks):
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": f"tok{i} "},
        }
        events.append(_typed("content_block_delta", delta))
    events += [
        _typed("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _typed(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": chunks},
            },
        ),
        _typed("message_stop", {"type": "message_stop"}),
        b"0\r\n\r\n",
    ]
    return events


def _response(status: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 "
        + status.encode()
        + b"\r\ncontent-type: "
        + content_type
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\nx-request-id: fast\r\n\r\n"
        + body
    )


COMPLETION = _response("200 OK", _completion())
RESPONSE = _response("200 OK", orjson.dumps(_response_object(True)))
MESSAGE = _response("200 OK", orjson.dumps(_message_object()))
MODELS = _response(
    "200 OK",
    orjson.dumps(
        {
            "object": "list",
            "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "bench"}],
        }
    ),
)
HEALTH = _response("200 OK", b'{"status":"ok"}')
NOT_FOUND = _response(
    "404 Not Found",
    b'{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":null}}',
)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
    b"cache-control: no-cache\r\nx-request-id: fast\r\n\r\n"
)


_API_PATHS = {b"completions": "chat", b"responses": "responses", b"messages": "messages"}
_WHOLE = {"chat": COMPLETION, "responses": RESPONSE, "messages": MESSAGE}


class FastHTTP(asyncio.Protocol):
    chunks = 20
    gap_s = 0.0

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._process()

    def _process(self) -> None:
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            lower = head.lower()
            pos = lower.find(b"\r\ncontent-length:")
            if pos >= 0:
                stop = lower.find(b"\r\n", pos + 2)
                length = int(lower[pos + 17 : stop if stop >= 0 else None])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = self.buffer[end + 4 : total]
            self.buffer = self.buffer[total:]
            line = head.split(b"\r\n", 1)[0]
            parts = line.split(b" ")
            method, path = parts[0], parts[1] if len(parts) > 1 else b"/"
            assert self.transport is not None
            api = _API_PATHS.get(path.rsplit(b"/", 1)[-1]) if method == b"POST" else None
            if api is not None:
                if _STREAM_TRUE.search(body):
                    if api == "chat":
                        events = stream_events(self.chunks, bool(_INCLUDE_USAGE.search(body)))
                    elif api == "responses":
                        events = responses_events(self.chunks)
                    else:
                        events = messages_events(self.chunks)
                    if self.gap_s > 0:
                        self.busy = True
                        asyncio.get_running_loop().create_task(self._stream(events))
                        return
                    self.transport.write(STREAM_HEAD)
                    for event in events:
                        self.transport.write(event)
                else:
                    self.transport.write(_WHOLE[api])
            elif method == b"GET" and path.endswith(b"/models"):
                self.transport.write(MODELS)
            elif method == b"GET" and path.startswith(b"/health"):
                self.transport.write(HEALTH)
            else:
                self.transport.write(NOT_FOUND)

    async def _stream(self, events: list[bytes]) -> None:
        assert self.transport is not None
        self.transport.write(STREAM_HEAD)
        for event in events:
            await asyncio.sleep(self.gap_s)
            if self.transport.is_closing():
                return
            self.transport.write(event)
        self.busy = False
        self._process()


async def serve(host: str, port: int, chunks: int, gap_ms: float) -> None:
    FastHTTP.chunks = chunks
    FastHTTP.gap_s = gap_ms / 1000.0
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FastHTTP, host, port, backlog=4096, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    print(f"FAKE_UPSTREAM_URL=http://{host}:{bound}/v1", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=20, help="content events per stream")
    parser.add_argument("--chunk-gap-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        pass
    try:
        asyncio.run(serve(args.host, args.port, args.chunks, args.chunk_gap_ms))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
