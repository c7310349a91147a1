"""``POST /v1/messages`` end to end: the real ``anthropic`` SDK's ``messages.create`` and
``messages.stream`` against memproxy under a real uvicorn server, over the raw relay to an
Anthropic-shaped server (``claude``; ``lite-claude`` too, as Anthropic models are relayed raw
on this route) and LiteLLM's translation to an OpenAI-compatible server (``fake-model``,
``lite-model``)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from tests.api_servers import ApiRig, api_rig, new_user
from tests.fake_anthropic import FAKE_ANTHROPIC_KEY
from tests.servers import conversation_of, learn_state, wait_learned

SISTER = "I'm vegetarian and my sister lives in Lisbon"
MODELS = [("claude", "anthropic"), ("lite-claude", "anthropic"), ("fake-model", "litellm")]
IDS = ["raw", "raw-forced-litellm", "litellm-openai"]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiRig]:
    with api_rig(tmp_path_factory.mktemp("messages")) as rig:
        yield rig


@pytest.fixture(scope="module")
def client(rig: ApiRig) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=rig.proxy.base_url, api_key="sk-client", max_retries=0, timeout=30
    )


@pytest.fixture(scope="module")
def alice(rig: ApiRig, client: anthropic.Anthropic) -> str:
    """A user who told the proxy, over the Messages API, about her sister (identified by
    Anthropic's own ``metadata.user_id``)."""
    user = new_user("alice")
    before = learn_state(rig.proxy)
    extracts = len(rig.openai_fake.requests_of("extract"))
    raw = client.messages.with_raw_response.create(
        model="claude",
        max_tokens=100,
        messages=[{"role": "user", "content": SISTER}],
        metadata={"user_id": user},
    )
    assert raw.headers["x-memory-status"] == "ok"
    assert raw.parse().content[0].text == f"ECHO: {SISTER}"  # type: ignore[union-attr]
    wait_learned(rig.proxy, before)
    learned = rig.openai_fake.requests_of("extract")[extracts:]
    assert conversation_of(learned[0]) == [("user", SISTER), ("assistant", f"ECHO: {SISTER}")]
    return user


def text_of(message: Any) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


@pytest.mark.parametrize(("model", "kind"), MODELS, ids=IDS)
def test_recall_create(client: anthropic.Anthropic, alice: str, model: str, kind: str) -> None:
    raw = client.messages.with_raw_response.create(
        model=model,
        max_tokens=100,
        system="You are terse.",
        messages=[{"role": "user", "content": "Where does my sister live?"}],
        metadata={"user_id": alice},
    )
    assert raw.headers["x-memory-upstream"] == kind
    assert int(raw.headers["x-memory-recalled"]) >= 1
    message = raw.parse()
    assert text_of(message).startswith("ECHO: Where does my sister live? | MEMORIES: ")
    assert "User's sister lives in Lisbon" in text_of(message)
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0


@pytest.mark.parametrize(("model", "kind"), MODELS, ids=IDS)
def test_recall_stream(client: anthropic.Anthropic, alice: str, model: str, kind: str) -> None:
    with client.messages.stream(
        model=model,
        max_tokens=100,
        messages=[{"role": "user", "content": "Where does my sister live?"}],
        extra_headers={"x-user-id": alice},
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and "content_block_delta" in kinds
    assert kinds[-1] == "message_stop"
    assert "User's sister lives in Lisbon" in text_of(final)


def test_no_leak_to_another_user(client: anthropic.Anthropic, alice: str) -> None:
    raw = client.messages.with_raw_response.create(
        model="claude",
        max_tokens=50,
        messages=[{"role": "user", "content": "Where does my sister live?"}],
        metadata={"user_id": new_user("bob")},
    )
    assert raw.headers["x-memory-recalled"] == "0"
    assert text_of(raw.parse()) == "ECHO: Where does my sister live?"


def test_block_ends_the_last_user_turn_and_cached_prefix_is_untouched(
    rig: ApiRig, client: anthropic.Anthropic, alice: str
) -> None:
    """Tools, system and every block the client sent (``cache_control`` included) reach the
    provider byte-identical; the block is one more text block after the user's own."""
    ephemeral = {"type": "ephemeral"}
    tools: list[Any] = [
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {}},
            "cache_control": ephemeral,
        }
    ]
    system: list[Any] = [
        {"type": "text", "text": "Long stable rules ✓", "cache_control": ephemeral}
    ]
    earlier: list[Any] = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": [{"type": "text", "text": "hi!"}]},
    ]
    last = {
        "role": "user",
        "content": [
            {"type": "text", "text": "Where does my sister live?", "cache_control": ephemeral}
        ],
    }
    sent_by_client = copy.deepcopy([*earlier, last])
    client.messages.create(
        model="claude",
        max_tokens=100,
        tools=tools,
        system=system,
        messages=[*earlier, last],
        metadata={"user_id": alice},
    )
    sent = rig.anthropic_state.snapshot("chat")[-1].body
    assert orjson.dumps(sent["tools"]) == orjson.dumps(tools)
    assert orjson.dumps(sent["system"]) == orjson.dumps(system)
    messages = sent["messages"]
    assert [orjson.dumps(m) for m in messages[:2]] == [orjson.dumps(m) for m in earlier]
    blocks = messages[2]["content"]
    assert blocks[0] == sent_by_client[2]["content"][0]
    assert blocks[1]["type"] == "text" and blocks[1]["text"].startswith("<memories>")
    assert "cache_control" not in blocks[1]
    assert "User's sister lives in Lisbon" in blocks[1]["text"]
    assert sent["metadata"] == {"user_id": alice}


