"""What the assistant answered, read from a provider's response in the calling API's shape.

One collector per API shape (Chat Completions, Responses, Anthropic Messages). Each takes a
whole response or the relayed SSE bytes of a stream, and says what the answer's text is,
whether the reply finished, and whether it ended in tool calls (an agent-loop step, which is
not learned from: the turn is learned once, from its final answer).

Relayed SSE bytes are only kept while the stream runs; they are parsed when ``text``,
``finished`` or ``tool_calls`` is first read (by the learner, after the response went out),
so the relay does no JSON parsing per chunk, and none at all when the exchange is not learned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson

Api = Literal["chat", "responses", "messages"]


class ReplyCollector:
    """Chat Completions: ``choices[0].message`` or the ``choices[0].delta`` chunks."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self._finished = False
        self._tool_calls = False
        self._buffer = b""
        self._pending: list[bytes] = []

    @property
    def text(self) -> str:
        self._parse_pending()
        return "".join(self.parts)

    @property
    def finished(self) -> bool:
        self._parse_pending()
        return self._finished

    @finished.setter
    def finished(self, value: bool) -> None:
        self._parse_pending()
        self._finished = value

    @property
    def tool_calls(self) -> bool:
        """The reply asks for tool calls: a step of an agent loop, not its final answer."""
        self._parse_pending()
        return self._tool_calls

    def feed_completion(self, payload: Mapping[str, Any]) -> None:
        choices = payload.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
            message = choices[0].get("message") or {}
            content = message.get("content") if isinstance(message, Mapping) else None
            if isinstance(content, str):
                self.parts.append(content)
            if isinstance(message, Mapping) and message.get("tool_calls"):
                self._tool_calls = True
            if choices[0].get("finish_reason") in ("tool_calls", "function_call"):
                self._tool_calls = True
        self._finished = True

    def feed_chunk(self, payload: Mapping[str, Any]) -> None:
        choices = payload.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content") if isinstance(delta, Mapping) else None
            if isinstance(content, str):
                self.parts.append(content)
            if isinstance(delta, Mapping) and delta.get("tool_calls"):
                self._tool_calls = True
            finish = choice.get("finish_reason")
            if finish:
                self._finished = True
                if finish in ("tool_calls", "function_call"):
                    self._tool_calls = True

    def feed_sse_bytes(self, data: bytes) -> None:
        """Take raw SSE bytes as they arrive (lines may be split across reads)."""
        self._pending.append(data)

    def _parse_pending(self) -> None:
        if not self._pending:
            return
        data = self._buffer + b"".join(self._pending)
        self._pending.clear()
        *lines, self._buffer = data.split(b"\n")
        for line in lines:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            value = line[5:].strip()
            if value == b"[DONE]":
                self._finished = True
                continue
            try:
                payload = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(payload, dict):
                self.feed_chunk(payload)


class ResponsesCollector(ReplyCollector):
    """OpenAI Responses: ``output`` items, or the typed stream events."""

    def feed_completion(self, payload: Mapping[str, Any]) -> None:
        output = payload.get("output")
        for item in output if isinstance(output, list) else []:
            if not isinstance(item, Mapping):
                continue
            if item.get("type") == "function_call":
                self._tool_calls = True
            elif item.get("type") == "message":
                content = item.get("content")
                for part in content if isinstance(content, list) else []:
                    if (
                        isinstance(part, Mapping)
                        and part.get("type") == "output_text"
                        and isinstance(part.get("text"), str)
                    ):
                        self.parts.append(part["text"])
        status = payload.get("status")
        self._finished = status in (None, "completed")

    def feed_chunk(self, payload: Mapping[str, Any]) -> None:
        kind = payload.get("type")
        if kind == "response.output_text.delta" and isinstance(payload.get("delta"), str):
            self.parts.append(payload["delta"])
        elif kind == "response.output_item.added":
            item = payload.get("item")
            if isinstance(item, Mapping) and item.get("type") == "function_call":
                self._tool_calls = True
        elif kind == "response.completed":
            self._finished = True
        elif kind in ("response.failed", "response.incomplete", "error"):
            self._finished = False


class MessagesCollector(ReplyCollector):
    """Anthropic Messages: ``content`` blocks, or the ``content_block_delta`` events."""

    def feed_completion(self, payload: Mapping[str, Any]) -> None:
        content = payload.get("content")
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, Mapping):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                self.parts.append(block["text"])
            elif block.get("type") == "tool_use":
                self._tool_calls = True
        if payload.get("stop_reason") == "tool_use":
            self._tool_calls = True
        self._finished = True

    def feed_chunk(self, payload: Mapping[str, Any]) -> None:
        kind = payload.get("type")
        if kind == "content_block_delta":
            delta = payload.get("delta")
            if (
                isinstance(delta, Mapping)
                and delta.get("type") == "text_delta"
                and isinstance(delta.get("text"), str)
            ):
                self.parts.append(delta["text"])
        elif kind == "content_block_start":
            block = payload.get("content_block")
            if isinstance(block, Mapping) and block.get("type") == "tool_use":
                self._tool_calls = True
        elif kind == "message_delta":
            delta = payload.get("delta")
            if isinstance(delta, Mapping) and delta.get("stop_reason") == "tool_use":
                self._tool_calls = True
        elif kind == "message_stop":
            self._finished = True
        elif kind == "error":
            self._finished = False


_COLLECTORS: dict[Api, type[ReplyCollector]] = {
    "chat": ReplyCollector,
    "responses": ResponsesCollector,
    "messages": MessagesCollector,
}


def collector_for(api: Api) -> ReplyCollector:
    """A fresh collector that reads replies in ``api``'s shape."""
    return _COLLECTORS[api]()


def sse_event(payload: Mapping[str, Any] | bytes, event: str | None = None) -> bytes:
    """One SSE event: ``event:`` line (typed APIs) and ``data:`` line."""
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + data + b"\n\n"


__all__ = [
    "Api",
    "MessagesCollector",
    "ReplyCollector",
    "ResponsesCollector",
    "collector_for",
    "sse_event",
]
