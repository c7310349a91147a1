"""Tenant isolation of the memory API: keys x users x routes, foreign ids, filter widening,
hostile strings — against a real server. A key must never read, search, change, export or
delete memories of a user it may not act for."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

from tests.conftest import API_KEYS, ApiServer, HashEmbedder, api_settings

USERS = ("alice", "bob", "carol")
KEYS = ("alice", "pair", "team", "admin")
ALLOWED = {
    "alice": {"alice"},
    "pair": {"alice", "carol"},
    "team": set(USERS),
    "admin": set(USERS),
}
SEES_ALL = {"team", "admin"}


@pytest.fixture(scope="module")
def world(bulk_server: ApiServer) -> Iterator[dict[str, Any]]:
    """Each user gets a few memories; one memory belongs to an agent only (no user)."""
    ids: dict[str, list[str]] = {}
    with bulk_server.client("admin") as admin:
        for user in USERS:
            texts = [f"{user} secret number {i}" for i in range(3)]
            r = admin.post(
                "/memories",
                json={"messages": texts, "user_id": user, "metadata": {"tag": "t"}, "infer": False},
            )
            assert r.status_code == 200, r.text
            ids[user] = [x["id"] for x in r.json()["results"]]
        r = admin.post(
            "/memories", json={"messages": "agent-only note", "agent_id": "bot", "infer": False}
        )
        ids["agent"] = [r.json()["results"][0]["id"]]
    yield {"server": bulk_server, "ids": ids}


def snapshot(server: ApiServer) -> dict[str, list[tuple[str, str]]]:
    with server.client("admin") as admin:
        state = {}
        for user in USERS:
            items = admin.get("/memories", params={"user_id": user, "top_k": 1000}).json()
            state[user] = sorted((x["id"], x["memory"]) for x in items["results"])
        return state


def status_of(r: httpx.Response) -> int:
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else None
    if r.status_code >= 400:
        assert body is not None and set(body) == {"error"}, r.text
    return r.status_code


# ---- 401 on every route ------------------------------------------------------------------

ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/memories", {"json": {"messages": "x", "user_id": "alice", "infer": False}}),
    ("GET", "/memories", {"params": {"user_id": "alice"}}),
    ("POST", "/memories/list", {"json": {"user_id": "alice"}}),
    ("DELETE", "/memories", {"params": {"user_id": "alice"}}),
    ("GET", "/memories/export", {"params": {"user_id": "alice"}}),
    ("POST", "/memories/import", {"content": b'{"id": "i", "memory": "m", "user_id": "alice"}'}),
    ("GET", "/memories/{id}", {}),
    ("PUT", "/memories/{id}", {"json": {"text": "changed"}}),
    ("DELETE", "/memories/{id}", {}),
    ("GET", "/memories/{id}/history", {}),
    ("POST", "/memories/{id}/feedback", {"json": {"feedback": "VERY_NEGATIVE"}}),
    ("POST", "/feedback", {"json": {"memory_id": "{id}", "feedback": "VERY_NEGATIVE"}}),
    ("POST", "/search", {"json": {"query": "secret", "user_id": "alice"}}),
    ("POST", "/reset", {}),
    ("GET", "/auth/me", {}),
    ("GET", "/learning", {"params": {"user_id": "alice"}}),
    ("POST", "/learning/{id}/retry", {}),
    ("GET", "/graph", {"params": {"user_id": "alice"}}),
    ("PATCH", "/graph/relations/{id}", {"json": {"relationship": "x"}}),
    ("DELETE", "/graph/relations/{id}", {}),
    ("GET", "/users/alice/profile", {}),
]


@pytest.mark.parametrize("prefix", ["", "/v1"])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer sk-wrong"},
        {"X-API-Key": "sk-wrong"},
        {"Authorization": "Basic " + API_KEYS["admin"]},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {API_KEYS['admin']}x"},
    ],
    ids=["none", "wrong-bearer", "wrong-x-api-key", "basic-scheme", "empty-bearer", "suffixed"],
)
def test_every_route_needs_a_valid_key(
    world: dict[str, Any], prefix: str, headers: dict[str, str]
) -> None:
    server: ApiServer = world["server"]
    before = snapshot(server)
    memory_id = world["ids"]["alice"][0]
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as c:
        for method, path, kwargs in ROUTES:
            url = prefix + path.replace("{id}", memory_id)
            if "json" in kwargs and kwargs["json"].get("memory_id") == "{id}":
                kwargs = {"json": {**kwargs["json"], "memory_id": memory_id}}
            r = c.request(method, url, **kwargs)
            assert status_of(r) == 401, (method, url, r.text)
            assert r.json()["error"]["type"] == "authentication_error"
    assert snapshot(server) == before


def test_x_api_key_header_is_accepted(world: dict[str, Any]) -> None:
    server: ApiServer = world["server"]
    headers = {"X-API-Key": API_KEYS["alice"]}
    with httpx.Client(base_url=server.base_url, headers=headers) as c:
        assert c.get("/memories", params={"user_id": "alice"}).status_code == 200
        assert c.get("/memories", params={"user_id": "bob"}).status_code == 403


# ---- the matrix: keys x users x scoped routes ---------------------------------------------


@pytest.mark.parametrize("key,user", list(itertools.product(KEYS, USERS)))
def test_scoped_routes_matrix(world: dict[str, Any], key: str, user: str) -> None:
    server: ApiServer = world["server"]
    allowed = user in ALLOWED[key]
    want = 200 if allowed else 403
    others = snapshot(server)
    with server.client(key) as c:
        for prefix in ("", "/v1"):
            r = c.get(f"{prefix}/memories", params={"user_id": user, "top_k": 1000})
            assert status_of(r) == want, r.text
            if allowed:
                assert {x["user_id"] for x in r.json()["results"]} == {user}
            else:
                assert "secret" not in r.text

            r = c.post(f"{prefix}/memories/list", json={"filters": {"user_id": user}})
            assert status_of(r) == want, r.text
            if allowed:
                assert {x["user_id"] for x in r.json()["results"]} == {user}

            r = c.post(f"{prefix}/search", json={"query": "secret number", "user_id": user})
            assert status_of(r) == want, r.text
            if allowed:
                assert r.json()["results"]
                assert {x["user_id"] for x in r.json()["results"]} == {user}

            r = c.post(f"{prefix}/search", json={"query": "secret", "filters": {"user_id": user}})
            assert status_of(r) == want, r.text

            r = c.get(f"{prefix}/memories/export", params={"user_id": user})
            assert status_of(r) == want, r.text
            if allowed:
                lines = [orjson.loads(line) for line in r.content.splitlines()]
                assert lines and {x["user_id"] for x in lines} == {user}

            # Scoped to a run nobody uses, so allowed deletes remove nothing of the world.
            r = c.delete(f"{prefix}/memories", params={"user_id": user, "run_id": "no-such-run"})
            assert status_of(r) == want, r.text

            add = {"messages": f"{key} wrote for {user}", "user_id": user, "run_id": "matrix"}
            r = c.post(f"{prefix}/memories", json={**add, "infer": False})
            assert status_of(r) == want, r.text

            line = {"id": f"imp-{key}-{user}{prefix[1:]}", "memory": f"imported {key} {user}"}
            r = c.post(
                f"{prefix}/memories/import",
                params={"user_id": user, "run_id": "matrix"},
                content=orjson.dumps(line),
            )
            assert status_of(r) == want, r.text
            # Without a target, a line naming a forbidden user is refused by line number.
            r = c.post(
                f"{prefix}/memories/import",
                content=orjson.dumps({**line, "id": line["id"] + "-b", "user_id": user}),
            )
            assert r.status_code == 200
            assert (r.json()["errors"] == []) == allowed
            if not allowed:
                assert r.json()["errors"][0]["line"] == 1

            # Profiles are off on this server: a key that may act for the user learns that
            # (409), any other key gets the same 403 as for the user's memories.
            r = c.get(f"{prefix}/users/{user}/profile")
            assert status_of(r) == (409 if allowed else 403), r.text
            if not allowed:
                listed = c.get(f"{prefix}/memories", params={"user_id": user})
                assert r.json()["error"] == listed.json()["error"]

            if key != "admin":  # the admin reset is tested on its own server
                assert status_of(c.post(f"{prefix}/reset")) == 403

        # Clean up what this cell added (as admin), so the world stays the same.
        if allowed:
            with server.client("admin") as admin:
                admin.delete("/memories", params={"user_id": user, "run_id": "matrix"})
    assert snapshot(server) == others


@pytest.fixture(scope="module")
def log_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """The API keys' proxy with a learning log: one dead job per user (no model to learn
    with, one attempt: each dies at once), so that every user has log entries."""
    from memory_core import AsyncMemory
    from memory_core.job_store import SqliteJobStore
    from proxy.app import create_app
    from tests.servers import ServerThread

    uri = str(tmp_path_factory.mktemp("learning-log") / "lancedb")
    settings = api_settings(uri)
    queue = settings.memory.queue.model_copy(update={"max_attempts": 1})
    settings = settings.model_copy(
        update={"memory": settings.memory.model_copy(update={"queue": queue})}
    )
    jobs = SqliteJobStore(Path(uri) / "queue.sqlite3")
    for user in USERS:
        payload = {"scope": {"user_id": user}, "messages": [{"role": "user", "content": "x"}]}
        jobs.enqueue(f"dead-{user}", user, payload)
    memory = AsyncMemory(settings.memory.core_config(), embedder=HashEmbedder())
    with ServerThread(create_app(settings, memory=memory)) as thread:
        server = ApiServer(thread.base_url, memory)
        wait_dead(jobs, [f"dead-{user}" for user in USERS])
        yield server
    jobs.close()


def wait_dead(jobs: Any, job_ids: list[str]) -> None:
    deadline = time.monotonic() + 30
    while any(jobs.dead_job(job_id) is None for job_id in job_ids):
        assert time.monotonic() < deadline, f"{job_ids} did not die"
        time.sleep(0.05)


@pytest.mark.parametrize("key,user", list(itertools.product(KEYS, USERS)))
def test_learning_log_matrix(log_server: ApiServer, key: str, user: str) -> None:
    """A key reads and retries the learning log of the users it may name, nobody else's:
    another user's dead job is as absent as one that never existed."""
    allowed = user in ALLOWED[key]
    job_id = f"dead-{user}"
    with log_server.client(key) as c:
        for prefix in ("", "/v1"):
            r = c.get(f"{prefix}/learning", params={"user_id": user})
            assert status_of(r) == (200 if allowed else 403), r.text
            if allowed:
                entries = r.json()["results"]
                assert entries and {e["user_id"] for e in entries} == {user}
                assert entries[0]["status"] == "dead" and entries[0]["error"]
            else:
                assert job_id not in r.text
            # Without a user: a bound key's own log, the whole log for keys that see all.
            r = c.get(f"{prefix}/learning")
            if key == "pair":
                assert status_of(r) == 403
            else:
                shown = {e["user_id"] for e in r.json()["results"]}
                assert shown == (set(USERS) if key in SEES_ALL else {"alice"})
        retry = c.post(f"/v1/learning/{job_id}/retry")
        absent = c.post("/v1/learning/no-such-job/retry")
        assert status_of(absent) == 404
        if allowed:
            assert status_of(retry) == 202, retry.text  # it dies again: no model to learn with
        else:
            assert status_of(retry) == 404
            assert retry.json()["error"]["type"] == absent.json()["error"]["type"]
    if allowed:
        from memory_core.job_store import SqliteJobStore

        jobs = SqliteJobStore(Path(log_server.memory.config.storage_uri) / "queue.sqlite3")
        try:
            wait_dead(jobs, [job_id])
        finally:
            jobs.close()


