"""Memory modes and diagnostics headers behave the same on all three API routes: X-Memory-Mode
(off / read / write), Open WebUI's temporary chats (recall, never learn), chat-UI background
tasks (neither, ``x-memory-task``), and the same ``x-memory-*`` and ``Server-Timing`` headers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api_servers import ApiRig, api_rig, new_user
from tests.servers import learn_state, wait_learned

SISTER = "I'm vegetarian and my sister lives in Lisbon"
APIS = ["chat", "responses", "messages"]
DIAGNOSTICS = (
    "x-memory-status",
    "x-memory-recalled",
    "x-memory-recall",
    "x-memory-overhead-ms",
    "x-memory-mode",
    "x-memory-upstream",
    "server-timing",
)


def request_for(api: str, text: str) -> tuple[str, dict[str, Any]]:
    """(path, body) of a one-turn request in ``api``'s shape."""
    if api == "chat":
        return "/v1/chat/completions", {
            "model": "fake-model",
            "messages": [{"role": "user", "content": text}],
        }
    if api == "responses":
        return "/v1/responses", {"model": "fake-model", "input": text}
    return "/v1/messages", {
        "model": "claude",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": text}],
    }


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiRig]:
    with api_rig(tmp_path_factory.mktemp("modes")) as rig:
        yield rig


@pytest.fixture(scope="module")
def user(rig: ApiRig) -> str:
    user = new_user("modes")
    before = learn_state(rig.proxy)
    path, body = request_for("chat", SISTER)
    httpx.post(rig.proxy.base_url + path, json=body, headers={"x-user-id": user}).raise_for_status()
    wait_learned(rig.proxy, before)
    return user


def send(rig: ApiRig, api: str, text: str, user: str, **headers: str) -> httpx.Response:
    path, body = request_for(api, text)
    response = httpx.post(
        rig.proxy.base_url + path, json=body, headers={"x-user-id": user, **headers}, timeout=30
    )
    assert response.status_code == 200, response.text
    for name in DIAGNOSTICS:
        assert name in response.headers, name
    return response


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    ("headers", "mode", "recalls"),
    [
        ({"x-memory-mode": "read"}, "read", True),
        ({"x-openwebui-chat-id": "local:tmp-chat-1"}, "read", True),
        ({"x-memory-mode": "off"}, "off", False),
    ],
    ids=["read", "temporary-chat", "off"],
)
def test_modes_that_never_learn(
    rig: ApiRig, user: str, api: str, headers: dict[str, str], mode: str, recalls: bool
) -> None:
    before = learn_state(rig.proxy)
    response = send(
        rig, api, "My favourite colour is teal. Where does my sister live?", user, **headers
    )
    assert response.headers["x-memory-mode"] == mode
    assert (int(response.headers["x-memory-recalled"]) >= 1) is recalls
    assert ("Lisbon" in response.text) is recalls
    # A non-streamed exchange is enqueued before its answer goes out: none was.
    assert learn_state(rig.proxy)["enqueued"] == before["enqueued"]


@pytest.mark.parametrize("api", APIS)
def test_write_mode_learns_without_recall(rig: ApiRig, user: str, api: str) -> None:
    before = learn_state(rig.proxy)
    response = send(rig, api, f"I play the cello ({api})", user, **{"x-memory-mode": "write"})
    assert response.headers["x-memory-mode"] == "write"
    assert response.headers["x-memory-recalled"] == "0"
    assert response.headers["x-memory-recall"] == "none"
    wait_learned(rig.proxy, before, jobs=1)


@pytest.mark.parametrize("api", APIS)
def test_background_task_is_named_and_not_learned(rig: ApiRig, user: str, api: str) -> None:
    before = learn_state(rig.proxy)
    task = "### Task:\nGenerate a concise title for: my sister in Lisbon, teal"
    response = send(rig, api, task, user)
    assert response.headers["x-memory-task"] == "title"
    assert response.headers["x-memory-recalled"] == "0"
    assert learn_state(rig.proxy)["enqueued"] == before["enqueued"]


@pytest.mark.parametrize("api", APIS)
def test_unidentified_request_is_plain_passthrough(rig: ApiRig, api: str) -> None:
    path, body = request_for(api, "hello")
    response = httpx.post(rig.proxy.base_url + path, json=body, timeout=30)
    assert response.status_code == 200
    assert response.headers["x-memory-status"] == "no-user"
    assert response.headers["x-memory-recall"] == "none"
