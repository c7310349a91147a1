"""End to end: the real ``openai`` SDK against memproxy under a real uvicorn server, with the
fake OpenAI-compatible upstream behind it (DESIGN.md §2 and §5).

One fake upstream and one proxy server are started per module. Every scenario that talks to
the provider runs over both upstream implementations: the raw passthrough relay
(``fake-model``) and LiteLLM (``lite-model``, ``upstream: litellm``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import orjson
import pytest

from memory_core import AsyncMemory, MemoryConfig
from proxy import Settings, create_app
from tests.fake_upstream import FakeUpstream, create_fake_app, fake_deployment
from tests.servers import (
    ServerThread,
    conversation_of,
    learn_state,
    settled_state,
    wait_learned,
)

MODELS = [("fake-model", "passthrough"), ("lite-model", "litellm")]
MODEL_IDS = ["passthrough", "litellm"]
SISTER = "I'm vegetarian and my sister lives in Lisbon"


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------


class StreamWatch:
    """ASGI wrapper around a fake upstream: records, per chat request, whether the client
    (the proxy) disconnected and whether the response body was sent to the end."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.records: list[dict[str, bool]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            await self.app(scope, receive, send)
            return
        record = {"disconnected": False, "completed": False}
        self.records.append(record)

        async def watched_receive() -> Any:
            message = await receive()
            if message["type"] == "http.disconnect":
                record["disconnected"] = True
            return message

        async def watched_send(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                record["completed"] = True
            await send(message)

        await self.app(scope, watched_receive, watched_send)


def deployment(name: str, api_base: str, upstream: str = "auto", **params: Any) -> dict[str, Any]:
    entry = fake_deployment(api_base, name)
    entry["litellm_params"].update(params)
    return {
        **entry,
        "upstream": upstream,
        # The fake's stream controls are no OpenAI parameters: the LiteLLM path needs them listed.
        "client_params": ["fake_chunks", "fake_chunk_delay_s"],
    }


def proxy_settings(fake_url: str, watch_url: str, storage: Path, **memory: Any) -> Settings:
    return Settings.from_dict(
        {
            "model_list": [
                deployment("fake-model", fake_url),
                deployment("lite-model", fake_url, "litellm"),
                deployment("slow-fake-model", fake_url, timeout=1),
                deployment("slow-lite-model", fake_url, "litellm", timeout=1),
                deployment("watch-model", watch_url),
                deployment("watch-lite-model", watch_url, "litellm"),
            ],
            "memory": {
                "storage_uri": str(storage),
                "extraction_model": "fake-model",
                "queue": {"backoff_base_s": 0.05, "shutdown_grace_s": 1},
                **memory,
            },
        }
    )


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def watch() -> Iterator[tuple[StreamWatch, ServerThread]]:
    """A second fake upstream whose connections we watch (client-disconnect tests only)."""
    app = StreamWatch(create_fake_app())
    with ServerThread(app) as server:
        yield app, server


@pytest.fixture(scope="module")
def srv(
    fake: FakeUpstream, watch: tuple[StreamWatch, ServerThread], tmp_path_factory: Any
) -> Iterator[ServerThread]:
    storage = tmp_path_factory.mktemp("proxy-e2e")
    with ServerThread(create_app(proxy_settings(fake.url, watch[1].url, storage))) as server:
        yield server


@pytest.fixture(scope="module")
def client(srv: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url, api_key="sk-x", max_retries=0, timeout=20)


def new_user(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def assert_not_learned(
    srv: ServerThread, client: openai.OpenAI, fake: FakeUpstream, user: str, before: Any
) -> None:
    """Prove a request learned nothing: a control exchange of the same user is learned, and
    it is the only thing learned since ``before`` (the state taken before the request)."""
    extracts = len(fake.requests_of("extract"))
    control = f"My control number is {uuid.uuid4().int % 10_000}"
    chat(client, "fake-model", control, user=user)
    after = wait_learned(srv, before, jobs=1)
    assert after["enqueued"] == before["enqueued"] + 1
    new = fake.requests_of("extract")[extracts:]
    assert len(new) == 1
    assert conversation_of(new[0])[0] == ("user", control)


def chat(
    client: openai.OpenAI,
    model: str,
    text: str,
    *,
    user: str | None = None,
    messages: list[dict[str, Any]] | None = None,
    extra_body: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    body = dict(extra_body or {})
    if user is not None:
        body["user_id"] = user
    return client.chat.completions.with_raw_response.create(
        model=model,
        messages=messages or [{"role": "user", "content": text}],
        extra_body=body or None,
        **kwargs,
    )


def assert_error_shape(payload: Any, type_: str | None = None) -> dict[str, Any]:
    assert set(payload) == {"error"}
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if type_ is not None:
        assert error["type"] == type_
    return dict(error)


@pytest.fixture(scope="module")
def alice(srv: ServerThread, client: openai.OpenAI, fake: FakeUpstream) -> dict[str, Any]:
    """A user who told the proxy about her sister; returns her id and that first exchange."""
    user = new_user("alice")
    before = learn_state(srv)
    raw = chat(client, "fake-model", SISTER, user=user)
    assert raw.headers["x-memory-status"] == "ok"
    assert raw.headers["x-memory-recalled"] == "0"
    wait_learned(srv, before)
    return {"user": user, "reply": raw.parse().choices[0].message.content}


# ---------------------------------------------------------------------------------------------
# The provider round trip, over both upstream implementations
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "kind"), MODELS, ids=MODEL_IDS)
def test_non_stream(client: openai.OpenAI, model: str, kind: str) -> None:
    raw = chat(client, model, "hello there")
    completion = raw.parse()
    assert completion.choices[0].message.content == "ECHO: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == model
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert raw.headers["x-memory-upstream"] == kind
    assert raw.headers["x-memory-status"] == "no-user"
    assert raw.headers["x-memory-recalled"] == "0"
    assert float(raw.headers["x-memory-overhead-ms"]) >= 0


@pytest.mark.parametrize(("model", "kind"), MODELS, ids=MODEL_IDS)
def test_stream_reassembles_and_sends_usage(client: openai.OpenAI, model: str, kind: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "tell me a streamed story"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-memory-upstream"] == kind
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "ECHO: tell me a streamed story"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert usage_chunks, "the include_usage chunk did not arrive"
    assert usage_chunks[-1].usage.total_tokens > 0
    assert not chunks[-1].choices  # the usage chunk is last and has no choices


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
    },
}


