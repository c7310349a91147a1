"""The new routes behind API keys: the anthropic SDK's ``x-api-key`` and the openai SDK's
``Authorization`` are the proxy's keys (checked before the body is read), never the provider's
credentials; errors in each API's shape; a key bound to a user wins over body claims."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from proxy.auth import hash_key
from tests.api_servers import ApiRig, api_rig
from tests.fake_anthropic import FAKE_ANTHROPIC_KEY

ALICE_KEY = "sk-proxy-alice"
TEAM_KEY = "sk-proxy-team"
ASK = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiRig]:
    keys = [
        {"name": "alice-app", "key_sha256": hash_key(ALICE_KEY), "users": ["alice"]},
        {"name": "team-app", "key_sha256": hash_key(TEAM_KEY), "users": ["*"]},
    ]
    with api_rig(Path(tmp_path_factory.mktemp("keys")), {"auth": {"keys": keys}}) as rig:
        yield rig


def claude(rig: ApiRig, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=rig.proxy.base_url, api_key=key, max_retries=0)


def test_anthropic_key_is_the_proxys_key_not_the_providers(rig: ApiRig) -> None:
    raw = claude(rig, ALICE_KEY).messages.with_raw_response.create(
        model="claude",
        max_tokens=20,
        messages=ASK,  # type: ignore[arg-type]
    )
    assert raw.headers["x-memory-status"] == "ok"  # the bound key names alice
    sent = rig.anthropic_state.snapshot("chat")[-1].headers
    assert sent["x-api-key"] == FAKE_ANTHROPIC_KEY
    assert ALICE_KEY not in str(sent)


def test_wrong_or_missing_key_is_401_in_each_shape(rig: ApiRig) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        claude(rig, "sk-wrong").messages.create(model="claude", max_tokens=5, messages=ASK)  # type: ignore[arg-type]
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid API key"},
    }
    client = openai.OpenAI(base_url=rig.proxy.url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.responses.create(model="fake-model", input="hi")
    bare = httpx.post(rig.proxy.base_url + "/v1/messages", json={})
    assert bare.status_code == 401 and bare.json()["error"]["type"] == "authentication_error"


def test_bound_key_refuses_another_users_claim(rig: ApiRig) -> None:
    with pytest.raises(anthropic.PermissionDeniedError):
        claude(rig, ALICE_KEY).messages.create(
            model="claude",
            max_tokens=5,
            messages=ASK,
            metadata={"user_id": "mallory"},  # type: ignore[arg-type]
        )
    client = openai.OpenAI(base_url=rig.proxy.url, api_key=ALICE_KEY, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        client.responses.create(model="fake-model", input="hi", safety_identifier="mallory")


def test_team_key_names_users_with_the_apis_own_fields(rig: ApiRig) -> None:
    raw = claude(rig, TEAM_KEY).messages.with_raw_response.create(
        model="claude",
        max_tokens=5,
        messages=ASK,
        metadata={"user_id": "carol"},  # type: ignore[arg-type]
    )
    assert raw.headers["x-memory-status"] == "ok"
    client = openai.OpenAI(base_url=rig.proxy.url, api_key=TEAM_KEY, max_retries=0)
    response = client.responses.with_raw_response.create(
        model="fake-model", input="hi", user="dave"
    )
    assert response.headers["x-memory-status"] == "ok"
    anonymous = client.responses.with_raw_response.create(model="fake-model", input="hi")
    assert anonymous.headers["x-memory-status"] == "no-user"


def test_oversized_body_is_413_in_anthropic_shape(rig: ApiRig) -> None:
    big = "x" * (17 * 1024 * 1024)
    response = httpx.post(
        rig.proxy.base_url + "/v1/messages",
        content=b'{"model": "claude", "pad": "' + big.encode() + b'"}',
        headers={"x-api-key": TEAM_KEY, "content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"