def test_reset_matrix_non_admins_refused(world: dict[str, Any]) -> None:
    server: ApiServer = world["server"]
    before = snapshot(server)
    for key in ("alice", "pair", "team"):
        with server.client(key) as c:
            assert status_of(c.post("/reset")) == 403
            assert status_of(c.post("/v1/reset")) == 403
    assert snapshot(server) == before


@pytest.mark.parametrize("key", KEYS)
def test_ids_of_other_users_are_404(world: dict[str, Any], key: str) -> None:
    """Foreign ids look exactly like absent ids: same status, same message shape."""
    server: ApiServer = world["server"]
    before = snapshot(server)
    ids = world["ids"]
    with server.client(key) as c:
        for owner in (*USERS, "agent"):
            visible = key in SEES_ALL or owner in ALLOWED[key]
            memory_id = ids[owner][0]
            for prefix in ("", "/v1"):
                get = c.get(f"{prefix}/memories/{memory_id}")
                hist = c.get(f"{prefix}/memories/{memory_id}/history")
                absent = c.get(f"{prefix}/memories/00000000-0000-4000-8000-000000000000")
                assert status_of(absent) == 404
                if visible:
                    assert status_of(get) == 200 and get.json()["id"] == memory_id
                    assert status_of(hist) == 200
                    continue
                assert status_of(get) == 404 and status_of(hist) == 404
                assert get.json()["error"]["type"] == absent.json()["error"]["type"]
                assert "secret" not in get.text and "secret" not in hist.text
                put = c.put(f"{prefix}/memories/{memory_id}", json={"text": "pwned"})
                assert status_of(put) == 404
                assert status_of(c.delete(f"{prefix}/memories/{memory_id}")) == 404
                # Feedback on a foreign memory: the same 404 as on an absent id, both routes.
                hide = {"feedback": "VERY_NEGATIVE", "feedback_reason": "pwned"}
                for r in (
                    c.post(f"{prefix}/memories/{memory_id}/feedback", json=hide),
                    c.post(f"{prefix}/feedback", json={**hide, "memory_id": memory_id}),
                ):
                    assert status_of(r) == 404
                    assert r.json()["error"]["type"] == absent.json()["error"]["type"]
                    assert "secret" not in r.text
    assert snapshot(server) == before
    with server.client("admin") as admin:  # nobody's memory got the feedback
        for owner in (*USERS, "agent"):
            item = admin.get(f"/memories/{ids[owner][0]}").json()
            assert item["feedback"] is None and item["feedback_reason"] is None


