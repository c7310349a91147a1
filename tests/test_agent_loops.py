"""Agent loops on all three APIs (Chat Completions, Responses, Messages), replayed with the
real SDKs against memproxy under a real uvicorn server: a tool call, its result, the answer;
parallel calls; a loop of three steps.

Per user turn: exactly one recall search (later steps reuse the block: ``x-memory-recall``),
the block never between a tool call and its result (it stays where the first step put it, so
the prompt up to the tool calls is byte-identical across steps), and exactly one learning job,
from the user's words and the final answer (no tool payloads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import orjson
import pytest

from tests.api_servers import ApiRig, api_rig, new_user
from tests.servers import conversation_of, labelled_metric, learn_state, wait_learned

SISTER = "I'm vegetarian and my sister lives in Lisbon"
QUESTION = "please call tool get_weather for my sister's city"
PARALLEL = "please call tool parallel: weather and time where my sister lives"
AGAIN = "please call tool twice for my sister"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiRig]:
    with api_rig(tmp_path_factory.mktemp("loops")) as rig:
        yield rig


@pytest.fixture(scope="module")
def user(rig: ApiRig) -> str:
    """A user with memories, so every step has a block to place."""
    user = new_user("looper")
    client = openai.OpenAI(base_url=rig.proxy.url, api_key="x", max_retries=0)
    before = learn_state(rig.proxy)
    client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": SISTER}],
        extra_body={"user_id": user},
    )
    wait_learned(rig.proxy, before)
    return user


@dataclass
class Step:
    headers: Any
    tool_calls: list[tuple[str, str]]  # (id, name)
    text: str
    sent: dict[str, Any]  # what the provider received


# ---- one driver per API: a request with tools, and the follow-up carrying the results --------


class ChatLoop:
    api = "chat"
    model = "fake-model"

    def __init__(self, rig: ApiRig, user: str) -> None:
        self.rig, self.user = rig, user
        self.client = openai.OpenAI(base_url=rig.proxy.url, api_key="x", max_retries=0)
        self.tools = [
            {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
            for name in ("get_weather", "get_time")
        ]
        self.history: list[Any] = []

    def start(self, text: str) -> Step:
        self.history = [{"role": "user", "content": text}]
        return self._send()

    def answer(self, step: Step, results: list[str]) -> Step:
        calls = [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}
            for call_id, name in step.tool_calls
        ]
        self.history.append({"role": "assistant", "content": None, "tool_calls": calls})
        for (call_id, _), result in zip(step.tool_calls, results, strict=True):
            self.history.append({"role": "tool", "tool_call_id": call_id, "content": result})
        return self._send()

    def _send(self) -> Step:
        raw = self.client.chat.completions.with_raw_response.create(
            model=self.model,
            messages=self.history,
            tools=self.tools,  # type: ignore[arg-type]
            extra_body={"user_id": self.user},
        )
        message = raw.parse().choices[0].message
        calls = [(c.id, c.function.name) for c in message.tool_calls or []]  # type: ignore[union-attr]
        sent = self.rig.openai_fake.requests_of("chat")[-1].body
        return Step(raw.headers, calls, message.content or "", sent)

    @staticmethod
    def check_placement(sent: dict[str, Any]) -> None:
        roles = [m["role"] for m in sent["messages"]]
        assert roles[0] == "system" and sent["messages"][0]["content"].startswith("<memories>")
        assert roles[1] == "user" and "system" not in roles[1:]


class ResponsesLoop:
    api = "responses"
    model = "fake-model"

    def __init__(self, rig: ApiRig, user: str) -> None:
        self.rig, self.user = rig, user
        self.client = openai.OpenAI(base_url=rig.proxy.url, api_key="x", max_retries=0)
        self.tools = [
            {"type": "function", "name": name, "parameters": {"type": "object"}}
            for name in ("get_weather", "get_time")
        ]
        self.items: list[Any] = []

    def start(self, text: str) -> Step:
        self.items = [{"role": "user", "content": text}]
        return self._send()

    def answer(self, step: Step, results: list[str]) -> Step:
        for call_id, name in step.tool_calls:
            self.items.append(
                {"type": "function_call", "call_id": call_id, "name": name, "arguments": "{}"}
            )
        for (call_id, _), result in zip(step.tool_calls, results, strict=True):
            self.items.append(
                {"type": "function_call_output", "call_id": call_id, "output": result}
            )
        return self._send()

    def _send(self) -> Step:
        raw = self.client.responses.with_raw_response.create(
            model=self.model,
            input=self.items,
            tools=self.tools,  # type: ignore[arg-type]
            user=self.user,
        )
        response = raw.parse()
        calls = [(i.call_id, i.name) for i in response.output if i.type == "function_call"]
        sent = self.rig.openai_fake.requests_of("chat")[-1].body
        return Step(raw.headers, calls, response.output_text, sent)

    @staticmethod
    def check_placement(sent: dict[str, Any]) -> None:
        items = sent["input"]
        assert items[0]["role"] == "system" and items[0]["content"].startswith("<memories>")
        assert items[1]["role"] == "user"
        assert all(item.get("role") != "system" for item in items[1:])


class MessagesLoop:
    api = "messages"
    model = "claude"

    def __init__(self, rig: ApiRig, user: str) -> None:
        self.rig, self.user = rig, user
        self.client = anthropic.Anthropic(base_url=rig.proxy.base_url, api_key="x", max_retries=0)
        self.tools = [
            {"name": name, "input_schema": {"type": "object"}}
            for name in ("get_weather", "get_time")
        ]
        self.messages: list[Any] = []

    def start(self, text: str) -> Step:
        self.messages = [{"role": "user", "content": text}]
        return self._send()

    def answer(self, step: Step, results: list[str]) -> Step:
        uses = [
            {"type": "tool_use", "id": call_id, "name": name, "input": {}}
            for call_id, name in step.tool_calls
        ]
        self.messages.append({"role": "assistant", "content": uses})
        outputs = [
            {"type": "tool_result", "tool_use_id": call_id, "content": result}
            for (call_id, _), result in zip(step.tool_calls, results, strict=True)
        ]
        self.messages.append({"role": "user", "content": outputs})
        return self._send()

    def _send(self) -> Step:
        raw = self.client.messages.with_raw_response.create(
            model=self.model,
            max_tokens=200,
            messages=self.messages,
            tools=self.tools,  # type: ignore[arg-type]
            metadata={"user_id": self.user},
        )
        message = raw.parse()
        calls = [(b.id, b.name) for b in message.content if b.type == "tool_use"]
        text = "".join(b.text for b in message.content if b.type == "text")
        sent = self.rig.anthropic_state.snapshot("chat")[-1].body
        return Step(raw.headers, calls, text, sent)

    @staticmethod
    def check_placement(sent: dict[str, Any]) -> None:
        first = sent["messages"][0]["content"]
        assert first[-1]["type"] == "text" and first[-1]["text"].startswith("<memories>")
        for message in sent["messages"][1:]:
            blocks = message["content"] if isinstance(message["content"], list) else []
            assert all("<memories>" not in str(block) for block in blocks)


LOOPS: list[Callable[[ApiRig, str], Any]] = [ChatLoop, ResponsesLoop, MessagesLoop]
IDS = ["chat", "responses", "messages"]


def extracted_since(rig: ApiRig, count: int) -> list[list[tuple[str, str]]]:
    return [conversation_of(r) for r in rig.openai_fake.requests_of("extract")[count:]]


@pytest.mark.parametrize("make", LOOPS, ids=IDS)
def test_tool_call_result_answer_is_one_recall_and_one_job(
    rig: ApiRig, user: str, make: Callable[[ApiRig, str], Any]
) -> None:
    loop = make(rig, user)
    before = learn_state(rig.proxy)
    extracts = len(rig.openai_fake.requests_of("extract"))

    def recalls(source: str) -> float:
        return labelled_metric(rig.proxy, "memproxy_recalls_total", api=loop.api, source=source)

    searches, reuses = recalls("search"), recalls("reused")
    first = loop.start(QUESTION)
    assert [name for _, name in first.tool_calls] == ["get_weather"]
    assert first.headers["x-memory-recall"] == "search"
    assert int(first.headers["x-memory-recalled"]) >= 1
    assert learn_state(rig.proxy)["enqueued"] == before["enqueued"]  # a tool step: not learned
    loop.check_placement(first.sent)
    final = loop.answer(first, ["sunny, 21C"])
    assert final.text.startswith("TOOL RESULT: sunny, 21C | MEMORIES: ")
    assert final.headers["x-memory-recall"] == "reused"
    assert final.headers["x-memory-recalled"] == first.headers["x-memory-recalled"]
    loop.check_placement(final.sent)
    wait_learned(rig.proxy, before, jobs=1)
    assert learn_state(rig.proxy)["enqueued"] == before["enqueued"] + 1
    assert (recalls("search"), recalls("reused")) == (searches + 1, reuses + 1)
    assert extracted_since(rig, extracts) == [[("user", QUESTION), ("assistant", final.text)]]


@pytest.mark.parametrize("make", LOOPS, ids=IDS)
def test_parallel_calls_and_a_three_step_loop(
    rig: ApiRig, user: str, make: Callable[[ApiRig, str], Any]
) -> None:
    loop = make(rig, user)
    before = learn_state(rig.proxy)
    extracts = len(rig.openai_fake.requests_of("extract"))
    first = loop.start(PARALLEL)
    assert [name for _, name in first.tool_calls] == ["get_weather", "get_time"]
    final = loop.answer(first, ["sunny", "noon"])
    assert final.text.startswith("TOOL RESULT: sunny + noon")
    assert final.headers["x-memory-recall"] == "reused"

    step1 = loop.start(AGAIN)
    step2 = loop.answer(step1, ["partial: call tool again"])
    assert step2.tool_calls and step2.headers["x-memory-recall"] == "reused"
    step3 = loop.answer(step2, ["all done"])
    assert step3.text.startswith("TOOL RESULT: all done")
    assert step3.headers["x-memory-recall"] == "reused"
    # The provider saw the same prompt prefix at every step: the first step's request.
    prefix = orjson.dumps(first_request_prefix(loop, step1.sent))
    assert orjson.dumps(first_request_prefix(loop, step3.sent)).startswith(prefix[:-1])
    wait_learned(rig.proxy, before, jobs=2)
    assert learn_state(rig.proxy)["enqueued"] == before["enqueued"] + 2
    assert extracted_since(rig, extracts) == [
        [("user", PARALLEL), ("assistant", final.text)],
        [("user", AGAIN), ("assistant", step3.text)],
    ]


def first_request_prefix(loop: Any, sent: dict[str, Any]) -> list[Any]:
    """The conversation list a request carried (messages or input items)."""
    return list(sent["input"] if loop.api == "responses" else sent["messages"])


def test_tool_results_are_learned_with_the_switch(tmp_path: Any) -> None:
    with api_rig(tmp_path, learn_tool_results=True) as rig:
        user = new_user("tools")
        loop = ChatLoop(rig, user)
        before = learn_state(rig.proxy)
        first = loop.start(QUESTION)
        final = loop.answer(first, ["sunny, 21C"])
        wait_learned(rig.proxy, before, jobs=1)
        assert extracted_since(rig, 0) == [
            [("user", QUESTION), ("tool", "sunny, 21C"), ("assistant", final.text)]
        ]
