"""A fake Google Gemini server on loopback: ``POST /models/{model}:generateContent`` and
``:streamGenerateContent?alt=sse`` (also under ``/v1beta``), as LiteLLM's ``gemini/`` provider
calls them with a custom ``api_base``.

The request's ``contents`` (text, ``functionCall``, ``functionResponse`` parts) are read as
chat messages, so the scripted replies of ``tests.fake_answers`` apply (echo, recalled
memories, tool calls, tool results, ``[[fail:NNN]]``); errors come in Google's shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fake_answers import (
    Json,
    Reply,
    chat_reply,
    estimate_tokens,
    magic_requests,
    message_text,
    split_chunks,
)
from tests.fake_apis import chat_tools
from tests.fake_state import FakeState, json_response, read_and_record
from tests.servers import ServerThread

FAKE_GEMINI_KEY = "gk-fake"


def _error(status: int, message: str) -> Response:
    payload = {"error": {"code": status, "message": message, "status": "INVALID_ARGUMENT"}}
    response: Response = json_response(payload, status)
    return response


def gemini_messages(body: Json) -> list[Json]:
    """A generateContent request as chat messages."""
    messages: list[Json] = []
    system = body.get("system_instruction") or body.get("systemInstruction")
    if isinstance(system, dict):
        texts = [p.get("text", "") for p in system.get("parts") or [] if isinstance(p, dict)]
        messages.append({"role": "system", "content": "\n".join(texts)})
    for content in body.get("contents") or []:
        if not isinstance(content, dict):
            continue
        parts = [p for p in content.get("parts") or [] if isinstance(p, dict)]
        texts = [str(p["text"]) for p in parts if "text" in p]
        if content.get("role") == "model":
            calls = [
                {
                    "id": f"call_{p['functionCall'].get('name')}",
                    "type": "function",
                    "function": {
                        "name": p["functionCall"].get("name"),
                        "arguments": orjson.dumps(p["functionCall"].get("args")).decode(),
                    },
                }
                for p in parts
                if isinstance(p.get("functionCall"), dict)
            ]
            turn: Json = {"role": "assistant", "content": "\n".join(texts)}
            if calls:
                turn["tool_calls"] = calls
            messages.append(turn)
            continue
        for part in parts:
            response = part.get("functionResponse")
            if isinstance(response, dict):
                messages.append({"role": "tool", "content": _response_text(response)})
        if texts:
            messages.append({"role": "user", "content": "\n".join(texts)})
    return messages


def _response_text(response: dict[str, Any]) -> str:
    inner = response.get("response")
    if isinstance(inner, dict):
        for key in ("content", "result", "output"):
            if isinstance(inner.get(key), str):
                return str(inner[key])
        return orjson.dumps(inner).decode()
    return str(inner)


def _tools(body: Json) -> list[Json] | None:
    declared: list[Json] = []
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            declared += tool.get("function_declarations") or tool.get("functionDeclarations") or []
    return chat_tools(declared)


def _parts(reply: Reply) -> list[Json]:
    if reply.tool_calls:
        return [
            {
                "functionCall": {
                    "name": c["function"]["name"],
                    "args": orjson.loads(c["function"]["arguments"]),
                }
            }
            for c in reply.tool_calls
        ]
    return [{"text": reply.content or ""}]


def _usage(messages: list[Json], reply: Reply) -> Json:
    prompt = sum(estimate_tokens(message_text(m)) + 3 for m in messages)
    completion = max(1, estimate_tokens(reply.content or "x"))
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": completion,
        "totalTokenCount": prompt + completion,
    }


def _candidate(parts: list[Json], finish: str | None) -> Json:
    candidate: Json = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return candidate


def create_fake_gemini_app(state: FakeState) -> Starlette:
    async def generate(request: Request) -> Response:
        model, _, method = request.path_params["spec"].partition(":")
        body = await read_and_record(request, state)
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if key != FAKE_GEMINI_KEY:
            return _error(401, "API key not valid")
        if body is None or method not in ("generateContent", "streamGenerateContent"):
            return _error(400, "invalid request")
        messages = gemini_messages(body)
        if not messages:
            return _error(400, "contents is not specified")
        magic = magic_requests("chat", messages)
        if magic.fail_status is not None:
            return _error(magic.fail_status, magic.fail_message)
        reply = chat_reply({"model": model, "tools": _tools(body)}, messages)
        if method == "generateContent":
            payload = {
                "candidates": [_candidate(_parts(reply), "STOP")],
                "usageMetadata": _usage(messages, reply),
                "modelVersion": model,
            }
            answer: Response = json_response(payload)
            return answer
        state.count("stream")
        events: list[bytes] = []
        pieces = [] if reply.tool_calls else split_chunks(reply.content or "")
        for piece in pieces:
            events.append(orjson.dumps({"candidates": [_candidate([{"text": piece}], None)]}))
        last = {
            "candidates": [
                _candidate(_parts(reply) if reply.tool_calls else [{"text": ""}], "STOP")
            ],
            "usageMetadata": _usage(messages, reply),
            "modelVersion": model,
        }
        events.append(orjson.dumps(last))
        framed = [b"data: " + event + b"\r\n\r\n" for event in events]
        return StreamingResponse(iter(framed), media_type="text/event-stream")

    routes = [
        Route("/models/{spec:path}", generate, methods=["POST"]),
        Route("/v1beta/models/{spec:path}", generate, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.fake = state
    return app


@contextmanager
def fake_gemini() -> Iterator[tuple[ServerThread, FakeState]]:
    """A started fake Gemini server: (server, state); ``server.base_url`` is its api_base."""
    state = FakeState()
    with ServerThread(create_fake_gemini_app(state)) as server:
        yield server, state
