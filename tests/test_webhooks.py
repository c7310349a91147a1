"""Webhooks (docs/webhooks.md): signatures and events as pure functions; then a real proxy
(uvicorn, the fake upstream as its provider) delivering to a receiver on loopback through the
durable queue — learned from a chat, REST, MCP — with retries, dead letters, refused private
targets and redirects, and secrets that never leave the config."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import orjson
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from memory_core import AsyncMemory
from memory_core.changes import MemoryChange, changes_of
from memory_core.errors import ConfigError
from memory_core.queue import SqliteJobStore
from memory_core.types import Scope
from proxy.app import create_app
from proxy.settings import Settings
from proxy.webhooks import WebhookSettings, delivery_jobs, event_of, sign, verify
from tests.conftest import SharedEmbedder
from tests.fake_upstream import FakeUpstream, fake_deployment
from tests.servers import ServerThread, wait_for

SECRET = "whsec-test-0123456789abcdef"
OTHER_SECRET = "whsec-other-0123456789abcdef"

# ---- signatures (pure) ----------------------------------------------------------------------

BODY = b'{"id":"evt_1","type":"memory.added"}'
NOW = 1_800_000_000


@pytest.mark.parametrize(
    ("header", "body", "secret", "now", "valid"),
    [
        (sign(SECRET.encode(), NOW, BODY), BODY, SECRET, NOW, True),
        (sign(SECRET.encode(), NOW, BODY), BODY, SECRET, NOW + 299, True),
        (sign(SECRET.encode(), NOW, BODY), BODY, SECRET, NOW + 301, False),  # replayed late
        (sign(SECRET.encode(), NOW, BODY), BODY + b" ", SECRET, NOW, False),  # body changed
        (sign(SECRET.encode(), NOW, BODY), BODY, OTHER_SECRET, NOW, False),  # other key
        (sign(SECRET.encode(), NOW - 10, BODY).replace(f"t={NOW - 10}", f"t={NOW}"), BODY,
         SECRET, NOW, False),  # timestamp moved
        (f"t={NOW},v1=00," + sign(SECRET.encode(), NOW, BODY).split(",")[1], BODY, SECRET, NOW,
         True),  # one of several v1 (key rotation)
        (f"t={NOW}", BODY, SECRET, NOW, False),
        ("v1=abc", BODY, SECRET, NOW, False),
        (f"t={NOW},t={NOW},v1=x", BODY, SECRET, NOW, False),
        ("", BODY, SECRET, NOW, False),
        ("t=soon,v1=x", BODY, SECRET, NOW, False),
    ],
)  # fmt: skip
def test_verify(header: str, body: bytes, secret: str, now: int, valid: bool) -> None:
    assert verify(secret.encode(), header, body, now=now) is valid


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET.encode(), NOW, BODY) == f"t={NOW},v1={expected}"


# ---- events and jobs (pure) -----------------------------------------------------------------


def change(event: str, *, old: str | None, new: str | None, **scope: str) -> MemoryChange:
    return MemoryChange(
        change_id=str(uuid.uuid4()),
        memory_id="m-1",
        event=event,  # type: ignore[arg-type]
        scope=Scope(**scope),
        old=old,
        new=new,
        at="2026-12-01T10:00:00.000000+00:00",
        job_id="job-1" if event == "ADD" else None,
    )


@pytest.mark.parametrize(
    ("event", "old", "new", "kind", "memory", "previous", "source"),
    [
        ("ADD", None, "User likes tea", "memory.added", "User likes tea", None, "learning"),
        ("UPDATE", "User likes tea", "User likes green tea", "memory.updated",
         "User likes green tea", "User likes tea", "api"),
        ("DELETE", "User likes tea", None, "memory.deleted", "User likes tea", None, "api"),
    ],
)  # fmt: skip
def test_event_of(
    event: str, old: str | None, new: str | None, kind: str, memory: str, previous: Any,
    source: str,
) -> None:  # fmt: skip
    made = change(event, old=old, new=new, user_id="alice", agent_id="bot")
    body = event_of(made)
    assert body["id"] == "evt_" + made.change_id.replace("-", "")
    assert body["type"] == kind and body["created_at"] == made.at
    assert body["data"] == {
        "id": "m-1",
        "memory": memory,
        "previous_memory": previous,
        "user_id": "alice",
        "agent_id": "bot",
        "run_id": None,
        "app_id": None,
        "event": event,
        "source": source,
    }
    assert event_of(made) == body  # the same change, the same event (retries, re-enqueues)


def endpoint(url: str, **fields: Any) -> WebhookSettings:
    return WebhookSettings.model_validate({"url": url, "secret": SECRET, **fields})


def test_delivery_jobs_per_endpoint_and_owner() -> None:
    all_events = endpoint("https://a.example/hook")
    deletes = endpoint("https://b.example/hook", events=["memory.deleted"])
    changes = [
        change("ADD", old=None, new="x", user_id="alice"),
        change("DELETE", old="y", new=None, agent_id="bot"),
        change("DELETE", old="z", new=None, run_id="r1"),
    ]
    jobs = delivery_jobs([all_events, deletes], changes)
    a, b = all_events.endpoint_id, deletes.endpoint_id
    assert [(scope, payload["endpoint"]) for _, scope, payload in jobs] == [
        (f"webhook/{a}/alice", a),
        (f"webhook/{a}/agent:bot", a),
        (f"webhook/{b}/agent:bot", b),
        (f"webhook/{a}/run:r1", a),
        (f"webhook/{b}/run:r1", b),
    ]
    assert len({job_id for job_id, _, _ in jobs}) == 5
    assert delivery_jobs([all_events, deletes], changes) == jobs  # ids are stable
    assert all("secret" not in orjson.dumps(payload).decode() for _, _, payload in jobs)
    assert SECRET not in orjson.dumps(jobs).decode()


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"url": "ftp://a.example/x", "secret": SECRET}, "http"),
        ({"url": "https://user:pw@a.example/x", "secret": SECRET}, "credentials"),
        ({"url": "https://a.example/x"}, "exactly one"),
        ({"url": "https://a.example/x", "secret": SECRET, "secret_env": "X"}, "exactly one"),
        ({"url": "https://a.example/x", "secret": SECRET, "events": []}, "at least 1"),
        ({"url": "https://a.example/x", "secret": SECRET, "events": ["memory.read"]}, "memory."),
        ({"url": "https://a.example/x", "secret": SECRET, "timeout_s": 0}, "greater than"),
    ],
)
def test_webhook_settings_refused(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        Settings.from_dict({"webhooks": [fields]})


def test_secrets_are_checked_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    short = Settings.from_dict({"webhooks": [{"url": "https://a.example/", "secret": "short"}]})
    with pytest.raises(ConfigError, match="16"):
        create_app(short)
    unset = {"webhooks": [{"url": "https://a.example/", "secret_env": "MEMPROXY_TEST_WHSEC"}]}
    monkeypatch.delenv("MEMPROXY_TEST_WHSEC", raising=False)
    with pytest.raises(ConfigError, match="MEMPROXY_TEST_WHSEC"):
        create_app(Settings.from_dict(unset))
    monkeypatch.setenv("MEMPROXY_TEST_WHSEC", SECRET)
    create_app(Settings.from_dict(unset))
    monkeypatch.setenv("MEMPROXY_TEST_WHSEC_REF", SECRET)
    referenced = {
        "webhooks": [{"url": "https://a.example/", "secret": "os.environ/MEMPROXY_TEST_WHSEC_REF"}]
    }  # noqa: E501
    settings = Settings.from_dict(referenced)
    assert settings.webhooks[0].secret_bytes() == SECRET.encode()
    assert SECRET not in repr(settings) and SECRET not in settings.model_dump_json()


async def test_every_write_path_reaches_the_observer(amem: AsyncMemory) -> None:
    """Verbatim adds, updates, deletes, imports and delete_all all tell a watcher, once per
    change, with the change's history row id."""
    seen: list[MemoryChange] = []

    class Watcher:
        async def memories_changed(self, changes: Sequence[MemoryChange]) -> None:
            seen.extend(changes)

    watcher = Watcher()
    amem.watch(watcher)
    added = await amem.add(["I like tea", "I own a bike"], user_id="u1", infer=False)
    first = added["results"][0]["id"]
    await amem.update(first, "I like green tea")
    await amem.delete(first)
    await amem.import_memories([{"id": "imp-1", "memory": "Imported fact", "user_id": "u1"}])
    await amem.delete_all(user_id="u1")
    amem.unwatch(watcher)
    await amem.add("unwatched", user_id="u1", infer=False)
    assert [(c.event, c.new or c.old) for c in seen[:5]] == [
        ("ADD", "I like tea"),
        ("ADD", "I own a bike"),
        ("UPDATE", "I like green tea"),
        ("DELETE", "I like green tea"),
        ("ADD", "Imported fact"),
    ]
    assert sorted((c.event, c.old) for c in seen[5:]) == [
        ("DELETE", "I own a bike"),
        ("DELETE", "Imported fact"),
    ]
    assert all(c.scope == Scope("u1") for c in seen)
    history = await amem.history(first)
    assert [h["id"] for h in history] == [c.change_id for c in seen if c.memory_id == first]
    assert changes_of([]) == []


