"""Tests of the fake OpenAI-compatible upstream: its pure scripting functions and its server."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fake_answers import embed_text, injected_memories, split_chunks
from tests.fake_extractor import (
    decide_updates,
    extract_conversation_facts,
    extract_facts,
    fact_key,
    third_person,
)
from tests.fake_state import FakeState
from tests.fake_upstream import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
        },
    },
    {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}},
]


# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "facts"),
    [
        ("I'm Alice", ["User is Alice"]),
        ("Hi! I'm Alice and I live in Paris.", ["User is Alice", "User lives in Paris"]),
        ("I am a nurse.", ["User is a nurse"]),
        ("I moved to Berlin", ["User lives in Berlin"]),
        ("I relocated to Porto last year.", ["User lives in Porto last year"]),
        ("I've just moved to Rome", ["User lives in Rome"]),
        ("my favourite color is blue!", ["User's favourite color is blue"]),
        ("My sister lives in Lisbon", ["User's sister lives in Lisbon"]),
        (
            "My sister lives in Lisbon and works as a nurse.",
            ["User's sister lives in Lisbon", "User's sister works as a nurse"],
        ),
        ("I live in Paris and work at Acme", ["User lives in Paris", "User works at Acme"]),
        ("I like sushi, and I hate running.", ["User likes sushi", "User hates running"]),
        ("I love jazz. I prefer dark mode!", ["User loves jazz", "User prefers dark mode"]),
        ("I really enjoy hiking", ["User really enjoys hiking"]),
        ("I study physics", ["User studies physics"]),
        ("I watch movies on Sundays", ["User watches movies on Sundays"]),
        ("I've got a dog named Rex.", ["User has a dog named Rex"]),
        ("I no longer like sushi", ["User no longer likes sushi"]),
        ("I don't eat meat", ["User doesn't eat meat"]),
        ("I\u2019m vegetarian", ["User is vegetarian"]),
        ("I like tea and coffee", ["User likes tea"]),  # "coffee" is too short
        ("Paris is lovely in spring", ["Paris is lovely in spring"]),
        ("What is the capital of France?", []),
        ("I live in Paris. Where should I eat tonight?", ["User lives in Paris"]),
        ("Thanks! That's great.", []),
        ("hello there, how are you", []),
        ("ok", []),
        ("Tell me a joke about cats.", []),
        ("I agree", []),
        (
            "I work as a teacher\n### Task:\nGenerate a title for the chat",
            ["User works as a teacher"],
        ),
        ("I live in Paris. I live in Paris.", ["User lives in Paris"]),
        ("[[sleep:0.5]] I prefer tea", ["User prefers tea"]),
        ("I live in Rome [[bogus-id]]", ["User lives in Rome [[bogus-id]]"]),
    ],
)
def test_extract_facts(text: str, facts: list[str]) -> None:
    assert extract_facts(text) == facts


@pytest.mark.parametrize(
    ("verb", "expected"),
    [
        ("like", "likes"),
        ("watch", "watches"),
        ("go", "goes"),
        ("study", "studies"),
        ("play", "plays"),
        ("have", "has"),
        ("moved", "moved"),
        ("can", "can"),
    ],
)
def test_third_person(verb: str, expected: str) -> None:
    assert third_person(verb) == expected


def test_extract_conversation_facts_uses_only_user_lines() -> None:
    conversation = (
        "user: I'm Bob and I live in Oslo.\n"
        "assistant: Nice! I am an assistant and I live in the cloud.\n"
        "user: My dog is called Rex.\n"
        "I love jazz\n"
        "user: thanks"
    )
    assert extract_conversation_facts(conversation) == [
        "User is Bob",
        "User lives in Oslo",
        "User's dog is called Rex",
        "User loves jazz",
    ]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("User lives in Paris", "user lives in "),
        ("User's sister lives in Lisbon", "user's sister lives in "),
        ("User's favourite color is blue", "user's favourite color is "),
        ("User works at Acme", "user works at "),
        ("User likes sushi", "user likes "),
        ("User plays chess", None),
    ],
)
def test_fact_key(text: str, key: str | None) -> None:
    assert fact_key(text) == key


EXISTING = [
    {"id": "0", "text": "User lives in Paris"},
    {"id": "1", "text": "User likes sushi"},
    {"id": "2", "text": "User's sister lives in Lisbon"},
]


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (
            ["user lives in paris"],
            [{"id": "0", "text": "User lives in Paris", "event": "NONE"}],
        ),
        (
            ["User lives in Berlin"],
            [
                {
                    "id": "0",
                    "text": "User lives in Berlin",
                    "event": "UPDATE",
                    "old_memory": "User lives in Paris",
                }
            ],
        ),
        (
            ["User's sister lives in Porto"],
            [
                {
                    "id": "2",
                    "text": "User's sister lives in Porto",
                    "event": "UPDATE",
                    "old_memory": "User's sister lives in Lisbon",
                }
            ],
        ),
        (
            ["User no longer likes sushi"],
            [{"id": "1", "text": "User likes sushi", "event": "DELETE"}],
        ),
        (
            ["User doesn't like sushi"],
            [{"id": "1", "text": "User likes sushi", "event": "DELETE"}],
        ),
        (
            ["User no longer plays golf"],
            [{"id": "new", "text": "User no longer plays golf", "event": "ADD"}],
        ),
        (["User plays chess"], [{"id": "new", "text": "User plays chess", "event": "ADD"}]),
        (
            ["User lives in Berlin", "User lives in Rome"],  # one update per memory
            [
                {
                    "id": "0",
                    "text": "User lives in Berlin",
                    "event": "UPDATE",
                    "old_memory": "User lives in Paris",
                },
                {"id": "new", "text": "User lives in Rome", "event": "ADD"},
            ],
        ),
        (
            ["User plays chess", "user plays chess"],  # duplicates in one batch
            [{"id": "new", "text": "User plays chess", "event": "ADD"}],
        ),
        (
            ["User lives in Rome [[bogus-id]]"],
            [
                {
                    "id": "999",
                    "text": "User lives in Rome [[bogus-id]]",
                    "event": "UPDATE",
                    "old_memory": "unknown memory",
                }
            ],
        ),
    ],
)
def test_decide_updates(facts: list[str], expected: list[dict[str, str]]) -> None:
    assert decide_updates(EXISTING, facts) == expected


def test_decide_updates_with_no_memories_adds_everything() -> None:
    assert decide_updates([], ["User likes tea"]) == [
        {"id": "new", "text": "User likes tea", "event": "ADD"}
    ]


@pytest.mark.parametrize(
    ("content", "count", "pieces"),
    [
        ("ECHO: hello big world", None, ["ECHO: ", "hello ", "big ", "world"]),
        ("abcdefghij", 3, ["abcd", "efg", "hij"]),
        ("abc", 10, ["a", "b", "c"]),
        ("", None, []),
    ],
)
def test_split_chunks(content: str, count: int | None, pieces: list[str]) -> None:
    assert split_chunks(content, count) == pieces
    assert "".join(pieces) == content


def test_injected_memories() -> None:
    messages = [
        {
            "role": "system",
            "content": "Be nice.\n<memories>\n- likes tea\n\n- lives in Oslo\n</memories>",
        },
        {"role": "assistant", "content": "<memories>not this one</memories>"},
        {"role": "user", "content": "hi"},
    ]
    assert injected_memories(messages) == "- likes tea ; - lives in Oslo"
    assert injected_memories([{"role": "user", "content": "hi"}]) is None


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embed_text() -> None:
    a = embed_text("User lives in Paris")
    assert len(a) == 64
    assert math.isclose(math.sqrt(sum(x * x for x in a)), 1.0, rel_tol=1e-9)
    assert embed_text("User lives in Paris") == a  # deterministic
    assert len(embed_text("hello", 16)) == 16
    related = _cosine(a, embed_text("Where do I live? Paris?"))
    unrelated = _cosine(a, embed_text("favourite programming language python"))
    assert related > 0.6
    assert related > unrelated
    assert math.isclose(math.sqrt(sum(x * x for x in embed_text(""))), 1.0)


# ---------------------------------------------------------------------------------------------
# The server, through the real openai SDK
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeUpstream) -> FakeUpstream:
    server.reset()
    return server


@pytest.fixture
def client(fake: FakeUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.url, api_key="sk-fake", max_retries=0) as sdk:
        yield sdk


def test_url_and_models(fake: FakeUpstream, client: openai.OpenAI) -> None:
    assert fake.url.startswith("http://127.0.0.1:") and fake.url.endswith("/v1")
    assert {"fake-model", "fake-model-2"} <= {m.id for m in client.models.list()}


def test_non_stream_echo(fake: FakeUpstream, client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="fake-model-2",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ECHO: first"},
            {"role": "user", "content": "hello world"},
        ],
    )
    assert response.object == "chat.completion"
    assert response.model == "fake-model-2"
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "ECHO: hello world"
    assert choice.finish_reason == "stop"
    assert response.usage is not None
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )
    (recorded,) = fake.requests
    assert recorded.path == "/v1/chat/completions"
    assert recorded.kind == "chat"
    assert recorded.headers["authorization"] == "Bearer sk-fake"
    assert recorded.body["model"] == "fake-model-2"
    assert recorded.last_user_text == "hello world"


def test_memories_are_echoed(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="fake-model",
        messages=[
            {
                "role": "system",
                "content": "<memories>\nUser likes tea\nUser lives in Oslo\n</memories>",
            },
            {"role": "user", "content": "what do I drink?"},
        ],
    )
    assert response.choices[0].message.content == (
        "ECHO: what do I drink? | MEMORIES: User likes tea ; User lives in Oslo"
    )


def test_stream_with_usage(fake: FakeUpstream, client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "one two three four"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "ECHO: one two three four"
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) == 5  # one per word
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert fake.state.stats()["counts"]["stream"] == 1


def test_stream_chunk_count_and_no_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "abcdefghijklmnop"}],
        stream=True,
        extra_body={"fake_chunks": 3, "fake_chunk_delay_s": 0.001},
    )
    chunks = list(stream)
    content = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(content) == 3
    assert "".join(content) == "ECHO: abcdefghijklmnop"
    assert all(c.usage is None for c in chunks)


def test_tools_non_stream(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "Please call tool now"}],
        tools=TOOLS,
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.id == "call_1" and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"x": 1}


def test_tools_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "call tool"}],
        tools=TOOLS,
        stream=True,
    )
    deltas = [c.choices[0].delta for c in stream]
    calls = [d.tool_calls[0] for d in deltas if d.tool_calls]
    assert len(calls) == 3
    assert calls[0].id == "call_1" and calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    arguments = "".join((c.function.arguments or "") for c in calls if c.function)
    assert json.loads(arguments) == {"x": 1}
    assert all(c.index == 0 for c in calls)


def test_tool_result(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="fake-model",
        messages=[
            {"role": "user", "content": "call tool"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"x": 1}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        tools=TOOLS,
    )
    assert response.choices[0].message.content == "TOOL RESULT: sunny"


def test_n_choices(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "twice"}]
    response = client.chat.completions.create(model="fake-model", messages=messages, n=2)
    assert [c.index for c in response.choices] == [0, 1]
    assert {c.message.content for c in response.choices} == {"ECHO: twice"}
    texts = {0: "", 1: ""}
    stream = client.chat.completions.create(model="fake-model", messages=messages, n=2, stream=True)
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == {0: "ECHO: twice", 1: "ECHO: twice"}


def test_json_mode(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "as json"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(response.choices[0].message.content or "") == {"echo": "as json"}


def test_magic_failure(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "boom [[fail:500]]"}]
        )
    assert info.value.status_code == 500
    body = info.value.response.json()
    assert body["error"]["type"] == "server_error"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "[[fail:429]]"}]
        )
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "[[fail:400]]"}]
        )
    assert bad.value.response.json()["error"]["type"] == "invalid_request_error"


def test_fail_next_control(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.set_failures(fail_next=2, fail_status=503)
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="fake-model", messages=messages)
        assert info.value.status_code == 503
    response = client.chat.completions.create(model="fake-model", messages=messages)
    assert response.choices[0].message.content == "ECHO: hi"
    assert len(fake.requests) == 3


def test_sleep_magic_times_out(fake: FakeUpstream) -> None:
    with openai.OpenAI(base_url=fake.url, api_key="k", max_retries=0, timeout=0.3) as sdk:
        with pytest.raises(openai.APITimeoutError):
            sdk.chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": "[[sleep:1.5]]"}]
            )


def test_stream_abort(client: openai.OpenAI) -> None:
    received: list[str] = []
    with pytest.raises((openai.APIConnectionError, httpx.HTTPError)):
        stream = client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": "a b c d e f [[stream-abort]]"}],
            stream=True,
        )
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "ECHO: "


def test_embeddings(fake: FakeUpstream, client: openai.OpenAI) -> None:
    single = client.embeddings.create(model="fake-embedding", input="User lives in Paris")
    assert len(single.data) == 1 and len(single.data[0].embedding) == 64
    assert single.data[0].embedding == pytest.approx(embed_text("User lives in Paris"), abs=1e-6)
    many = client.embeddings.create(
        model="fake-embedding",
        input=["I live in Paris", "Paris is where I live", "python"],
        encoding_format="float",
        dimensions=32,
    )
    assert [d.index for d in many.data] == [0, 1, 2]
    vectors = [d.embedding for d in many.data]
    assert all(len(v) == 32 for v in vectors)
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], vectors[2])
    assert many.usage.prompt_tokens > 0
    assert fake.requests_of("embeddings")[-1].body["dimensions"] == 32


def test_embed_fail_next(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.set_failures(embed_fail_next=1)
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model="fake-embedding", input="x")
    assert len(client.embeddings.create(model="fake-embedding", input="x").data) == 1


# ---------------------------------------------------------------------------------------------
# The scripted memory prompts
# ---------------------------------------------------------------------------------------------


def _extraction_messages(conversation: str) -> list[Any]:
    return [
        {"role": "system", "content": "You are memproxy's fact extractor. Answer with JSON."},
        {
            "role": "user",
            "content": "Exchange date: 2025-01-01\n<conversation>\n"
            + conversation
            + "\n</conversation>",
        },
    ]


def _facts_from(content: str) -> list[str]:
    text = content
    if "```" in text:
        text = text.split("```json", 1)[1].split("```", 1)[0]
    facts = json.loads(text)["facts"]
    assert isinstance(facts, list)
    return facts


def test_extraction_calls(fake: FakeUpstream, client: openai.OpenAI) -> None:
    messages = _extraction_messages(
        "user: Hi! I'm Alice and I moved to Lisbon.\nassistant: I live in the cloud.\nuser: ok"
    )
    contents = [
        client.chat.completions.create(model="fake-model", messages=messages)
        .choices[0]
        .message.content
        or ""
        for _ in range(3)
    ]
    assert all(_facts_from(c) == ["User is Alice", "User lives in Lisbon"] for c in contents)
    assert ["```" in c for c in contents] == [False, False, True]  # every 3rd is fenced
    assert [r.kind for r in fake.requests] == ["extract"] * 3

    fake.set_failures(invalid_json_next=1)
    prose = client.chat.completions.create(model="fake-model", messages=messages)
    assert "{" not in (prose.choices[0].message.content or "")
    again = client.chat.completions.create(model="fake-model", messages=messages)
    assert _facts_from(again.choices[0].message.content or "") == [
        "User is Alice",
        "User lives in Lisbon",
    ]


def test_extraction_magic(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="fake-model", messages=_extraction_messages("user: hi [[extract-fail:502]]")
        )
    # a normal chat ignores the extraction magic
    response = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "[[extract-fail:502]]"}]
    )
    assert response.choices[0].message.content == "ECHO: [[extract-fail:502]]"


def test_update_call(fake: FakeUpstream, client: openai.OpenAI) -> None:
    existing = [{"id": "0", "text": "User lives in Paris"}, {"id": "1", "text": "User likes tea"}]
    facts = ["User lives in Berlin", "User likes tea", "User plays chess", "X [[bogus-id]] y"]
    messages: list[Any] = [
        {"role": "system", "content": "You are memproxy's memory manager. JSON only."},
        {
            "role": "user",
            "content": f"<existing_memories>\n{json.dumps(existing)}\n</existing_memories>\n"
            f"<new_facts>\n{json.dumps(facts)}\n</new_facts>",
        },
    ]
    response = client.chat.completions.create(model="fake-model", messages=messages)
    memory = json.loads(response.choices[0].message.content or "")["memory"]
    assert [(m["id"], m["event"]) for m in memory] == [
        ("0", "UPDATE"),
        ("1", "NONE"),
        ("new", "ADD"),
        ("999", "UPDATE"),
    ]
    assert memory[0]["old_memory"] == "User lives in Paris"
    assert fake.requests[-1].kind == "update"


def test_memory_core_prompts_are_understood(client: openai.OpenAI) -> None:
    """The contract with memory_core.prompts: its real messages get scripted answers."""
    from memory_core.prompts import build_fact_extraction_messages, build_update_messages

    extraction: list[Any] = build_fact_extraction_messages(
        [
            {"role": "user", "content": "I'm Bob and I moved to Oslo. What's the weather?"},
            {"role": "assistant", "content": "It is cold. I like Oslo."},
        ],
        today="2025-01-01",
    )
    response = client.chat.completions.create(model="fake-model", messages=extraction)
    facts = _facts_from(response.choices[0].message.content or "")
    assert facts == ["User is Bob", "User lives in Oslo"]
    update: list[Any] = build_update_messages(facts, [("0", "User lives in Rome")])
    response = client.chat.completions.create(model="fake-model", messages=update)
    memory = json.loads(response.choices[0].message.content or "")["memory"]
    assert memory == [
        {"id": "new", "text": "User is Bob", "event": "ADD"},
        {
            "id": "0",
            "text": "User lives in Oslo",
            "event": "UPDATE",
            "old_memory": "User lives in Rome",
            "reason": "the new fact replaces the stored value",
        },
    ]


# ---------------------------------------------------------------------------------------------
# Control over HTTP, state, separate process
# ---------------------------------------------------------------------------------------------


def test_http_control_routes(fake: FakeUpstream, client: openai.OpenAI) -> None:
    with httpx.Client(base_url=fake.base_url) as http:
        control = http.post("/_control", json={"fail_next": 1, "fail_status": 502})
        assert control.status_code == 200
        assert control.json()["controls"]["fail_next"] == 1
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": "x"}]
            )
        client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "y"}]
        )
        recorded = http.get("/_requests").json()
        assert [r["body"]["messages"][0]["content"] for r in recorded] == ["x", "y"]
        assert http.get("/_requests", params={"kind": "extract"}).json() == []
        stats = http.get("/_stats").json()
        assert stats["counts"]["chat"] == 2 and stats["counts"]["injected_failures"] == 1
        assert http.post("/_control", json={"bogus": 1}).status_code == 400
        assert http.post("/_control", json={"reset": True, "delay_s": 0.0}).status_code == 200
        assert http.get("/_requests").json() == []


def test_delay_controls_apply_to_the_right_calls(fake: FakeUpstream) -> None:
    fake.set_failures(delay_s=0.05, extract_delay_s=0.2)
    assert fake.state.delay_for("chat") == pytest.approx(0.05)
    assert fake.state.delay_for("extract") == pytest.approx(0.25)
    fake.reset()
    assert fake.state.delay_for("update") == 0.0


def test_state_limits_recorded_requests() -> None:
    state = FakeState(max_recorded=0)
    with FakeUpstream(state) as fake:
        with openai.OpenAI(base_url=fake.url, api_key="k", max_retries=0) as sdk:
            sdk.models.list()
        assert fake.requests == []
        assert state.stats()["counts"]["models"] == 1


def test_invalid_requests(fake: FakeUpstream) -> None:
    with httpx.Client(base_url=fake.url) as http:
        assert http.post("/chat/completions", content=b"not json").status_code == 400
        assert (
            http.post("/chat/completions", json={"model": "m", "messages": []}).status_code == 400
        )
        missing_model = http.post(
            "/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
        )
        assert missing_model.status_code == 400
        assert missing_model.json()["error"]["param"] == "model"
        assert http.post("/embeddings", json={"input": 3}).status_code == 400


def test_separate_process() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_upstream", "--port", "0", "--delay", "0.01"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("FAKE_UPSTREAM_URL=http://127.0.0.1:")
        url = line.split("=", 1)[1]
        with openai.OpenAI(base_url=url, api_key="k", max_retries=0) as sdk:
            response = sdk.chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": "ping"}]
            )
        assert response.choices[0].message.content == "ECHO: ping"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