def test_opaque_metadata_user_id_is_no_claim(client: anthropic.Anthropic, alice: str) -> None:
    """Claude Code's metadata.user_id (a JSON string of device and session ids) is no
    memproxy id: it neither fails the request nor conflicts with the X-User-Id header."""
    claude_code = '{"device_id":"d3adb33f","account_uuid":"","session_id":"5e55-10n"}'
    raw = client.messages.with_raw_response.create(
        model="claude",
        max_tokens=50,
        messages=[{"role": "user", "content": "Where does my sister live?"}],
        metadata={"user_id": claude_code},
        extra_headers={"x-user-id": alice},
    )
    assert int(raw.headers["x-memory-recalled"]) >= 1
    assert "Lisbon" in text_of(raw.parse())


def test_provider_credentials_come_from_the_config(
    rig: ApiRig, client: anthropic.Anthropic
) -> None:
    client.messages.create(
        model="claude",
        max_tokens=10,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"anthropic-version": "2099-01-01", "anthropic-beta": "feature-x-2025"},
    )
    headers = rig.anthropic_state.snapshot("chat")[-1].headers
    assert headers["x-api-key"] == FAKE_ANTHROPIC_KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "feature-x-2025"
    assert "authorization" not in headers


def test_bad_anthropic_beta_is_400(rig: ApiRig) -> None:
    response = httpx.post(
        rig.proxy.base_url + "/v1/messages",
        json={"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        headers={"anthropic-beta": "a b; c=d\\evil"},
    )
    assert response.status_code == 400
    assert response.json()["type"] == "error"


@pytest.mark.parametrize("model", ["claude", "lite-claude", "fake-model"])
def test_upstream_error_keeps_status_in_anthropic_shape(
    client: anthropic.Anthropic, model: str
) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(
            model=model, max_tokens=10, messages=[{"role": "user", "content": "[[fail:429]]"}]
        )
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        (
            {"model": "claude", "messages": [{"role": "user", "content": "x"}]},
            400,
            "invalid_request_error",
        ),
        ({"model": "claude", "max_tokens": 5, "messages": []}, 400, "invalid_request_error"),
        (
            {"model": "claude", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]},
            400,
            "invalid_request_error",
        ),
        (
            {
                "model": "claude",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "text"}]}],
            },
            400,
            "invalid_request_error",
        ),
        (
            {
                "model": "claude",
                "max_tokens": 5,
                "system": 3,
                "messages": [{"role": "user", "content": "x"}],
            },
            400,
            "invalid_request_error",
        ),
        (
            {
                "model": "claude",
                "max_tokens": 5,
                "api_key": "k",
                "messages": [{"role": "user", "content": "x"}],
            },
            400,
            "invalid_request_error",
        ),
        (
            {"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            404,
            "not_found_error",
        ),
    ],
)
def test_bad_requests_in_anthropic_shape(rig: ApiRig, body: Any, status: int, kind: str) -> None:
    response = httpx.post(rig.proxy.base_url + "/v1/messages", json=body)
    assert response.status_code == status
    payload = response.json()
    assert payload["type"] == "error" and payload["error"]["type"] == kind
    assert set(payload["error"]) == {"type", "message"}


def test_models_list_in_anthropic_shape(client: anthropic.Anthropic, rig: ApiRig) -> None:
    names = [model.id for model in client.models.list()]
    assert names == ["fake-model", "lite-model", "claude", "lite-claude", "gemini"]
    openai_shape = httpx.get(rig.proxy.url + "/models").json()
    assert openai_shape["object"] == "list"


def test_memory_modes_and_headers_match_chat(client: anthropic.Anthropic, alice: str) -> None:
    raw = client.messages.with_raw_response.create(
        model="claude",
        max_tokens=50,
        messages=[{"role": "user", "content": "Where does my sister live?"}],
        metadata={"user_id": alice},
        extra_headers={"x-memory-mode": "off"},
    )
    assert raw.headers["x-memory-mode"] == "off"
    assert raw.headers["x-memory-status"] == "off"
    assert raw.headers["x-memory-recall"] == "none"
    assert "server-timing" in raw.headers
    assert text_of(raw.parse()) == "ECHO: Where does my sister live?"
