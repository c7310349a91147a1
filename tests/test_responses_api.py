"""``POST /v1/responses`` end to end: the real ``openai`` SDK's ``responses.create`` (and
``responses.stream``) against memproxy under a real uvicorn server, over the raw relay
(``fake-model``), LiteLLM to an OpenAI-compatible server (``lite-model``) and LiteLLM's
translation to Anthropic (``lite-claude``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.api_servers import ApiRig, api_rig, new_user
from tests.servers import conversation_of, learn_state, wait_learned

SISTER = "I'm vegetarian and my sister lives in Lisbon"
MODELS = [("fake-model", "passthrough"), ("lite-model", "litellm"), ("lite-claude", "litellm")]
IDS = ["raw", "litellm", "litellm-anthropic"]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiRig]:
    with api_rig(tmp_path_factory.mktemp("responses")) as rig:
        yield rig


@pytest.fixture(scope="module")
def client(rig: ApiRig) -> openai.OpenAI:
    return openai.OpenAI(base_url=rig.proxy.url, api_key="sk-client", max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def alice(rig: ApiRig, client: openai.OpenAI) -> str:
    """A user who told the proxy, over the Responses API, about her sister."""
    user = new_user("alice")
    before = learn_state(rig.proxy)
    extracts = len(rig.openai_fake.requests_of("extract"))
    raw = client.responses.with_raw_response.create(
        model="fake-model", input=SISTER, extra_body={"user_id": user}
    )
    assert raw.headers["x-memory-status"] == "ok"
    assert raw.parse().output_text == f"ECHO: {SISTER}"
    wait_learned(rig.proxy, before)
    learned = rig.openai_fake.requests_of("extract")[extracts:]
    assert conversation_of(learned[0]) == [("user", SISTER), ("assistant", f"ECHO: {SISTER}")]
    return user


@pytest.mark.parametrize(("model", "kind"), MODELS, ids=IDS)
def test_recall_non_stream(client: openai.OpenAI, alice: str, model: str, kind: str) -> None:
    raw = client.responses.with_raw_response.create(
        model=model, input="Where does my sister live?", user=alice
    )
    assert raw.headers["x-memory-upstream"] == kind
    assert raw.headers["x-memory-recall"] == "search"
    assert int(raw.headers["x-memory-recalled"]) >= 1
    response = raw.parse()
    assert response.output_text.startswith("ECHO: Where does my sister live? | MEMORIES: ")
    assert "User's sister lives in Lisbon" in response.output_text
    assert response.status == "completed"
    assert response.usage is not None and response.usage.total_tokens > 0


@pytest.mark.parametrize(("model", "kind"), MODELS, ids=IDS)
def test_recall_stream_typed_events(
    client: openai.OpenAI, alice: str, model: str, kind: str
) -> None:
    with client.responses.stream(
        model=model, input="Where does my sister live?", extra_body={"user_id": alice}
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_response()
    assert events[0] == "response.created"
    assert "response.output_text.delta" in events
    assert events[-1] == "response.completed"
    assert "User's sister lives in Lisbon" in final.output_text


def test_no_leak_to_another_user(client: openai.OpenAI, alice: str) -> None:
    raw = client.responses.with_raw_response.create(
        model="fake-model", input="Where does my sister live?", safety_identifier=new_user("bob")
    )
    assert raw.headers["x-memory-recalled"] == "0"
    assert raw.parse().output_text == "ECHO: Where does my sister live?"


def test_block_is_an_item_before_the_last_user_item(
    rig: ApiRig, client: openai.OpenAI, alice: str
) -> None:
    earlier: list[Any] = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi ✓"}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "hello!", "annotations": []}],
        },
    ]
    last = {"role": "user", "content": "Where does my sister live?"}
    client.responses.create(
        model="fake-model",
        instructions="You are terse.",
        input=[*earlier, last],
        store=False,
        previous_response_id="resp_earlier_1",
        extra_body={"user_id": alice},
    )
    sent = rig.openai_fake.requests_of("chat")[-1].body
    assert sent["instructions"] == "You are terse."
    assert sent["store"] is False and sent["previous_response_id"] == "resp_earlier_1"
    assert "user_id" not in sent
    items = sent["input"]
    assert [orjson.dumps(i) for i in items[:2]] == [orjson.dumps(i) for i in earlier]
    assert items[2]["role"] == "system" and items[2]["content"].startswith("<memories>")
    assert "User's sister lives in Lisbon" in items[2]["content"]
    assert items[3] == last


def test_string_input_becomes_one_user_item_after_the_block(
    rig: ApiRig, client: openai.OpenAI, alice: str
) -> None:
    client.responses.create(model="fake-model", input="And my sister?", user=alice)
    items = rig.openai_fake.requests_of("chat")[-1].body["input"]
    assert [item["role"] for item in items] == ["system", "user"]
    assert items[1] == {"type": "message", "role": "user", "content": "And my sister?"}


def test_two_users_named_is_403(client: openai.OpenAI) -> None:
    with pytest.raises(openai.PermissionDeniedError):
        client.responses.create(
            model="fake-model", input="hi", user="carol", safety_identifier="dave"
        )


@pytest.mark.parametrize("model", ["fake-model", "lite-model"])
def test_upstream_error_keeps_status_in_openai_shape(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.responses.create(model=model, input="please [[fail:429]]")
    assert caught.value.status_code == 429
    body = caught.value.body
    assert isinstance(body, dict) and "message" in body


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "fake-model", "input": 5}, "input"),
        ({"model": "fake-model", "input": [3]}, "input[0]"),
        ({"model": "fake-model", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "fake-model", "input": "x", "instructions": ["a"]}, "instructions"),
        ({"model": "fake-model", "input": "x", "api_base": "http://evil"}, "api_base"),
        ({"input": "x"}, "model"),
    ],
)
def test_bad_requests_are_400_in_openai_shape(rig: ApiRig, body: Any, param: str) -> None:
    response = httpx.post(rig.proxy.url + "/responses", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_litellm_path_refuses_fields_that_are_not_responses_parameters(rig: ApiRig) -> None:
    body = {"model": "lite-model", "input": "x", "messages": []}
    response = httpx.post(rig.proxy.url + "/responses", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_parameter"
