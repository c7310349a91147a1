"""The fake providers' other API shapes: OpenAI Responses and Anthropic Messages.

Pure functions: a request in either shape is read as chat messages (so the scripted answers
of ``tests.fake_answers`` apply unchanged: echo, memories, tool calls, tool results), and the
``Reply`` is written back as that API's response object or its SSE events.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from typing import Any

import orjson

from tests.fake_answers import Json, Reply, estimate_tokens, message_text, split_chunks

_IDS = itertools.count(1)
MEMORY_OPEN = "<memories>"


def _sse(event: str, payload: Json) -> bytes:
    return f"event: {event}\n".encode() + b"data: " + orjson.dumps(payload) + b"\n\n"


def chat_tools(tools: Any) -> list[Json] | None:
    """Responses / Anthropic tool definitions as Chat Completions tools (names only matter)."""
    if not isinstance(tools, list) or not tools:
        return None
    converted: list[Json] = []
    for tool in tools:
        if isinstance(tool, dict) and isinstance(tool.get("name"), str):
            converted.append({"type": "function", "function": {"name": tool["name"]}})
    return converted or None


def _prompt_tokens(messages: list[Json]) -> int:
    return sum(estimate_tokens(message_text(m)) + 3 for m in messages)


def _reply_tokens(reply: Reply) -> int:
    if reply.tool_calls:
        return sum(estimate_tokens(c["function"]["arguments"]) + 5 for c in reply.tool_calls)
    return max(1, estimate_tokens(reply.content or ""))


# ---------------------------------------------------------------------------------------------
# OpenAI Responses
# ---------------------------------------------------------------------------------------------


def _parts_text(content: Any) -> Any:
    if not isinstance(content, list):
        return content
    return [
        {"type": "text", "text": part.get("text", "")}
        for part in content
        if isinstance(part, dict) and part.get("type") in ("input_text", "output_text")
    ]


def responses_messages(body: Json) -> list[Json]:
    """A Responses request as chat messages."""
    messages: list[Json] = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        return [*messages, {"role": "user", "content": items}]
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(
                {"role": item.get("role", "user"), "content": _parts_text(item.get("content"))}
            )
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function", "function": item}
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "content": output if isinstance(output, str) else ""})
    return messages


def _response_output(reply: Reply, number: int) -> list[Json]:
    if reply.tool_calls:
        return [
            {
                "type": "function_call",
                "id": f"fc_fake_{number}_{index}",
                "call_id": call["id"],
                "name": call["function"]["name"],
                "arguments": call["function"]["arguments"],
                "status": "completed",
            }
            for index, call in enumerate(reply.tool_calls)
        ]
    text = {"type": "output_text", "text": reply.content or "", "annotations": []}
    return [
        {
            "type": "message",
            "id": f"msg_fake_{number}",
            "status": "completed",
            "role": "assistant",
            "content": [text],
        }
    ]


def response_object(
    body: Json, messages: list[Json], reply: Reply, *, number: int, done: bool = True
) -> Json:
    prompt, completion = _prompt_tokens(messages), _reply_tokens(reply)
    return {
        "id": f"resp_fake_{number}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed" if done else "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": _response_output(reply, number) if done else [],
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": body.get("tools") or [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        }
        if done
        else None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def response_events(body: Json, messages: list[Json], reply: Reply) -> list[bytes]:
    """The typed SSE events of a streamed response, ``response.completed`` last."""
    number = next(_IDS)
    sequence = itertools.count()
    events: list[bytes] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append(_sse(kind, {"type": kind, "sequence_number": next(sequence), **fields}))

    emit(
        "response.created",
        response=response_object(body, messages, reply, number=number, done=False),
    )
    emit(
        "response.in_progress",
        response=response_object(body, messages, reply, number=number, done=False),
    )
    for index, item in enumerate(_response_output(reply, number)):
        if item["type"] == "function_call":
            emit(
                "response.output_item.added",
                output_index=index,
                item={**item, "arguments": "", "status": "in_progress"},
            )
            arguments = item["arguments"]
            half = len(arguments) // 2
            for piece in (arguments[:half], arguments[half:]):
                emit(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=piece,
                )
            emit(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=arguments,
            )
        else:
            emit(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            )
            empty = {"type": "output_text", "text": "", "annotations": []}
            emit(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=empty,
            )
            text = item["content"][0]["text"]
            for piece in split_chunks(text, body.get("fake_chunks")):
                emit(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    delta=piece,
                    logprobs=[],
                )
            emit(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            )
            emit(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=item["content"][0],
            )
        emit("response.output_item.done", output_index=index, item=item)
    emit("response.completed", response=response_object(body, messages, reply, number=number))
    return events


# ---------------------------------------------------------------------------------------------
# Anthropic Messages
# ---------------------------------------------------------------------------------------------


def _block_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "\n".join(
        str(block.get("text", ""))
        for block in content
        if isinstance(block, dict) and block.get("type") == "text"
    )


def anthropic_messages(body: Json) -> list[Json]:
    """An Anthropic request as chat messages. A recalled block travels in a user turn's text
    blocks; it becomes a system message before that turn, so the echo stays the user's words."""
    messages: list[Json] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _block_text(system)})
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        if message.get("role") == "assistant":
            calls = [
                {
                    "id": b.get("id"),
                    "type": "function",
                    "function": {
                        "name": b.get("name"),
                        "arguments": orjson.dumps(b.get("input")).decode(),
                    },
                }
                for b in blocks
                if isinstance(b, dict) and b.get("type") == "tool_use"
            ]
            turn: Json = {"role": "assistant", "content": _block_text(blocks)}
            if calls:
                turn["tool_calls"] = calls
            messages.append(turn)
            continue
        words: list[str] = []
        for block in blocks:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_result":
                messages.append({"role": "tool", "content": _block_text(block.get("content"))})
            elif block.get("type") == "text":
                text = str(block.get("text", ""))
                if text.startswith(MEMORY_OPEN):
                    messages.append({"role": "system", "content": text})
                else:
                    words.append(text)
        if words:
            messages.append({"role": "user", "content": "\n".join(words)})
    return messages


