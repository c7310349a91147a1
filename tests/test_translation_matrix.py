"""Every API × every upstream shape, with memory: Chat Completions, Responses and Anthropic
Messages (the real ``openai`` and ``anthropic`` SDKs) against an OpenAI-compatible server
(raw and through LiteLLM), an Anthropic Messages server and a Gemini ``generateContent``
server (through LiteLLM's translation), stream and non-stream, text and tool calls; upstream
errors keep their status and come back in the calling API's error shape."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest

from tests.api_servers import ApiRig, api_rig, new_user
from tests.servers import learn_state, wait_learned

SISTER = "I'm vegetarian and my sister lives in Lisbon"
APIS = ["chat", "responses", "messages"]
UPSTREAMS = ["fake-model", "lite-model", "claude", "gemini"]
QUESTION = "Where does my sister live?"
TOOL_ASK = "please call tool get_weather for Lisbon"


@dataclass
class Answer:
    text: str
    tools: list[str]
    headers: Any
    usage: int | None = None  # total tokens the API reported (non-stream)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiRig]:
    with api_rig(tmp_path_factory.mktemp("matrix")) as rig:
        yield rig


@pytest.fixture(scope="module")
def clients(rig: ApiRig) -> tuple[openai.OpenAI, anthropic.Anthropic]:
    return (
        openai.OpenAI(base_url=rig.proxy.url, api_key="x", max_retries=0, timeout=30),
        anthropic.Anthropic(base_url=rig.proxy.base_url, api_key="x", max_retries=0, timeout=30),
    )


@pytest.fixture(scope="module")
def user(rig: ApiRig, clients: tuple[openai.OpenAI, anthropic.Anthropic]) -> str:
    user = new_user("matrix")
    before = learn_state(rig.proxy)
    clients[0].chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": SISTER}],
        extra_body={"user_id": user},
    )
    wait_learned(rig.proxy, before)
    return user


def ask(
    clients: tuple[openai.OpenAI, anthropic.Anthropic],
    api: str,
    model: str,
    text: str,
    *,
    stream: bool,
    user: str,
    tools: bool = False,
) -> Answer:
    oai, ant = clients
    headers = {"x-user-id": user}
    if api == "chat":
        chat_tools: Any = (
            [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
            if tools
            else openai.omit
        )
        messages: Any = [{"role": "user", "content": text}]
        raw = oai.chat.completions.with_raw_response.create(
            model=model, messages=messages, tools=chat_tools, stream=stream, extra_headers=headers
        )
        if not stream:
            completion = raw.parse()
            message = completion.choices[0].message
            names = [c.function.name for c in message.tool_calls or []]  # type: ignore[union-attr]
            total = completion.usage.total_tokens if completion.usage else None
            return Answer(message.content or "", names, raw.headers, total)
        chunks = [c for c in raw.parse() if c.choices]
        content = "".join(c.choices[0].delta.content or "" for c in chunks)
        names = [
            t.function.name
            for c in chunks
            for t in c.choices[0].delta.tool_calls or []
            if t.function and t.function.name
        ]
        return Answer(content, names, raw.headers)
    if api == "responses":
        response_tools: Any = (
            [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
            if tools
            else openai.omit
        )
        if not stream:
            raw = oai.responses.with_raw_response.create(
                model=model, input=text, tools=response_tools, extra_headers=headers
            )
            response = raw.parse()
            names = [i.name for i in response.output if i.type == "function_call"]
            total = response.usage.total_tokens if response.usage else None
            return Answer(response.output_text, names, raw.headers, total)
        with oai.responses.stream(
            model=model, input=text, tools=response_tools, extra_headers=headers
        ) as events:
            types = [event.type for event in events]
            final = events.get_final_response()
        assert types[0] == "response.created" and types[-1] == "response.completed"
        names = [i.name for i in final.output if i.type == "function_call"]
        return Answer(final.output_text, names, None)
    anthropic_tools: Any = (
        [{"name": "get_weather", "input_schema": {"type": "object"}}] if tools else anthropic.omit
    )
    body: Any = [{"role": "user", "content": text}]
    if not stream:
        raw_message = ant.messages.with_raw_response.create(
            model=model, max_tokens=200, messages=body, tools=anthropic_tools, extra_headers=headers
        )
        message = raw_message.parse()
        total = message.usage.input_tokens + message.usage.output_tokens
        return Answer(
            _anthropic_text(message), _anthropic_tools(message), raw_message.headers, total
        )
    with ant.messages.stream(
        model=model, max_tokens=200, messages=body, tools=anthropic_tools, extra_headers=headers
    ) as streamed:
        kinds = [event.type for event in streamed]
        final_message = streamed.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    return Answer(_anthropic_text(final_message), _anthropic_tools(final_message), None)


def _anthropic_text(message: Any) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def _anthropic_tools(message: Any) -> list[str]:
    return [block.name for block in message.content if block.type == "tool_use"]


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("model", UPSTREAMS)
@pytest.mark.parametrize("api", APIS)
def test_recalled_memory_reaches_every_provider(
    clients: Any, user: str, api: str, model: str, stream: bool
) -> None:
    answer = ask(clients, api, model, QUESTION, stream=stream, user=user)
    assert answer.text.startswith(f"ECHO: {QUESTION} | MEMORIES: "), answer.text
    assert "User's sister lives in Lisbon" in answer.text
    if answer.headers is not None:
        assert int(answer.headers["x-memory-recalled"]) >= 1
    if not stream:
        assert answer.usage is not None and answer.usage > 0


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("model", UPSTREAMS)
@pytest.mark.parametrize("api", APIS)
def test_tool_calls_through_every_provider(
    clients: Any, user: str, api: str, model: str, stream: bool
) -> None:
    answer = ask(clients, api, model, TOOL_ASK, stream=stream, user=user, tools=True)
    assert answer.tools == ["get_weather"]


@pytest.mark.parametrize("model", UPSTREAMS)
@pytest.mark.parametrize("api", APIS)
def test_upstream_errors_keep_status_in_the_callers_shape(
    clients: Any, user: str, api: str, model: str
) -> None:
    expected = anthropic.RateLimitError if api == "messages" else openai.RateLimitError
    with pytest.raises(expected) as caught:
        ask(clients, api, model, "please [[fail:429]]", stream=False, user=user)
    body = caught.value.body
    assert isinstance(body, dict)
    if api == "messages":
        assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    else:
        assert isinstance(body.get("message"), str)
