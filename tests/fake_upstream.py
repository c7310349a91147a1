"""A fake OpenAI-compatible LLM server on loopback, used by tests and benchmarks.

It is a real HTTP server (a Starlette app run by uvicorn) that answers:

- ``GET /v1/models``, ``GET /v1/models/{id}``
- ``POST /v1/chat/completions`` (non-stream and SSE stream, ``n``, tools, JSON mode), with a
  scripted answer for memproxy's two memory prompts (fact extraction and memory update)
- ``POST /v1/responses`` (OpenAI Responses: non-stream and typed SSE events, tools), the same
  scripted answers read through ``tests.fake_apis``
- ``POST /v1/embeddings`` (deterministic feature-hashing vectors)
- ``POST /_control``, ``GET /_control``, ``GET /_requests``, ``GET /_stats``, ``GET /health``

The same routes also answer without the ``/v1`` prefix. What it says, and the magic strings
that make it fail, sleep or drop a stream, are scripted in ``tests.fake_answers`` (facts and
memory decisions in ``tests.fake_extractor``); recorded requests and the failure controls
live in ``tests.fake_state``.

Use it in-process (``with FakeUpstream() as fake: ... fake.url``) or as a separate process
(``python -m tests.fake_upstream --port 0``, which prints ``FAKE_UPSTREAM_URL=...``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fake_answers import (
    DEFAULT_EMBEDDING_DIM,
    EXTRACT_INVALID_JSON,
    INVALID_JSON_PROSE,
    Json,
    Reply,
    RequestKind,
    chat_reply,
    classify,
    completion_body,
    embedding_inputs,
    embeddings_body,
    estimate_tokens,
    extraction_answer,
    magic_requests,
    memory_prompt,
    message_text,
    profile_answer,
    stream_events,
    update_answer,
)
from tests.fake_apis import chat_tools, response_events, response_object, responses_messages
from tests.fake_graph import graph_reply
from tests.fake_media import media_reply
from tests.fake_state import FakeState, RecordedRequest

MODELS: tuple[str, ...] = ("fake-model", "fake-model-2", "fake-embedding")
_CONTROL_FIELDS = frozenset(
    {
        "fail_next",
        "fail_status",
        "invalid_json_next",
        "embed_fail_next",
        "delay_s",
        "extract_delay_s",
        "reset",
    }
)

# ---------------------------------------------------------------------------------------------
# HTTP app
# ---------------------------------------------------------------------------------------------


class StreamAbort(Exception):
    """Raised inside a stream to drop the connection on purpose (``[[stream-abort]]``)."""


def _is_stream_abort(exc: BaseException | None) -> bool:
    if isinstance(exc, StreamAbort):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_stream_abort(inner) for inner in exc.exceptions)
    return False


def _drop_stream_abort_logs(record: logging.LogRecord) -> bool:
    return not (record.exc_info and _is_stream_abort(record.exc_info[1]))


def _install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if _drop_stream_abort_logs not in logger.filters:
        logger.addFilter(_drop_stream_abort_logs)


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(status: int, message: str, param: str | None = None) -> OrjsonResponse:
    """An OpenAI-shaped error body."""
    if status >= 500:
        kind = "server_error"
    elif status == 429:
        kind = "rate_limit_error"
    elif status == 401:
        kind = "authentication_error"
    else:
        kind = "invalid_request_error"
    return OrjsonResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": None}},
        status_code=status,
    )


_INSTRUCTIONS = "You are memproxy's "
NO_INSTRUCTIONS_PROSE = "This looks like a conversation. How can I help you with it today?"


def bounded(content: str, max_tokens: Any) -> Reply:
    """A memory answer cut at ``max_tokens`` (about four characters each), as a real model's
    is, with ``finish_reason: length``."""
    if isinstance(max_tokens, int) and max_tokens > 0 and estimate_tokens(content) > max_tokens:
        return Reply(content[: max_tokens * 4], finish_reason="length")
    return Reply(content)


def _model(name: str) -> Json:
    return {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "fake-upstream"}


class FakeHandlers:
    """The route handlers, bound to one ``FakeState``."""

    def __init__(self, state: FakeState) -> None:
        self.state = state

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    async def _json_body(request: Request) -> Json | None:
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            return None
        return body if isinstance(body, dict) else None

    def _record(self, request: Request, body: Json, kind: RequestKind) -> None:
        self.state.record(
            RecordedRequest(request.method, request.url.path, dict(request.headers), body, kind)
        )

    # -- models ------------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        self._record(request, {}, "models")
        return OrjsonResponse({"object": "list", "data": [_model(name) for name in MODELS]})

    async def model(self, request: Request) -> Response:
        self._record(request, {}, "models")
        name = request.path_params["model"]
        if name not in MODELS:
            return error_response(404, f"The model '{name}' does not exist", "model")
        return OrjsonResponse(_model(name))

    # -- chat --------------------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        body = await self._json_body(request)
        if body is None:
            self._record(request, {}, "chat")
            return error_response(400, "The request body is not a JSON object")
        messages = body.get("messages")
        valid = (
            isinstance(messages, list)
            and len(messages) > 0
            and all(isinstance(m, dict) for m in messages)
        )
        kind = classify(messages) if valid else "chat"  # type: ignore[arg-type]
        self._record(request, body, kind)
        if not valid:
            return error_response(
                400, "'messages' must be a non-empty array of objects", "messages"
            )
        assert isinstance(messages, list)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return error_response(400, "you must provide a model parameter", "model")
        n = body.get("n") or 1
        if not isinstance(n, int) or not 1 <= n <= 128:
            return error_response(400, "'n' must be an integer between 1 and 128", "n")

        status = self.state.take_failure()
        if status is not None:
            return error_response(status, f"Injected failure ({status}) from the fake upstream")

        magic = magic_requests(kind, messages)
        if magic.fail_status is not None:
            return error_response(magic.fail_status, magic.fail_message)
        delay = self.state.delay_for(kind) + magic.sleep_s
        if kind == "chat":
            reply = chat_reply(body, messages)
        elif kind in ("vision", "export"):
            reply = Reply(media_reply(kind, messages))
        elif kind in ("graph", "same"):
            reply = Reply(graph_reply(kind, messages))
        elif kind == "profile":
            reply = Reply(profile_answer(messages))
        else:
            reply = bounded(self._memory_reply(kind, messages), body.get("max_tokens"))

        if delay > 0:
            await asyncio.sleep(delay)
        if body.get("stream"):
            self.state.count("stream")
            return StreamingResponse(
                self._stream(body, messages, reply, n, magic.abort_stream),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache"},
            )
        return OrjsonResponse(completion_body(body, messages, reply, n))

    def _memory_reply(self, kind: RequestKind, messages: list[Json]) -> str:
        if self.state.no_system_role:
            messages = [m for m in messages if m.get("role") not in ("system", "developer")]
            if not any(_INSTRUCTIONS in message_text(m) for m in messages):
                return NO_INSTRUCTIONS_PROSE  # what a model told nothing says
        scripted = self.state.take_scripted()
        if scripted is not None:
            return scripted
        prompt = memory_prompt(messages)
        if kind == "extract":
            number = self.state.next_extraction_number()
            if EXTRACT_INVALID_JSON in prompt or self.state.take_invalid_json():
                return INVALID_JSON_PROSE
            return extraction_answer(prompt, fenced=number % 3 == 0)
        if self.state.take_invalid_json():
            return INVALID_JSON_PROSE
        return update_answer(prompt)

    async def _stream(
        self, body: Json, messages: list[Json], reply: Reply, n: int, abort: bool
    ) -> AsyncIterator[bytes]:
        chunk_delay = float(body.get("fake_chunk_delay_s") or 0.0)
        events = stream_events(body, messages, reply, n)
        for number, data in enumerate(events, start=1):
            if number > 1 and chunk_delay > 0:
                await asyncio.sleep(chunk_delay)
            yield data
            if abort and number >= 2:
                await asyncio.sleep(0.01)  # let the two chunks leave before the reset
                raise StreamAbort("[[stream-abort]]")

    # -- responses ---------------------------------------------------------------------------

    async def responses(self, request: Request) -> Response:
        body = await self._json_body(request)
        if body is None or not isinstance(body.get("model"), str):
            self._record(request, body or {}, "chat")
            return error_response(400, "The request body needs a JSON object with a model")
        messages = responses_messages(body)
        self._record(request, body, "chat")
        if not any(m.get("role") == "user" for m in messages):
            return error_response(400, "'input' holds no user message", "input")
        status = self.state.take_failure()
        if status is not None:
            return error_response(status, f"Injected failure ({status}) from the fake upstream")
        magic = magic_requests("chat", messages)
        if magic.fail_status is not None:
            return error_response(magic.fail_status, magic.fail_message)
        tools = chat_tools(body.get("tools"))
        reply = chat_reply({**body, "tools": tools}, messages)
        if body.get("stream"):
            self.state.count("stream")
            events = response_events(body, messages, reply)
            return StreamingResponse(
                iter(events), media_type="text/event-stream", headers={"cache-control": "no-cache"}
            )
        return OrjsonResponse(response_object(body, messages, reply, number=0))

    # -- embeddings --------------------------------------------------------------------------

    async def embeddings(self, request: Request) -> Response:
        body = await self._json_body(request)
        self._record(request, body or {}, "embeddings")
        if body is None:
            return error_response(400, "The request body is not a JSON object")
        status = self.state.take_embed_failure()
        if status is not None:
            return error_response(status, f"Injected failure ({status}) from the fake upstream")
        texts = embedding_inputs(body.get("input"))
        if texts is None:
            return error_response(
                400, "'input' must be a string or an array of strings or tokens", "input"
            )
        dim = body.get("dimensions") or DEFAULT_EMBEDDING_DIM
        if not isinstance(dim, int) or not 1 <= dim <= 8192:
            return error_response(400, "'dimensions' must be an integer in 1..8192", "dimensions")
        as_base64 = body.get("encoding_format") == "base64"
        model = body.get("model") or "fake-embedding"
        return OrjsonResponse(embeddings_body(texts, dim, as_base64=as_base64, model=model))

    # -- control -----------------------------------------------------------------------------

    async def control(self, request: Request) -> Response:
        if request.method == "GET":
            return OrjsonResponse(self.state.controls())
        body = await self._json_body(request)
        if body is None:
            return error_response(400, "The request body is not a JSON object")
        unknown = set(body) - _CONTROL_FIELDS
        if unknown:
            return error_response(400, f"unknown control fields: {sorted(unknown)}")
        if body.get("reset"):
            self.state.reset()
        try:
            self.state.set_failures(
                **{k: v for k, v in body.items() if k != "reset" and v is not None}
            )
        except (TypeError, ValueError) as exc:
            return error_response(400, f"invalid control value: {exc}")
        return OrjsonResponse(self.state.stats())

    async def recorded(self, request: Request) -> Response:
        kind = request.query_params.get("kind")
        return OrjsonResponse([r.to_json() for r in self.state.snapshot(kind)])

    async def stats(self, request: Request) -> Response:
        return OrjsonResponse(self.state.stats())

    async def health(self, request: Request) -> Response:
        return OrjsonResponse({"ok": True})


def create_fake_app(state: FakeState | None = None) -> Starlette:
    """The fake upstream as an ASGI app; ``app.state.fake`` is its ``FakeState``."""
    _install_log_filter()
    fake_state = state if state is not None else FakeState()
    handlers = FakeHandlers(fake_state)
    routes: list[Route] = []
    for prefix in ("/v1", ""):
        routes += [
            Route(f"{prefix}/models", handlers.models, methods=["GET"]),
            Route(f"{prefix}/models/{{model:path}}", handlers.model, methods=["GET"]),
            Route(f"{prefix}/chat/completions", handlers.chat_completions, methods=["POST"]),
            Route(f"{prefix}/responses", handlers.responses, methods=["POST"]),
            Route(f"{prefix}/embeddings", handlers.embeddings, methods=["POST"]),
        ]
    routes += [
        Route("/_control", handlers.control, methods=["GET", "POST"]),
        Route("/_requests", handlers.recorded, methods=["GET"]),
        Route("/_stats", handlers.stats, methods=["GET"]),
        Route("/health", handlers.health, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.fake = fake_state
    return app


# ---------------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------------


def fake_deployment(api_base: str, name: str = "fake-model") -> dict[str, Any]:
    """A ``model_list`` entry serving ``name`` from the fake at ``api_base`` (its ``url``)."""
    return {
        "model_name": name,
        "litellm_params": {
            "model": "openai/fake-model",
            "api_base": api_base,
            "api_key": "sk-fake",
        },
    }


class FakeUpstream:
    """Runs the fake on loopback in a background thread: ``with FakeUpstream() as fake:``."""

    def __init__(
        self,
        state: FakeState | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        configure_logging: bool = False,
        startup_timeout_s: float = 10.0,
    ) -> None:
        self.state = state if state is not None else FakeState()
        self.host = host
        self.port = port
        self._log_level = log_level
        self._configure_logging = configure_logging
        self._startup_timeout_s = startup_timeout_s
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL: ``http://127.0.0.1:PORT/v1``."""
        return f"{self.base_url}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every recorded request."""
        return self.state.snapshot()

    def requests_of(self, kind: RequestKind) -> list[RecordedRequest]:
        """A snapshot of the recorded requests of one kind (``chat``, ``extract``...)."""
        return self.state.snapshot(kind)

    def reset(self) -> None:
        self.state.reset()

    def behave_like_a_small_model(
        self, script: list[str] | None = None, *, no_system_role: bool | None = None
    ) -> None:
        """See ``FakeState.behave_like_a_small_model``."""
        self.state.behave_like_a_small_model(script, no_system_role=no_system_role)

    def set_failures(
        self,
        *,
        fail_next: int | None = None,
        fail_status: int | None = None,
        invalid_json_next: int | None = None,
        embed_fail_next: int | None = None,
        delay_s: float | None = None,
        extract_delay_s: float | None = None,
    ) -> None:
        self.state.set_failures(
            fail_next=fail_next,
            fail_status=fail_status,
            invalid_json_next=invalid_json_next,
            embed_fail_next=embed_fail_next,
            delay_s=delay_s,
            extract_delay_s=extract_delay_s,
        )

    def start(self) -> FakeUpstream:
        if self._thread is not None:
            raise RuntimeError("the fake upstream is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_fake_app(self.state),
            lifespan="off",
            log_level=self._log_level,
            log_config=uvicorn.config.LOGGING_CONFIG if self._configure_logging else None,
            access_log=False,
            ws="none",
            timeout_graceful_shutdown=1,
            backlog=4096,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="fake-upstream", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + self._startup_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError("the fake upstream did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout=5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible LLM on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before every chat")
    parser.add_argument(
        "--extract-delay", type=float, default=0.0, help="extra seconds for extraction/update"
    )
    parser.add_argument("--max-recorded", type=int, default=10_000)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    state = FakeState(
        delay_s=args.delay, extract_delay_s=args.extract_delay, max_recorded=args.max_recorded
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with FakeUpstream(
        state, host=args.host, port=args.port, log_level=args.log_level, configure_logging=True
    ) as fake:
        print(f"FAKE_UPSTREAM_URL={fake.url}", flush=True)
        while not stop.wait(0.5):
            if fake._thread is None or not fake._thread.is_alive():
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