@pytest.mark.parametrize(("model", "kind"), MODELS, ids=MODEL_IDS)
def test_tool_calls_and_tool_result_turn(client: openai.OpenAI, model: str, kind: str) -> None:
    question = {"role": "user", "content": "please call tool get_weather for Paris"}
    raw = chat(client, model, "", messages=[question], tools=[WEATHER_TOOL])
    assert raw.headers["x-memory-upstream"] == kind
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"x": 1}

    turn = [
        question,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
    ]
    result = chat(client, model, "", messages=turn, tools=[WEATHER_TOOL]).parse()
    assert result.choices[0].message.content == "TOOL RESULT: sunny, 21C"


@pytest.mark.parametrize(("model", "kind"), MODELS, ids=MODEL_IDS)
def test_tool_calls_stream(client: openai.OpenAI, model: str, kind: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "call tool now"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    assert raw.headers["x-memory-upstream"] == kind
    name, arguments, finish = "", "", None
    for chunk in raw.parse():
        if not chunk.choices:
            continue
        for delta in chunk.choices[0].delta.tool_calls or []:
            if delta.function and delta.function.name:
                name += delta.function.name
            if delta.function and delta.function.arguments:
                arguments += delta.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert name == "get_weather"
    assert json.loads(arguments) == {"x": 1}
    assert finish == "tool_calls"


@pytest.mark.parametrize(("model", "kind"), MODELS, ids=MODEL_IDS)
def test_json_mode_passes_through(
    client: openai.OpenAI, fake: FakeUpstream, model: str, kind: str
) -> None:
    completion = chat(
        client, model, "give me json", response_format={"type": "json_object"}
    ).parse()
    assert json.loads(completion.choices[0].message.content) == {"echo": "give me json"}
    assert fake.requests_of("chat")[-1].body["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(("model", "kind"), MODELS, ids=MODEL_IDS)
def test_n_two_choices(client: openai.OpenAI, model: str, kind: str) -> None:
    completion = chat(client, model, "two please", n=2).parse()
    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.message.content == "ECHO: two please" for c in completion.choices)


@pytest.mark.parametrize(("model", "kind"), MODELS, ids=MODEL_IDS)
def test_upstream_500_is_relayed(client: openai.OpenAI, model: str, kind: str) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        chat(client, model, "break [[fail:500]]")
    assert caught.value.status_code == 500
    assert caught.value.response.headers["x-memory-upstream"] == kind
    error = assert_error_shape(caught.value.response.json())
    assert "500" in error["message"] or error["code"] == "500"


@pytest.mark.parametrize(("model", "kind"), MODELS, ids=MODEL_IDS)
def test_upstream_timeout_is_504(client: openai.OpenAI, model: str, kind: str) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        chat(client, f"slow-{model}", "wait [[sleep:3]]")
    elapsed = time.monotonic() - started
    assert caught.value.status_code == 504
    assert_error_shape(caught.value.response.json())
    assert elapsed < 2.9, f"the 1 s deployment timeout was not applied ({elapsed:.1f}s)"


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        chat(client, "no-such-model", "hi")
    error = assert_error_shape(caught.value.response.json(), "not_found_error")
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"


# ---------------------------------------------------------------------------------------------
# Memory: learn, recall, isolation, modes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "kind"), MODELS, ids=MODEL_IDS)
def test_learned_fact_is_recalled(
    client: openai.OpenAI, alice: dict[str, Any], model: str, kind: str
) -> None:
    raw = chat(client, model, "Where does my sister live?", user=alice["user"])
    assert raw.headers["x-memory-status"] == "ok"
    assert int(raw.headers["x-memory-recalled"]) >= 1
    content = raw.parse().choices[0].message.content
    assert content.startswith("ECHO: Where does my sister live? | MEMORIES: ")
    assert "User's sister lives in Lisbon" in content


def test_small_talk_recalls_nothing(client: openai.OpenAI, alice: dict[str, Any]) -> None:
    for text in ("ok", "Thanks!", "and?"):
        raw = chat(client, "fake-model", text, user=alice["user"])
        assert raw.headers["x-memory-status"] == "ok"
        assert raw.headers["x-memory-recalled"] == "0"
        assert raw.parse().choices[0].message.content == f"ECHO: {text}"
    raw = chat(client, "fake-model", "and my sister?", user=alice["user"])
    assert int(raw.headers["x-memory-recalled"]) >= 1


def test_memories_do_not_leak_to_another_user(client: openai.OpenAI, alice: dict[str, Any]) -> None:
    raw = chat(client, "fake-model", "Where does my sister live?", user=new_user("bob"))
    assert raw.headers["x-memory-status"] == "ok"
    assert raw.headers["x-memory-recalled"] == "0"
    content = raw.parse().choices[0].message.content
    assert content == "ECHO: Where does my sister live?"


def test_identity_from_header_and_openai_user_field(
    client: openai.OpenAI, alice: dict[str, Any]
) -> None:
    question = [{"role": "user", "content": "Where does my sister live?"}]
    by_header = client.chat.completions.with_raw_response.create(
        model="fake-model", messages=question, extra_headers={"X-User-Id": alice["user"]}
    )
    by_user = client.chat.completions.with_raw_response.create(
        model="fake-model", messages=question, user=alice["user"]
    )
    for raw in (by_header, by_user):
        assert int(raw.headers["x-memory-recalled"]) >= 1
        assert "Lisbon" in raw.parse().choices[0].message.content


READ_ONLY_WAYS = {
    "body-memory-mode-read": ({"memory": {"mode": "read"}}, {}, True),
    "header-mode-read": ({}, {"X-Memory-Mode": "read"}, True),
    "openwebui-temporary-chat": ({}, {"X-OpenWebUI-Chat-Id": "local:abc123"}, True),
    "openwebui-background-task": ({}, {}, False),
}


@pytest.mark.parametrize("way", list(READ_ONLY_WAYS))
def test_read_only_requests_learn_nothing(
    srv: ServerThread,
    client: openai.OpenAI,
    fake: FakeUpstream,
    alice: dict[str, Any],
    way: str,
) -> None:
    body, headers, recalls = READ_ONLY_WAYS[way]
    text = "My favourite colour is teal. Where does my sister live?"
    if way == "openwebui-background-task":
        text = "### Task:\nGenerate a title for: my favourite colour is teal, sister in Lisbon"
    before = settled_state(srv)
    extracts = len(fake.requests_of("extract"))
    raw = client.chat.completions.with_raw_response.create(
        model="fake-model",
        messages=[{"role": "user", "content": text}],
        extra_body={"user_id": alice["user"], **body},
        extra_headers=headers,
    )
    assert raw.headers["x-memory-status"] == "ok"
    if recalls:  # read mode still recalls; background tasks do not by default
        assert int(raw.headers["x-memory-recalled"]) >= 1
        assert "Lisbon" in raw.parse().choices[0].message.content
    assert_not_learned(srv, client, fake, alice["user"], before)
    assert not any("teal" in str(r.body) for r in fake.requests_of("extract")[extracts:])


@pytest.mark.parametrize("how", ["body", "header", "body-false"])
def test_mode_off_touches_no_memory(
    srv: ServerThread,
    client: openai.OpenAI,
    fake: FakeUpstream,
    alice: dict[str, Any],
    how: str,
) -> None:
    extra: dict[str, Any] = {"user_id": alice["user"]}
    headers: dict[str, str] = {}
    if how == "body":
        extra["memory"] = {"mode": "off"}
    elif how == "body-false":
        extra["memory"] = False
    else:
        headers["X-Memory-Mode"] = "off"
    before = settled_state(srv)
    raw = client.chat.completions.with_raw_response.create(
        model="fake-model",
        messages=[{"role": "user", "content": "My car is a green Volvo. Where is my sister?"}],
        extra_body=extra,
        extra_headers=headers,
    )
    assert raw.headers["x-memory-status"] == "off"
    assert raw.headers["x-memory-recalled"] == "0"
    assert "MEMORIES" not in raw.parse().choices[0].message.content
    sent = fake.requests_of("chat")[-1]
    assert all("<memories>" not in str(m.get("content")) for m in sent.messages)
    assert "memory" not in sent.body and "user_id" not in sent.body
    assert_not_learned(srv, client, fake, alice["user"], before)


def test_no_identity_is_plain_passthrough(
    srv: ServerThread, client: openai.OpenAI, fake: FakeUpstream
) -> None:
    before = learn_state(srv)
    messages = [{"role": "user", "content": "I'm vegetarian and my sister lives in Lisbon"}]
    raw = chat(client, "fake-model", "", messages=messages)
    assert raw.headers["x-memory-status"] == "no-user"
    assert raw.headers["x-memory-recalled"] == "0"
    assert fake.requests_of("chat")[-1].messages == messages
    assert_not_learned(srv, client, fake, new_user("anon-control"), before)


def test_block_goes_right_before_last_user_and_prefix_is_untouched(
    client: openai.OpenAI, fake: FakeUpstream, alice: dict[str, Any]
) -> None:
    prefix = [
        {"role": "system", "content": "You are terse. Ünïcode stays intact ✓"},
        {"role": "user", "content": [{"type": "text", "text": "hello there"}]},
        {"role": "assistant", "content": "hi!"},
    ]
    last = {"role": "user", "content": "Where does my sister live?"}
    raw = chat(client, "fake-model", "", messages=[*prefix, last], user=alice["user"])
    assert int(raw.headers["x-memory-recalled"]) >= 1
    sent = fake.requests_of("chat")[-1].messages
    assert len(sent) == len(prefix) + 2
    assert [orjson.dumps(m) for m in sent[: len(prefix)]] == [orjson.dumps(m) for m in prefix]
    block = sent[len(prefix)]
    assert block["role"] == "system"
    assert block["content"].startswith("<memories>")
    assert block["content"].endswith("</memories>")
    assert "User's sister lives in Lisbon" in block["content"]
    assert sent[-1] == last


def test_proxy_fields_stripped_and_unknown_fields_pass_through(
    client: openai.OpenAI, fake: FakeUpstream
) -> None:
    raw = chat(
        client,
        "fake-model",
        "fields please",
        user=new_user("carol"),
        extra_body={
            "agent_id": "agent-1",
            "run_id": "run-1",
            "memory": {"mode": "read"},
            "custom_vendor_flag": {"keep": [1, 2]},
            "metadata": {"trace": "t-1"},
        },
        temperature=0.25,
    )
    assert raw.headers["x-memory-status"] == "ok"
    body = fake.requests_of("chat")[-1].body
    for ours in ("user_id", "agent_id", "run_id", "memory"):
        assert ours not in body
    assert body["custom_vendor_flag"] == {"keep": [1, 2]}
    assert body["metadata"] == {"trace": "t-1"}
    assert body["temperature"] == 0.25
    assert body["model"] == "fake-model"


def test_resent_history_is_not_relearned(
    srv: ServerThread, client: openai.OpenAI, fake: FakeUpstream, alice: dict[str, Any]
) -> None:
    before = learn_state(srv)
    new_turn = "My brother lives in Porto"
    messages = [
        {"role": "system", "content": "Be nice."},
        {"role": "user", "content": SISTER},
        {"role": "assistant", "content": alice["reply"]},
        {"role": "user", "content": new_turn},
    ]
    raw = chat(client, "fake-model", "", messages=messages, user=alice["user"])
    reply = raw.parse().choices[0].message.content
    wait_learned(srv, before)
    conversation = conversation_of(fake.requests_of("extract")[-1])
    assert conversation == [("user", new_turn), ("assistant", reply)]
    rendered = str(fake.requests_of("extract")[-1].messages[-1]["content"])
    assert SISTER not in rendered and "<memories>" not in rendered


@pytest.mark.parametrize(("model", "kind"), MODELS, ids=MODEL_IDS)
def test_streamed_reply_is_reassembled_for_learning(
    srv: ServerThread, client: openai.OpenAI, fake: FakeUpstream, model: str, kind: str
) -> None:
    user = new_user("dave")
    text = "My dog is called Rex and I work as a baker"
    before = learn_state(srv)
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": text}],
        stream=True,
        extra_body={"user_id": user},
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == f"ECHO: {text}"
    wait_learned(srv, before)
    assert conversation_of(fake.requests_of("extract")[-1]) == [
        ("user", text),
        ("assistant", streamed),
    ]


@pytest.mark.parametrize(("model", "kind"), MODELS, ids=MODEL_IDS)
def test_aborted_stream_learns_nothing(
    srv: ServerThread, client: openai.OpenAI, fake: FakeUpstream, model: str, kind: str
) -> None:
    user = new_user("erin")
    before = learn_state(srv)
    received: list[str] = []
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "I own a red bike [[stream-abort]]"}],
            stream=True,
            extra_body={"user_id": user},
        )
        for chunk in stream:
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) != "ECHO: I own a red bike [[stream-abort]]"
    assert_not_learned(srv, client, fake, user, before)