def test_allowed_key_can_change_and_delete_by_id(world: dict[str, Any]) -> None:
    server: ApiServer = world["server"]
    with server.client("alice") as c:
        r = c.post("/memories", json={"messages": "temp alice", "user_id": "alice", "infer": False})
        memory_id = r.json()["results"][0]["id"]
        assert status_of(c.put(f"/memories/{memory_id}", json={"text": "temp alice 2"})) == 200
        assert [h["event"] for h in c.get(f"/memories/{memory_id}/history").json()] == [
            "ADD",
            "UPDATE",
        ]
        assert status_of(c.delete(f"/memories/{memory_id}")) == 200
        # After the delete, a bound key no longer sees the history (rows carry no owner).
        assert status_of(c.get(f"/memories/{memory_id}/history")) == 404
    with server.client("pair") as c:
        assert status_of(c.get(f"/memories/{memory_id}")) == 404


# ---- scope derivation and filter widening ---------------------------------------------------


def test_bound_key_defaults_to_its_user(world: dict[str, Any]) -> None:
    server: ApiServer = world["server"]
    with server.client("alice") as c:
        got = c.post("/memories/list", json={"filters": {"tag": "t"}}).json()["results"]
        assert got and {x["user_id"] for x in got} == {"alice"}
        # agent-only scope for a bound key still only sees alice's rows; the agent note is hidden
        got = c.get("/memories", params={"agent_id": "bot"}).json()["results"]
        assert got == []
        got = c.post("/search", json={"query": "agent-only note", "agent_id": "bot"}).json()
        assert got["results"] == []
    with server.client("pair") as c:
        # a list key must say which user
        assert status_of(c.get("/memories", params={"agent_id": "bot"})) == 403
        assert status_of(c.post("/search", json={"query": "note", "agent_id": "bot"})) == 403
    with server.client("team") as c:
        got = c.get("/memories", params={"agent_id": "bot"}).json()["results"]
        assert [x["memory"] for x in got] == ["agent-only note"]