# ---- a receiver on loopback -----------------------------------------------------------------


class Receiver:
    """Records every POST (path, headers, body); ``/flaky`` fails each event's first two
    tries, ``/down`` always fails, ``/redirect`` answers 307 to ``/redirected``."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.answered: list[int] = []
        self._tries: Counter[str] = Counter()

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        path = request.url.path
        response = self._answer(path, request.headers.get("x-memproxy-event-id", ""))
        self.requests.append((path, dict(request.headers), body))
        self.answered.append(response.status_code)
        return response

    def _answer(self, path: str, event_id: str) -> Response:
        if path == "/flaky":
            self._tries[event_id] += 1
            if self._tries[event_id] <= 2:
                return Response("not now", status_code=503)
        if path == "/down":
            return Response("down", status_code=500)
        if path == "/redirect":
            return Response(status_code=307, headers={"Location": "/redirected"})
        return Response(status_code=204)

    def events(self, path: str, *, delivered: bool = True) -> list[dict[str, Any]]:
        """The events POSTed to ``path`` (only the ones answered 2xx when ``delivered``)."""
        return [
            orjson.loads(body)
            for (p, _, body), status in zip(self.requests, self.answered, strict=True)
            if p == path and (status < 300 or not delivered)
        ]

    def of_user(self, path: str, user: str, *, delivered: bool = True) -> list[dict[str, Any]]:
        return [e for e in self.events(path, delivered=delivered) if e["data"]["user_id"] == user]


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, ServerThread]]:
    recorder = Receiver()
    paths = ["/hook", "/flaky", "/down", "/redirect", "/redirected", "/private"]
    app = Starlette(routes=[Route(p, recorder.handle, methods=["POST"]) for p in paths])
    with ServerThread(app) as server:
        yield recorder, server


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


def hook_settings(fake_url: str, receiver_url: str, storage: Path) -> Settings:
    loopback = {"secret": SECRET, "allow_private": True, "timeout_s": 5}
    return Settings.from_dict(
        {
            "model_list": [fake_deployment(fake_url)],
            "memory": {
                "storage_uri": str(storage),
                "extraction_model": "fake-model",
                "queue": {
                    "backoff_base_s": 0.05,
                    "backoff_max_s": 0.2,
                    "max_attempts": 3,
                    "poll_s": 0.05,
                    "shutdown_grace_s": 1,
                },
            },
            "webhooks": [
                {"url": receiver_url + "/hook", **loopback, "name": "main"},
                {"url": receiver_url + "/flaky", **loopback},
                {"url": receiver_url + "/down", **loopback, "events": ["memory.updated"]},
                {"url": receiver_url + "/redirect", **loopback, "events": ["memory.deleted"]},
                # Loopback without allow_private: refused at connect, never retried.
                {"url": receiver_url + "/private", "secret": OTHER_SECRET,
                 "events": ["memory.deleted"]},
            ],
        }
    )  # fmt: skip


@pytest.fixture(scope="module")
def proxy(
    fake: FakeUpstream,
    receiver: tuple[Receiver, ServerThread],
    tmp_path_factory: pytest.TempPathFactory,
    local_embedder: Any,
) -> Iterator[tuple[ServerThread, Path]]:
    storage = tmp_path_factory.mktemp("webhooks") / "db"
    settings = hook_settings(fake.url, receiver[1].base_url, storage)
    memory = AsyncMemory(settings.memory.core_config(), embedder=SharedEmbedder(local_embedder))
    with ServerThread(create_app(settings, memory=memory)) as server:
        yield server, storage / "queue.sqlite3"


def queue_rows(queue_file: Path) -> list[tuple[str, str, int, str | None, bytes]]:
    with contextlib.closing(sqlite3.connect(queue_file)) as conn:
        return conn.execute("SELECT id, status, attempts, last_error, payload FROM jobs").fetchall()


def idle(server: ServerThread) -> bool:
    queue = httpx.get(server.base_url + "/ready").json()["queue"]
    return bool(queue["pending"] == 0 and queue["leased"] == 0)


def user() -> str:
    return f"wh-{uuid.uuid4().hex[:10]}"


def test_learned_add_arrives_once_signed(
    proxy: tuple[ServerThread, Path], receiver: tuple[Receiver, ServerThread], fake: FakeUpstream
) -> None:
    server, _ = proxy
    recorder, _ = receiver
    who = user()
    client = openai.OpenAI(base_url=server.url, api_key="sk-x", max_retries=0, timeout=30)
    client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "I live in Lisbon and I have a dog named Rex"}],
        extra_body={"user_id": who},
    )
    listed = lambda: httpx.get(server.base_url + "/v1/memories", params={"user_id": who}).json()  # noqa: E731
    wait_for(lambda: len(listed()["results"]) == 2, timeout=30)
    memories = {m["id"]: m["memory"] for m in listed()["results"]}
    wait_for(lambda: len(recorder.of_user("/flaky", who)) == 2 and idle(server), timeout=30)
    events = recorder.of_user("/hook", who)
    assert sorted(e["data"]["id"] for e in events) == sorted(memories)  # each ADD once
    assert {e["type"] for e in events} == {"memory.added"}
    assert {e["data"]["memory"] for e in events} == set(memories.values())
    assert {e["data"]["source"] for e in events} == {"learning"}
    for path, headers, body in recorder.requests:
        if path != "/hook" or orjson.loads(body)["data"]["user_id"] != who:
            continue
        assert headers["content-type"] == "application/json"
        assert headers["x-memproxy-event"] == "memory.added"
        assert headers["x-memproxy-event-id"] == orjson.loads(body)["id"]
        assert headers["x-memproxy-delivery-attempt"] == "1"
        assert verify(SECRET.encode(), headers["x-memproxy-signature"], body)
        assert not verify(OTHER_SECRET.encode(), headers["x-memproxy-signature"], body)
        stamp = int(headers["x-memproxy-signature"].split(",")[0][2:])
        assert abs(stamp - time.time()) < 60
    # The flaky endpoint got each event on its third try: same id, a fresh signature each time.
    flaky = [(h, b) for p, h, b in recorder.requests if p == "/flaky" and who in b.decode()]
    assert len(flaky) == 6
    by_event: dict[str, list[str]] = {}
    for headers, body in flaky:
        assert verify(SECRET.encode(), headers["x-memproxy-signature"], body)
        by_event.setdefault(headers["x-memproxy-event-id"], []).append(
            headers["x-memproxy-delivery-attempt"]
        )
    assert sorted(by_event.values()) == [["1", "2", "3"], ["1", "2", "3"]]


def test_rest_and_mcp_writes_in_order(
    proxy: tuple[ServerThread, Path], receiver: tuple[Receiver, ServerThread]
) -> None:
    server, queue_file = proxy
    recorder, _ = receiver
    who = user()
    api = httpx.Client(base_url=server.base_url, timeout=30)
    added = api.post(
        "/v1/memories", json={"messages": "I drink oolong", "user_id": who, "infer": False}
    )  # noqa: E501
    memory_id = added.json()["results"][0]["id"]
    assert api.put(f"/v1/memories/{memory_id}", json={"text": "I drink sencha"}).status_code == 200
    assert api.delete(f"/v1/memories/{memory_id}").status_code == 200

    async def mcp_add() -> None:
        http = httpx2.AsyncClient(timeout=30)
        async with Client(streamable_http_client(server.base_url + "/mcp", http_client=http)) as c:
            result = await c.call_tool("add_memory", {"text": "I play go", "user_id": who})
            assert not result.is_error

    asyncio.run(mcp_add())
    expected = [
        ("memory.added", "I drink oolong", None, "api"),
        ("memory.updated", "I drink sencha", "I drink oolong", "api"),
        ("memory.deleted", "I drink sencha", None, "api"),
        ("memory.added", "I play go", None, "mcp"),
    ]
    shape = lambda events: [  # noqa: E731
        (e["type"], e["data"]["memory"], e["data"]["previous_memory"], e["data"]["source"])
        for e in events
    ]
    wait_for(lambda: len(recorder.of_user("/flaky", who)) == 4 and idle(server), timeout=30)
    assert shape(recorder.of_user("/hook", who)) == expected
    # Retries hold back only the events behind them, to that endpoint: the order stays.
    assert shape(recorder.of_user("/flaky", who)) == expected
    assert len({e["id"] for e in recorder.of_user("/hook", who)}) == 4

    # /down takes updates and always fails: dead after max_attempts (3), with its error.
    # /redirect answers 307: never followed, dead too. /private is loopback without
    # allow_private: refused at connect, dead at once, nothing sent.
    rows = {row[0]: row for row in queue_rows(queue_file) if who in row[4].decode()}
    dead = {orjson.loads(row[4])["endpoint"]: row for row in rows.values() if row[1] == "dead"}
    configured = hook_settings("", receiver[1].base_url, Path()).webhooks
    ids = {e.url.rsplit("/", 1)[1]: e.endpoint_id for e in configured}
    assert set(dead) == {ids["down"], ids["redirect"], ids["private"]}
    assert dead[ids["down"]][2] == 3 and "HTTP 500" in dead[ids["down"]][3]
    assert dead[ids["redirect"]][2] == 3 and "HTTP 307" in dead[ids["redirect"]][3]
    assert dead[ids["private"]][2] == 1 and "private address" in dead[ids["private"]][3]
    assert not recorder.events("/redirected", delivered=False)
    assert not recorder.events("/private", delivered=False)
    assert len(recorder.of_user("/down", who, delivered=False)) == 3
    assert all(SECRET not in row[4].decode() for row in queue_rows(queue_file))
    assert SqliteJobStore(queue_file).retry_dead(dead[ids["down"]][0]) == 1  # retryable


def test_a_failing_endpoint_never_blocks_learning(
    proxy: tuple[ServerThread, Path], fake: FakeUpstream
) -> None:
    """A user's webhook retries run in their own scopes: the user's next exchange is learned
    while deliveries to /down are still retrying."""
    server, _ = proxy
    who = user()
    api = httpx.Client(base_url=server.base_url, timeout=30)
    added = api.post("/v1/memories", json={"messages": "I cycle", "user_id": who, "infer": False})
    memory_id = added.json()["results"][0]["id"]
    api.put(f"/v1/memories/{memory_id}", json={"text": "I cycle daily"})  # /down will fail it
    client = openai.OpenAI(base_url=server.url, api_key="sk-x", max_retries=0, timeout=30)
    client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "I work as a carpenter"}],
        extra_body={"user_id": who},
    )

    def texts() -> set[str]:
        listed = api.get("/v1/memories", params={"user_id": who}).json()["results"]
        return {m["memory"] for m in listed}

    wait_for(lambda: "User works as a carpenter" in texts(), timeout=30)


def test_secrets_never_in_apis_or_logs(
    proxy: tuple[ServerThread, Path], caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = proxy
    caplog.set_level("DEBUG")
    who = user()
    httpx.post(
        server.base_url + "/v1/memories",
        json={"messages": "I sail", "user_id": who, "infer": False},
    )
    wait_for(lambda: idle(server), timeout=30)
    for path in ("/ready", "/metrics", "/openapi.json", "/v1/auth/me"):
        assert SECRET not in httpx.get(server.base_url + path).text
    assert SECRET not in caplog.text and OTHER_SECRET not in caplog.text
    assert "/hook" not in caplog.text  # logs name the endpoint by scheme://host or its name


async def test_learner_refuses_kinds_it_has_no_handler_for(amem: AsyncMemory) -> None:
    """A job of a kind this process cannot run is a permanent error (a dead letter saying so),
    never run as a learning job; a registered kind goes to its handler."""
    from memory_core.errors import InvalidInput
    from memory_core.queue import Job
    from proxy.learning import Learner
    from proxy.metrics import Metrics

    async def deliver(job: Job) -> dict[str, Any]:
        return {"delivered": job.id}

    learner = Learner(amem, None, Metrics(), kinds={"webhook": deliver})  # type: ignore[arg-type]
    assert await learner.handle(Job("j1", "s", {"kind": "webhook"}, 1, 0.0)) == {"delivered": "j1"}
    with pytest.raises(InvalidInput, match="no handler for 'newer-kind' jobs"):
        await learner.handle(Job("j2", "s", {"kind": "newer-kind"}, 1, 0.0))


async def test_an_unreachable_queue_loses_the_events_not_the_write(amem: AsyncMemory) -> None:
    """Events are queued after the write: a queue that stays down (past enqueue_retry_s)
    loses them — counted, one wait, not one per event — and the write stands."""
    from memory_core.config import QueueConfig
    from memory_core.errors import QueueStoreError
    from memory_core.queue import LearningQueue
    from proxy.change_events import ChangeEvents
    from proxy.metrics import Metrics

    class DownStore:
        backend, local, calls = "sqlite", True, 0

        def enqueue(self, job_id: str, scope_key: str, payload: dict[str, Any]) -> bool:
            self.calls += 1
            raise QueueStoreError("queue database: disk I/O error")

        def close(self) -> None:
            pass

    store = DownStore()
    queue = LearningQueue(store, None, QueueConfig(enqueue_retry_s=0))  # type: ignore[arg-type]
    metrics = Metrics()
    hooks = [endpoint("https://a.example/h"), endpoint("https://b.example/h")]
    events = ChangeEvents(queue, metrics, webhooks=hooks, profiles=True)
    amem.watch(events)
    try:
        added = await amem.add(["I like tea", "I own a bike"], user_id="down", infer=False)
    finally:
        amem.unwatch(events)
        await queue.stop()
    assert len(added["results"]) == 2
    assert len((await amem.get_all(user_id="down"))["results"]) == 2
    assert store.calls == 1
    lost = metrics.registry.get_sample_value
    assert lost("memproxy_change_events_lost_total", {"kind": "webhook"}) == 4
    assert lost("memproxy_change_events_lost_total", {"kind": "profile"}) == 1


def test_cli_local_writes_wait_in_the_queue_for_the_proxy(
    receiver: tuple[Receiver, ServerThread], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`memproxy memories add --config` on the data dir queues its events in the proxy's
    queue; the proxy, once it runs on that config, delivers them."""
    import yaml

    from proxy.cli import main
    from tests.conftest import HashEmbedder

    recorder, server = receiver
    who = user()
    config = tmp_path / "proxy.yaml"
    hook = {"url": server.base_url + "/hook", "secret": SECRET, "allow_private": True}
    memory_section = {"storage_uri": str(tmp_path / "db"), "queue": {"poll_s": 0.05}}
    config.write_text(yaml.safe_dump({"memory": memory_section, "webhooks": [hook]}))
    monkeypatch.setattr(
        "memory_core.memory_resources.create_embedder", lambda config: HashEmbedder()
    )
    assert main(["memories", "add", "--config", str(config), "--user", who, "I keep bees"]) == 0
    assert not recorder.of_user("/hook", who)  # nobody delivers yet
    settings = Settings.load(config)
    memory = AsyncMemory(settings.memory.core_config(), embedder=HashEmbedder())
    with ServerThread(create_app(settings, memory=memory)):
        wait_for(lambda: len(recorder.of_user("/hook", who)) == 1, timeout=30)
    event = recorder.of_user("/hook", who)[0]
    assert event["type"] == "memory.added" and event["data"]["memory"] == "I keep bees"
