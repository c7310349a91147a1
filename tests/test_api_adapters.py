"""The per-API pure steps, table-driven: reading Responses and Messages requests as chat
conversations, placing the block (input copied, never mutated), and the per-API reply
collectors fed whole responses and SSE bytes cut anywhere."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from proxy.inject import continues_tool_loop, pick_new_exchange, recall_query
from proxy.messages_api import inject_messages_block, messages_conversation
from proxy.replies import MessagesCollector, ReplyCollector, ResponsesCollector
from proxy.responses_api import inject_responses_block, responses_conversation
from tests.fake_answers import Reply
from tests.fake_apis import message_events, message_object, response_events, response_object

BLOCK = "<memories>\n- [2026-01-01] User lives in Oslo\n</memories>"
CALL = {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"}
OUTPUT = {"type": "function_call_output", "call_id": "c1", "output": "sunny"}

RESPONSES_CASES: dict[str, tuple[dict[str, Any], list[dict[str, Any]], list[Any]]] = {
    "string-input": (
        {"input": "hi there", "instructions": "be brief"},
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}],
        [
            {"type": "message", "role": "system", "content": BLOCK},
            {"type": "message", "role": "user", "content": "hi there"},
        ],
    ),
    "items-with-parts": (
        {
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "a"}]},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "b"}],
                },
                {"role": "developer", "content": "rules"},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_image", "image_url": "data:x"},
                        {"type": "input_text", "text": "c"},
                    ],
                },
            ]
        },
        [
            {"role": "user", "content": [{"type": "text", "text": "a"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "b"}]},
            {"role": "system", "content": "rules"},
            # The image stays for learning (memory.multimodal); only text parts become text.
            {
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": "data:x"},
                    {"type": "text", "text": "c"},
                ],
            },
        ],
        ["user", "assistant", "developer", "system", "user"],
    ),
    "tool-loop": (
        {"input": [{"role": "user", "content": "weather?"}, CALL, OUTPUT]},
        [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": CALL}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        ["system", "user", "function_call", "function_call_output"],
    ),
}


def _shape(items: list[Any]) -> list[Any]:
    return [item.get("role") or item.get("type") for item in items]


@pytest.mark.parametrize("case", list(RESPONSES_CASES))
def test_responses_conversation_and_block(case: str) -> None:
    body, conversation, placed = RESPONSES_CASES[case]
    snapshot = copy.deepcopy(body)
    assert responses_conversation(body) == conversation
    injected = inject_responses_block(body, BLOCK, "before_last_user")
    assert body == snapshot
    items = injected["input"]
    assert (items if isinstance(placed[0], dict) else _shape(items)) == placed
    first = inject_responses_block(body, BLOCK, "system_prefix")["input"][0]
    assert first == {"type": "message", "role": "system", "content": BLOCK}


def _messages(*turns: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 5, "messages": list(turns)}


USE = {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}}
RESULT = {
    "type": "tool_result",
    "tool_use_id": "t1",
    "content": [{"type": "text", "text": "sunny"}],
}


def test_messages_conversation_reads_blocks_and_tool_turns() -> None:
    body = {
        **_messages(
            {
                "role": "user",
                "content": [{"type": "image", "source": {}}, {"type": "text", "text": "weather?"}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "checking"}, USE]},
            {"role": "user", "content": [RESULT]},
        ),
        "system": [{"type": "text", "text": "rules"}],
    }
    conversation = messages_conversation(body)
    assert [m["role"] for m in conversation] == ["system", "user", "assistant", "tool"]
    assert conversation[2]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Oslo"}',
    }
    assert conversation[3]["content"] == "sunny"
    assert continues_tool_loop(conversation)
    assert recall_query(conversation) == "weather?"
    assert pick_new_exchange(conversation, "It is sunny") == [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "It is sunny"},
    ]


def test_messages_block_ends_the_last_user_turn_with_words() -> None:
    body = _messages(
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [USE]},
        {"role": "user", "content": [RESULT]},
    )
    snapshot = copy.deepcopy(body)
    injected = inject_messages_block(body, BLOCK, "before_last_user")
    assert body == snapshot
    assert injected["messages"][0]["content"] == [
        {"type": "text", "text": "weather?"},
        {"type": "text", "text": BLOCK},
    ]
    assert injected["messages"][1:] == body["messages"][1:]
    prefixed = inject_messages_block({**body, "system": "rules"}, BLOCK, "system_prefix")
    assert prefixed["system"] == [
        {"type": "text", "text": BLOCK},
        {"type": "text", "text": "rules"},
    ]
    assert prefixed["messages"] == body["messages"]


TEXT = Reply("Héllo wörld ✓ done")
TOOLS = Reply(
    None,
    "tool_calls",
    [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}],
)
BODY = {"model": "m", "input": "q", "max_tokens": 5}


def _cuts(data: bytes, step: int) -> list[bytes]:
    return [data[i : i + step] for i in range(0, len(data), step)]


@pytest.mark.parametrize("step", [1, 7, 64, 100_000])
@pytest.mark.parametrize(
    ("collector", "events", "whole"),
    [
        (ResponsesCollector, response_events, lambda b, m, r: response_object(b, m, r, number=1)),
        (MessagesCollector, message_events, lambda b, m, r: message_object(b, m, r, number=1)),
    ],
    ids=["responses", "messages"],
)
def test_collectors_read_text_tools_and_finish(
    step: int, collector: type[ReplyCollector], events: Any, whole: Any
) -> None:
    for reply, text, tools in ((TEXT, TEXT.content, False), (TOOLS, "", True)):
        streamed = collector()
        data = b"".join(events(BODY, [], reply))
        for piece in _cuts(data, step):
            streamed.feed_sse_bytes(piece)
        assert (streamed.text, streamed.tool_calls, streamed.finished) == (text, tools, True)
        complete = collector()
        complete.feed_completion(orjson.loads(orjson.dumps(whole(BODY, [], reply))))
        assert (complete.text, complete.tool_calls, complete.finished) == (text, tools, True)


def test_a_cut_short_stream_is_not_finished() -> None:
    data = b"".join(response_events(BODY, [], TEXT))
    cut = ResponsesCollector()
    cut.feed_sse_bytes(data[: data.index(b"event: response.completed")])
    assert not cut.finished and cut.text == TEXT.content
    anthropic = b"".join(message_events(BODY, [], TEXT))
    half = MessagesCollector()
    half.feed_sse_bytes(anthropic[: anthropic.index(b"event: message_stop")])
    assert not half.finished