WIDENING = [
    {"OR": [{"user_id": "bob"}]},
    {"OR": [{"user_id": "alice"}, {"user_id": "bob"}]},
    {"user_id": {"in": ["alice", "bob"]}},
    {"user_id": {"eq": "bob"}},
    {"user_id": {"ne": "alice"}},
    {"user_id": {"nin": ["alice"], "in": ["bob"]}},
    {"AND": [{"tag": "t"}, {"OR": [{"user_id": "bob"}, {"tag": "t"}]}]},
    {"NOT": [{"user_id": "bob"}]},
    {"NOT": {"user_id": "bob"}},
    {"user_id": "bob"},
]


@pytest.mark.parametrize("filters", WIDENING, ids=[orjson.dumps(f).decode() for f in WIDENING])
@pytest.mark.parametrize("key", ["alice", "pair"])
def test_filters_cannot_widen_a_restricted_key(
    world: dict[str, Any], key: str, filters: dict[str, Any]
) -> None:
    server: ApiServer = world["server"]
    with server.client(key) as c:
        for body in ({"user_id": "alice", "filters": filters}, {"filters": filters}):
            search = c.post("/search", json={"query": "secret number", "top_k": 100, **body})
            listing = c.post("/memories/list", json={**body, "top_k": 1000})
            for r in (search, listing):
                assert "bob secret" not in r.text
                if b"bob" in orjson.dumps(filters):
                    assert status_of(r) == 403, r.text
                elif key == "pair" and "user_id" not in body:  # a list key must name a user
                    assert status_of(r) == 403
                else:  # mentions only alice: allowed, and can only narrow
                    assert status_of(r) == 200
                    assert {x["user_id"] for x in r.json()["results"]} <= {"alice"}


