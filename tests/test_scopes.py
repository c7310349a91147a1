"""Mem0's entities as scopes: ``user_id``, ``agent_id``, ``run_id`` and ``app_id`` on every
route (filtering, search, delete_all per scope, export/import) and through chat (learned into
the request's scope, recalled within its app)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import ApiServer
from tests.fake_upstream import FakeUpstream
from tests.servers import ServerThread, fake_model_proxy, learn_state, wait_learned

SCOPED = {
    "Erin studies Portuguese in the tutor app": {"app_id": "tutor"},
    "Erin's router is a Fritzbox": {"app_id": "support"},
    "Erin asked the travel agent about Porto": {"agent_id": "travel"},
    "Erin's run note": {"run_id": "r1", "app_id": "tutor"},
    "Erin likes hiking": {},
}


def texts(response: Any) -> set[str]:
    assert response.status_code == 200, response.text
    return {item["memory"] for item in response.json()["results"]}


@pytest.fixture
def erin(api_server: ApiServer) -> Iterator[str]:
    user = f"erin-{uuid.uuid4().hex[:8]}"
    with api_server.client("team") as c:
        for text, ids in SCOPED.items():
            body = {"messages": [text], "user_id": user, "infer": False, **ids}
            assert c.post("/memories", json=body).status_code == 200
    yield user
    with api_server.client("team") as c:
        c.delete("/memories", params={"user_id": user})


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ({}, set(SCOPED)),
        ({"app_id": "tutor"}, {"Erin studies Portuguese in the tutor app", "Erin's run note"}),
        ({"app_id": "support"}, {"Erin's router is a Fritzbox"}),
        ({"agent_id": "travel"}, {"Erin asked the travel agent about Porto"}),
        ({"run_id": "r1"}, {"Erin's run note"}),
        ({"run_id": "r1", "app_id": "support"}, set()),
        ({"app_id": "nobody"}, set()),
    ],
)
def test_every_id_given_narrows_list_search_and_filters(
    api_server: ApiServer, erin: str, ids: dict[str, str], expected: set[str]
) -> None:
    with api_server.client("team") as c:
        assert texts(c.get("/memories", params={"user_id": erin, **ids})) == expected
        assert texts(c.post("/memories/list", json={"user_id": erin, **ids})) == expected
        found = c.post("/search", json={"query": "Erin", "user_id": erin, "top_k": 50, **ids})
        assert texts(found) == expected
        filtered = c.post("/memories/list", json={"filters": {"user_id": erin, **ids}})
        assert texts(filtered) == expected
        listed = c.get("/memories", params={"user_id": erin, **ids}).json()["results"]
        for item in listed:
            for key, value in ids.items():
                assert item[key] == value


def test_delete_all_per_scope_leaves_the_rest(api_server: ApiServer, erin: str) -> None:
    with api_server.client("team") as c:
        r = c.delete("/memories", params={"user_id": erin, "app_id": "tutor"})
        assert r.status_code == 200 and r.json()["deleted"] == 2
        left = texts(c.get("/memories", params={"user_id": erin}))
        assert left == set(SCOPED) - {
            "Erin studies Portuguese in the tutor app",
            "Erin's run note",
        }
        # An app id alone is a scope too (Mem0: any entity): here it holds nothing of Erin's.
        r = c.delete("/memories", params={"app_id": "support", "user_id": erin})
        assert r.json()["deleted"] == 1
        assert "Erin's router is a Fritzbox" not in texts(
            c.get("/memories", params={"user_id": erin})
        )


def test_export_and_import_keep_the_app(api_server: ApiServer, erin: str) -> None:
    with api_server.client("team") as c:
        exported = c.get("/memories/export", params={"user_id": erin, "app_id": "tutor"})
        lines = [orjson.loads(line) for line in exported.content.splitlines()]
        assert {line["app_id"] for line in lines} == {"tutor"} and len(lines) == 2
        c.delete("/memories", params={"user_id": erin, "app_id": "tutor"})
        r = c.post("/memories/import", content=b"\n".join(orjson.dumps(x) for x in lines))
        assert r.status_code == 200 and r.json()["errors"] == [], r.text
        back = c.get("/memories", params={"user_id": erin, "app_id": "tutor"})
        assert texts(back) == {"Erin studies Portuguese in the tutor app", "Erin's run note"}
        # An import targeted at one app refuses a line of another.
        line = {"id": f"x-{erin}", "memory": "wrong app", "user_id": erin, "app_id": "support"}
        r = c.post("/memories/import", params={"app_id": "tutor"}, content=orjson.dumps(line))
        assert r.status_code == 200 and r.json()["errors"][0]["line"] == 1


def test_bound_key_cannot_leave_its_user_through_an_app(api_server: ApiServer, erin: str) -> None:
    with api_server.client("alice") as c:
        r = c.get("/memories", params={"app_id": "tutor"})  # defaults to alice, not erin
        assert r.status_code == 200
        assert all(item["user_id"] == "alice" for item in r.json()["results"])
        assert c.get("/memories", params={"user_id": erin, "app_id": "tutor"}).status_code == 403
        r = c.delete("/memories", params={"user_id": erin, "app_id": "tutor"})
        assert r.status_code == 403
    with api_server.client("team") as c:
        assert len(texts(c.get("/memories", params={"user_id": erin}))) == len(SCOPED)


@pytest.mark.parametrize("value", ["a b", "x" * 129, "tutor'; DROP TABLE memories; --"])
def test_bad_app_ids_are_400(api_server: ApiServer, value: str) -> None:
    with api_server.client("team") as c:
        r = c.get("/memories", params={"user_id": "alice", "app_id": value})
        assert r.status_code == 400 and "app_id" in r.json()["error"]["message"], r.text


# ---- through chat ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Any]]:
    storage = str(tmp_path_factory.mktemp("scopes"))
    with FakeUpstream() as fake, ServerThread(fake_model_proxy(fake.url, storage)) as server:
        yield server, fake


def test_chat_learns_into_its_app_and_recalls_only_from_it(
    chat_proxy: tuple[ServerThread, Any],
) -> None:
    """``app_id`` in the body or ``x-app-id``: learned into that app, recalled from it alone
    (and stripped before the provider sees the body)."""
    server, fake = chat_proxy
    client = openai.OpenAI(base_url=server.url, api_key="sk-x", max_retries=0, timeout=20)
    user = f"fay-{uuid.uuid4().hex[:8]}"
    ways: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        ("My sister lives in Lisbon", {"app_id": "tutor"}, {}),
        ("My cat is called Mochi", {}, {"x-app-id": "support"}),
    ]
    for text, body, headers in ways:
        before = learn_state(server)
        client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": text}],
            extra_body={"user_id": user, **body},
            extra_headers=headers,
        )
        wait_learned(server, before)
    assert all("app_id" not in (r.body or {}) for r in fake.requests_of("chat"))
    for app, word in (("tutor", "Lisbon"), ("support", "Mochi")):
        listed = httpx.get(
            server.base_url + "/v1/memories", params={"user_id": user, "app_id": app}
        ).json()["results"]
        assert listed and all(word in item["memory"] for item in listed), listed
        assert {item["app_id"] for item in listed} == {app}
    question = "Where does my sister live? What is my cat called?"
    for body, headers, seen, unseen in (
        ({"app_id": "tutor"}, {}, "Lisbon", "Mochi"),
        ({}, {"x-app-id": "support"}, "Mochi", "Lisbon"),
    ):
        reply = client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": question}],
            extra_body={"user_id": user, **body},
            extra_headers=headers,
        )
        content = reply.choices[0].message.content or ""
        assert seen in content and unseen not in content.split("| MEMORIES:")[-1], content