def _anthropic_content(reply: Reply) -> list[Json]:
    if reply.tool_calls:
        return [
            {
                "type": "tool_use",
                "id": f"toolu_{call['id']}",
                "name": call["function"]["name"],
                "input": orjson.loads(call["function"]["arguments"]),
            }
            for call in reply.tool_calls
        ]
    return [{"type": "text", "text": reply.content or ""}]


def message_object(body: Json, messages: list[Json], reply: Reply, *, number: int) -> Json:
    return {
        "id": f"msg_fake_{number}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": _anthropic_content(reply),
        "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": _prompt_tokens(messages),
            "output_tokens": _reply_tokens(reply),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def message_events(body: Json, messages: list[Json], reply: Reply) -> list[bytes]:
    """Anthropic's SSE events: message_start, content blocks, message_delta, message_stop."""
    whole = message_object(body, messages, reply, number=next(_IDS))
    start = {**whole, "content": [], "stop_reason": None}
    start["usage"] = {**whole["usage"], "output_tokens": 1}
    events = [_sse("message_start", {"type": "message_start", "message": start})]
    events.append(_sse("ping", {"type": "ping"}))
    for index, block in enumerate(whole["content"]):
        if block["type"] == "tool_use":
            opened = {**block, "input": {}}
            events.append(
                _sse(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": opened},
                )
            )
            arguments = orjson.dumps(block["input"]).decode()
            half = len(arguments) // 2
            for piece in (arguments[:half], arguments[half:]):
                delta = {"type": "input_json_delta", "partial_json": piece}
                events.append(
                    _sse(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    )
                )
        else:
            opened = {"type": "text", "text": ""}
            events.append(
                _sse(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": opened},
                )
            )
            for piece in split_chunks(block["text"], body.get("fake_chunks")):
                delta = {"type": "text_delta", "text": piece}
                events.append(
                    _sse(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    )
                )
        events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    final = {"stop_reason": whole["stop_reason"], "stop_sequence": None}
    usage = {"output_tokens": whole["usage"]["output_tokens"]}
    events.append(_sse("message_delta", {"type": "message_delta", "delta": final, "usage": usage}))
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return events


def anthropic_error(status: int, message: str) -> Json:
    kinds: Mapping[int, str] = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
        529: "overloaded_error",
    }
    return {"type": "error", "error": {"type": kinds.get(status, "api_error"), "message": message}}