@pytest.mark.parametrize("filters", WIDENING[:3], ids=["or", "or2", "in"])
def test_filters_only_narrow_for_any_user_keys(
    world: dict[str, Any], filters: dict[str, Any]
) -> None:
    """Even a key that may see bob cannot turn an alice query into a bob query."""
    server: ApiServer = world["server"]
    with server.client("team") as c:
        r = c.post("/memories/list", json={"user_id": "alice", "filters": filters, "top_k": 1000})
        assert status_of(r) == 200
        assert {x["user_id"] for x in r.json()["results"]} <= {"alice"}
        r = c.post(
            "/search",
            json={"query": "bob secret number", "user_id": "alice", "filters": filters},
        )
        assert status_of(r) == 200
        assert {x["user_id"] for x in r.json()["results"]} <= {"alice"}


# ---- hostile strings in every field ----------------------------------------------------------

HOSTILE = [
    "' OR '1'='1",
    "alice' OR user_id != '",
    'alice") OR (1=1',
    "bob'; DROP TABLE memories; --",
    "alice\x00bob",
    "../../../etc/passwd",
    "<script>alert(1)</script>",
    "%",
    "_",
    "*",
    "alice\n",
    " alice",
    "ａｌｉｃｅ",
    "a" * 129,
    "",
    "\\",
    "${jndi:ldap://x}",
    "{{7*7}}",
]


