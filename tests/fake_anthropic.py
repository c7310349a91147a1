"""A fake Anthropic Messages server on loopback: ``POST /v1/messages`` (non-stream and SSE),
answering with the scripted replies of ``tests.fake_answers`` (echo, recalled memories, tool
use, tool results, ``[[fail:NNN]]``) in Anthropic's shapes (``tests.fake_apis``).

It checks Anthropic's auth headers (``x-api-key`` and ``anthropic-version`` are required) and
records every request in a ``FakeState`` (``kind`` "chat"), headers included.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fake_answers import chat_reply, magic_requests
from tests.fake_apis import (
    anthropic_error,
    anthropic_messages,
    chat_tools,
    message_events,
    message_object,
)
from tests.fake_state import FakeState, json_response, read_and_record
from tests.servers import ServerThread

FAKE_ANTHROPIC_KEY = "sk-ant-fake"


def _error(status: int, message: str) -> Response:
    response: Response = json_response(anthropic_error(status, message), status)
    return response


def create_fake_anthropic_app(state: FakeState) -> Starlette:
    async def messages(request: Request) -> Response:
        body = await read_and_record(request, state)
        if request.headers.get("x-api-key") != FAKE_ANTHROPIC_KEY:
            return _error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _error(400, "anthropic-version: header is required")
        if body is None or not isinstance(body.get("max_tokens"), int):
            return _error(400, "max_tokens: Field required")
        chat = anthropic_messages(body)
        if not chat or chat[-1].get("role") not in ("user", "tool"):
            return _error(400, "messages: the last message must be a user turn")
        status = state.take_failure()
        if status is not None:
            return _error(status, f"Injected failure ({status}) from the fake Anthropic")
        magic = magic_requests("chat", chat)
        if magic.fail_status is not None:
            return _error(magic.fail_status, magic.fail_message)
        reply = chat_reply({**body, "tools": chat_tools(body.get("tools"))}, chat)
        if body.get("stream"):
            state.count("stream")
            return StreamingResponse(
                iter(message_events(body, chat, reply)), media_type="text/event-stream"
            )
        answer: Response = json_response(message_object(body, chat, reply, number=0))
        return answer

    app = Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])
    app.state.fake = state
    return app


@contextmanager
def fake_anthropic() -> Iterator[tuple[ServerThread, FakeState]]:
    """A started fake Anthropic server: (server, state); ``server.base_url`` is its api_base."""
    state = FakeState()
    with ServerThread(create_fake_anthropic_app(state)) as server:
        yield server, state