def established_to(port: int) -> int:
    """Open TCP connections (any process in this namespace) whose remote port is ``port``."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01":
                count += 1
    return count


@pytest.mark.parametrize("model", ["watch-model", "watch-lite-model"], ids=MODEL_IDS)
def test_client_disconnect_mid_stream_closes_upstream(
    srv: ServerThread,
    client: openai.OpenAI,
    fake: FakeUpstream,
    watch: tuple[StreamWatch, ServerThread],
    model: str,
) -> None:
    app, watch_server = watch
    user = new_user("frank")
    before = learn_state(srv)
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "I collect stamps from Peru " * 4}],
        "stream": True,
        "user_id": user,
        "fake_chunks": 40,
        "fake_chunk_delay_s": 0.1,
    }
    records = len(app.records)
    with httpx.Client(timeout=10) as http:
        with http.stream("POST", srv.url + "/chat/completions", json=body) as response:
            assert response.status_code == 200
            first = next(response.iter_bytes())
            assert first.startswith(b"data: ")
    # The whole stream would take 4 s; the proxy must drop the upstream stream well before.
    deadline = time.monotonic() + 2.5
    record = app.records[records]
    while time.monotonic() < deadline and not record["disconnected"]:
        time.sleep(0.05)
    assert record["disconnected"], "the upstream never saw the proxy disconnect"
    assert not record["completed"], "the upstream stream was read to the end"
    assert established_to(watch_server.port) == 0
    assert_not_learned(srv, client, fake, user, before)


# ---------------------------------------------------------------------------------------------
# Degraded memory: chat still works
# ---------------------------------------------------------------------------------------------


class BrokenEmbedder:
    dimension = 16

    def __init__(self) -> None:
        self.calls = 0

    async def embed(self, texts: Any, *, purpose: str = "passage") -> np.ndarray:
        self.calls += 1
        raise RuntimeError("embedding service is down")


def test_memory_failure_degrades_to_passthrough(
    fake: FakeUpstream, watch: tuple[StreamWatch, ServerThread], tmp_path: Path
) -> None:
    settings = proxy_settings(
        fake.url,
        watch[1].url,
        tmp_path,
        queue={"backoff_base_s": 0.05, "max_attempts": 1, "shutdown_grace_s": 0.5},
    )
    embedder = BrokenEmbedder()
    memory = AsyncMemory(MemoryConfig(storage_uri=str(tmp_path)), embedder=embedder)  # type: ignore[arg-type]
    with ServerThread(create_app(settings, memory=memory)) as server:
        broken = openai.OpenAI(base_url=server.url, api_key="sk-x", max_retries=0)
        for model, kind in MODELS:
            raw = chat(broken, model, "Where does my sister live?", user="alice")
            assert raw.status_code == 200
            assert raw.headers["x-memory-status"] == "degraded"
            assert raw.headers["x-memory-recalled"] == "0"
            assert raw.headers["x-memory-upstream"] == kind
            assert raw.parse().choices[0].message.content == "ECHO: Where does my sister live?"
        stream = broken.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": "still streaming?"}],
            stream=True,
            extra_body={"user_id": "alice"},
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
            "ECHO: still streaming?"
        )
    assert embedder.calls >= 3


# ---------------------------------------------------------------------------------------------
# Bad requests, endpoints, routes
# ---------------------------------------------------------------------------------------------

GOOD = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
BAD_REQUESTS: dict[str, tuple[bytes, dict[str, str]]] = {
    "invalid-json": (b'{"model": "fake-model", "messages": [', {}),
    "not-an-object": (b"[1, 2, 3]", {}),
    "missing-model": (orjson.dumps({"messages": GOOD["messages"]}), {}),
    "missing-messages": (orjson.dumps({"model": "fake-model"}), {}),
    "empty-messages": (orjson.dumps({"model": "fake-model", "messages": []}), {}),
    "message-without-role": (orjson.dumps({"model": "fake-model", "messages": [{"x": 1}]}), {}),
    "sql-user-id": (orjson.dumps({**GOOD, "user_id": "a' OR 1=1"}), {}),
    "long-user-id": (orjson.dumps({**GOOD, "user_id": "u" * 200}), {}),
    "unicode-user-id": (orjson.dumps({**GOOD, "user_id": "jürgen"}), {}),
    "non-string-user-id": (orjson.dumps({**GOOD, "user_id": 42}), {}),
    "sql-user-header": (orjson.dumps(GOOD), {"X-User-Id": "x' OR '1'='1"}),
    "sql-openai-user": (orjson.dumps({**GOOD, "user": "a;DROP TABLE memories"}), {}),
    "bad-agent-id": (orjson.dumps({**GOOD, "user_id": "ok", "agent_id": "a b"}), {}),
    "bad-memory-mode": (orjson.dumps({**GOOD, "memory": {"mode": "sometimes"}}), {}),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_is_400_in_openai_shape(
    srv: ServerThread, fake: FakeUpstream, case: str
) -> None:
    content, headers = BAD_REQUESTS[case]
    chats = len(fake.requests_of("chat"))
    response = httpx.post(
        srv.url + "/chat/completions",
        content=content,
        headers={"content-type": "application/json", **headers},
    )
    assert response.status_code == 400, response.text
    assert_error_shape(response.json(), "invalid_request_error")
    assert len(fake.requests_of("chat")) == chats, "a rejected request reached the upstream"


def test_bad_request_through_the_sdk(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, "fake-model", "hi", user="a' OR 1=1")
    assert_error_shape(caught.value.response.json(), "invalid_request_error")


def test_model_listing_and_service_endpoints(srv: ServerThread, client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert {"fake-model", "lite-model", "watch-model"} <= set(ids)
    plain = httpx.get(srv.base_url + "/models").json()
    assert plain["object"] == "list"
    assert [m["id"] for m in plain["data"]] == ids

    assert httpx.get(srv.base_url + "/health").json() == {"status": "ok"}
    ready = httpx.get(srv.base_url + "/ready")
    assert ready.status_code == 200
    payload = ready.json()
    assert payload["status"] == "ready" and payload["store"] is True
    assert {"pending", "leased", "dead"} <= set(payload["queue"])

    chat(client, "fake-model", "count me")
    metrics = httpx.get(srv.base_url + "/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    counted = [
        line
        for line in metrics.text.splitlines()
        if line.startswith("memproxy_requests_total{")
        and 'memory_status="no-user"' in line
        and 'status="200"' in line
        and 'upstream="passthrough"' in line
    ]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 1
    assert "memproxy_queue_pending" in metrics.text


def test_routes_without_v1_prefix(srv: ServerThread) -> None:
    response = httpx.post(srv.base_url + "/chat/completions", json=GOOD)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "ECHO: hi"
    bare = openai.OpenAI(base_url=srv.base_url, api_key="sk-x", max_retries=0)
    completion = bare.chat.completions.create(**GOOD)  # type: ignore[call-overload]
    assert completion.choices[0].message.content == "ECHO: hi"
    assert response.headers["x-memory-upstream"] == "passthrough"