@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v)[:30] for v in HOSTILE])
@pytest.mark.parametrize("key", ["alice", "team"])
def test_hostile_strings_in_every_field(world: dict[str, Any], key: str, value: str) -> None:
    server: ApiServer = world["server"]
    before = snapshot(server)
    bob_id = world["ids"]["bob"][0]
    with server.client(key) as c:
        for field in ("user_id", "agent_id", "run_id", "app_id"):
            scope = {"user_id": "alice", field: value} if field != "user_id" else {field: value}
            calls = [
                c.get("/memories", params=scope),
                c.post("/memories/list", json=scope),
                c.post("/memories", json={"messages": "h", **scope, "infer": False}),
                c.post("/search", json={"query": "secret", **scope}),
                c.get("/memories/export", params=scope),
                c.delete("/memories", params=scope),
                c.post("/memories/import", params=scope, content=b'{"id":"h1","memory":"h"}'),
                c.post("/search", json={"query": "secret", "filters": {field: value}}),
                c.post("/memories/list", json={"filters": {"user_id": "alice", field: value}}),
                c.post(
                    "/memories/list",
                    json={"user_id": "alice", "filters": {field: {"in": [value, "bob"]}}},
                ),
            ]
            for r in calls:
                # Rejected (bad id / forbidden), or an empty answer: never a 5xx, never a leak.
                assert status_of(r) in (200, 400, 403), (field, r.status_code, r.text)
                # Any accepted hostile id names a scope of its own, which holds no secrets.
                assert "secret" not in r.text, (field, value, r.text[:200])
        # As a memory id, path segment, cursor, metadata key and value, query and message text.
        for r in (
            c.get("/memories/" + quote(value, safe="")),
            c.put("/memories/" + quote(value, safe=""), json={"text": "x"}),
            c.delete("/memories/" + quote(value, safe="")),
            c.get("/memories/" + quote(value, safe="") + "/history"),
            c.get("/memories", params={"user_id": "alice", "cursor": value}),
            c.post("/memories/list", json={"user_id": "alice", "filters": {value: "x"}}),
            c.post("/memories/list", json={"user_id": "alice", "filters": {"tag": value}}),
            c.post("/memories/list", json={"user_id": "alice", "filters": {"id": value}}),
            c.post("/memories/list", json={"user_id": "alice", "filters": {"tag": {value: 1}}}),
        ):
            assert status_of(r) in (200, 400, 403, 404, 405), (r.request.url, r.text)
            assert "bob secret" not in r.text
        # Content fields are data: stored and returned verbatim, for alice only.
        if value.strip() and "\x00" not in value:
            r = c.post(
                "/memories",
                json={
                    "messages": [{"role": "user", "content": f"hostile {value}"}],
                    "user_id": "alice",
                    "run_id": "hostile",
                    "metadata": {value or "k": value},
                    "infer": False,
                },
            )
            assert status_of(r) == 200, r.text
            got = c.post(
                "/search",
                json={"query": f"hostile {value}", "user_id": "alice", "run_id": "hostile"},
            ).json()["results"]
            assert any(x["memory"] == f"hostile {value}".strip() for x in got)
            assert all(x["user_id"] == "alice" for x in got)
            c.delete("/memories", params={"user_id": "alice", "run_id": "hostile"})
        if key == "alice":
            assert status_of(c.put(f"/memories/{bob_id}", json={"text": value or "x"})) == 404
    with server.client("admin") as admin:  # what an accepted hostile id (e.g. "_") created
        for field in ("user_id", "agent_id", "run_id", "app_id"):
            admin.delete("/memories", params={field: value})
            admin.delete("/memories", params={"user_id": "alice", field: value})
    after = snapshot(server)
    assert after["bob"] == before["bob"] and after["carol"] == before["carol"]
    assert after["alice"] == before["alice"]


# ---- the chat route enforces the same keys -------------------------------------------------


@pytest.mark.parametrize("key,user", list(itertools.product(KEYS, USERS)))
def test_chat_route_matrix(world: dict[str, Any], key: str, user: str) -> None:
    """Refused before any model routing: 403 for users the key may not act for."""
    server: ApiServer = world["server"]
    body = {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}
    with server.client(key) as c:
        for request in (
            {"json": {**body, "user_id": user}},
            {"json": {**body, "user": user}},
            {"json": body, "headers": {"X-User-Id": user}},
        ):
            r = c.post("/v1/chat/completions", **request)
            if user in ALLOWED[key]:
                assert r.status_code not in (401, 403), r.text
            else:
                assert r.status_code == 403, r.text
    with server.client() as anonymous:
        assert anonymous.post("/v1/chat/completions", json=body).status_code == 401


def test_bound_key_writes_land_in_its_user(world: dict[str, Any]) -> None:
    """A bound key that names no user writes as its user, never as a user-less memory."""
    server: ApiServer = world["server"]
    with server.client("alice") as c:
        r = c.post("/memories", json={"messages": "bound add", "agent_id": "bot", "infer": False})
        added = r.json()["results"][0]["id"]
        line = {"id": "bound-import-1", "memory": "bound import", "agent_id": "bot"}
        report = c.post("/memories/import", content=orjson.dumps(line)).json()
        assert report["imported"] == 1 and report["errors"] == []
        for memory_id in (added, "bound-import-1"):
            item = c.get(f"/memories/{memory_id}").json()
            assert (item["user_id"], item["agent_id"]) == ("alice", "bot")
        c.delete("/memories", params={"user_id": "alice", "agent_id": "bot"})
    with server.client("pair") as c:  # a list key must say which user
        report = c.post("/memories/import", content=orjson.dumps({**line, "id": "b2"})).json()
        assert report["imported"] == 0 and report["errors"][0]["line"] == 1


