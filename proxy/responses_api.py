"""``POST /v1/responses``: the OpenAI Responses adapter of the memory pipeline.

The request is read as chat messages for recall and learning: ``instructions`` as a system
message, ``input`` (a string, or items: messages with ``input_text``/``input_image`` parts,
``function_call`` and ``function_call_output`` items) in order. The memory block goes in as
a system message item right before the last user message item, so ``instructions``, tools and
every earlier item stay byte-identical (OpenAI's automatic prefix caching), and in an agent
loop it sits before the user's turn, never between a ``function_call`` and its output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from memory_core.messages import check_content

from .errors import BadRequest
from .pipeline import Conversation, parse_model_body, serve_api
from .replies import Api

# Part types whose text is the message's words (input_text from users, output_text replayed).
_TEXT_PARTS = ("input_text", "output_text", "text")
_MESSAGE_ROLES = ("user", "assistant", "system", "developer")


def _item_where(index: int) -> str:
    return f"input[{index}]"


def check_input(value: Any) -> None:
    """``input``: absent, a string, or a list of objects with valid messages (400 naming the
    first bad member)."""
    if value is None or isinstance(value, str):
        return
    if not isinstance(value, list):
        raise BadRequest("input must be a string or an array of input items", param="input")
    for index, item in enumerate(value):
        where = _item_where(index)
        if not isinstance(item, Mapping):
            raise BadRequest(f"{where} must be an object", param=where)
        kind = item.get("type", "message")
        if not isinstance(kind, str):
            raise BadRequest(f"{where}.type must be a string", param=f"{where}.type")
        if kind == "message":
            if item.get("role") not in _MESSAGE_ROLES:
                raise BadRequest(
                    f"{where}.role must be one of {', '.join(_MESSAGE_ROLES)}",
                    param=f"{where}.role",
                )
            check_content(item.get("content"), f"{where}.content")
        elif kind == "function_call_output":
            output = item.get("output")
            if not isinstance(output, str | list):
                raise BadRequest(
                    f"{where}.output must be a string or an array", param=f"{where}.output"
                )


def parse_responses_body(raw: bytes, *, max_depth: int) -> dict[str, Any]:
    body = parse_model_body(raw, max_depth=max_depth)
    check_input(body.get("input"))
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise BadRequest("instructions must be a string", param="instructions")
    return body


def _chat_content(content: Any) -> Any:
    """A message item's content with its text parts as Chat Completions ``text`` parts (and
    its ``input_image`` parts as they are: learning may look at the new turn's images)."""
    if not isinstance(content, list):
        return content
    return [
        {"type": "text", "text": part["text"]} if part.get("type") in _TEXT_PARTS else part
        for part in content
        if isinstance(part, Mapping)
        and (
            (part.get("type") in _TEXT_PARTS and isinstance(part.get("text"), str))
            or part.get("type") == "input_image"
        )
    ]


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    texts = [
        part.get("text", "")
        for part in output
        if isinstance(part, Mapping) and isinstance(part.get("text"), str)
    ]
    return "\n".join(texts)


def responses_conversation(body: Mapping[str, Any]) -> Conversation:
    """The request as chat messages (tool calls as ``tool_calls``, outputs as ``tool``)."""
    conversation: Conversation = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        conversation.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        return [*conversation, {"role": "user", "content": items}]
    for item in items if isinstance(items, list) else []:
        kind = item.get("type", "message")
        if kind == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            conversation.append({"role": role, "content": _chat_content(item.get("content"))})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function", "function": item}
            conversation.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            text = _output_text(item.get("output"))
            conversation.append(
                {"role": "tool", "tool_call_id": item.get("call_id"), "content": text}
            )
    return conversation


def _is_user_message(item: Any) -> bool:
    return (
        isinstance(item, Mapping)
        and item.get("type", "message") == "message"
        and item.get("role") == "user"
    )


def inject_responses_block(body: Mapping[str, Any], block: str, position: str) -> dict[str, Any]:
    """A new body with the block as a system message item before the last user message item
    (first, with ``system_prefix``); a string ``input`` becomes its one-item list."""
    memory_item = {"type": "message", "role": "system", "content": block}
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        items: list[Any] = [{"type": "message", "role": "user", "content": raw_input}]
    else:
        items = list(raw_input) if isinstance(raw_input, list) else []
    if position == "system_prefix":
        return {**body, "input": [memory_item, *items]}
    for index in range(len(items) - 1, -1, -1):
        if _is_user_message(items[index]):
            return {**body, "input": [*items[:index], memory_item, *items[index:]]}
    return {**body, "input": [*items, memory_item]}


class ResponsesAdapter:
    api: Api = "responses"
    opaque_claims: tuple[str, ...] = ()

    def parse(self, raw: bytes, *, max_depth: int) -> dict[str, Any]:
        return parse_responses_body(raw, max_depth=max_depth)

    def conversation(self, body: dict[str, Any]) -> Conversation:
        return responses_conversation(body)

    def inject(self, body: dict[str, Any], block: str, position: str) -> dict[str, Any]:
        return inject_responses_block(body, block, position)


RESPONSES = ResponsesAdapter()


async def create_response(request: Request) -> Response:
    return await serve_api(request, RESPONSES)