# ---- graph memory: the same keys on the graph routes and tables ------------------------------


@pytest.fixture(scope="module")
def graph_world(graph_server: ApiServer) -> Iterator[dict[str, Any]]:
    """Each user learns a sister living in a town of their own (relations via the fake LLM)."""
    with graph_server.client("admin") as admin:
        for user in USERS:
            text = f"My sister Maria lives in {user.title()}ville."
            body = {"messages": [{"role": "user", "content": text}], "user_id": user}
            assert admin.post("/memories", json=body).status_code == 200
    yield {"server": graph_server, "relations": graph_snapshot(graph_server)}


def graph_snapshot(server: ApiServer) -> dict[str, list[tuple[str, str, str, str]]]:
    with server.client("admin") as admin:
        state = {}
        for user in USERS:
            page = admin.get("/graph", params={"user_id": user, "include_invalid": "true"}).json()
            edges = (
                (e["id"], e["source"], e["relationship"], e["destination"]) for e in page["edges"]
            )
            state[user] = sorted(edges)
        return state


@pytest.mark.parametrize("key,user", list(itertools.product(KEYS, USERS)))
def test_graph_routes_matrix(graph_world: dict[str, Any], key: str, user: str) -> None:
    """A key lists only graphs of users it may act for (403 otherwise), and a relation of a
    user it may not act for is 404 to rename or delete, exactly like an absent one."""
    server: ApiServer = graph_world["server"]
    before = graph_snapshot(server)
    allowed = user in ALLOWED[key]
    town = f"{user.title()}ville"
    theirs = before[user][0][0]
    with server.client(key) as c:
        for prefix in ("", "/v1"):
            r = c.get(f"{prefix}/graph", params={"user_id": user})
            assert status_of(r) == (200 if allowed else 403), r.text
            if allowed:
                assert town in {e["destination"] for e in r.json()["edges"]}
                others = {f"{u.title()}ville" for u in USERS if u != user}
                assert not others & {n["name"] for n in r.json()["nodes"]}
            else:
                assert town not in r.text
            absent = c.delete(f"{prefix}/graph/relations/{'0' * 32}")
            assert status_of(absent) == 404
            if not allowed:
                for r in (
                    c.patch(f"{prefix}/graph/relations/{theirs}", json={"relationship": "pwned"}),
                    c.delete(f"{prefix}/graph/relations/{theirs}"),
                ):
                    assert status_of(r) == 404, r.text
                    assert r.json()["error"]["type"] == absent.json()["error"]["type"]
                    assert town not in r.text
    assert graph_snapshot(server) == before


def test_bound_key_graph_defaults_to_its_user(graph_world: dict[str, Any]) -> None:
    server: ApiServer = graph_world["server"]
    with server.client("alice") as c:
        page = c.get("/v1/graph").json()
        assert "Aliceville" in {n["name"] for n in page["nodes"]}
        assert "Bobville" not in str(page)
    with server.client("pair") as c:  # a list key must say which user
        assert status_of(c.get("/v1/graph")) == 403


@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v)[:30] for v in HOSTILE])
def test_hostile_strings_on_the_graph_routes(graph_world: dict[str, Any], value: str) -> None:
    server: ApiServer = graph_world["server"]
    before = graph_snapshot(server)
    with server.client("alice") as c:
        for field in ("user_id", "agent_id", "run_id", "app_id"):
            scope = {"user_id": "alice", field: value} if field != "user_id" else {field: value}
            r = c.get("/graph", params=scope)
            assert status_of(r) in (200, 400, 403), (field, r.text)
            assert "Bobville" not in r.text
        for r in (
            c.get("/graph", params={"user_id": "alice", "cursor": value}),
            c.patch("/graph/relations/" + quote(value, safe=""), json={"relationship": value}),
            c.delete("/graph/relations/" + quote(value, safe="")),
        ):
            assert status_of(r) in (200, 400, 404, 405), (r.request.url, r.text)
            assert "Bobville" not in r.text
    assert graph_snapshot(server) == before
