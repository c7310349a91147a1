"""The learning log end to end, on both queue backends: chats through a real proxy (uvicorn,
the scripted fake LLM) are learned, and ``GET /v1/learning`` / ``memproxy queue log`` show
each job's facts and decisions (the memory touched, the text before, the model's reason);
a dead letter shows its error and attempts and is retried through the API; keys see only
their users' logs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import SharedEmbedder
from tests.fake_answers import SCRIPTED_REASONS
from tests.fake_upstream import FakeUpstream
from tests.learning_servers import KeyedProxy, keyed_config
from tests.queue_procs import run_cli, wait_drained, wait_until

MAX_ATTEMPTS = 2


@pytest.fixture
def setup(
    tmp_path: Path,
    fake_llm: FakeUpstream,
    embedder: SharedEmbedder,
    queue_backend: dict[str, Any],
) -> Iterator[tuple[KeyedProxy, FakeUpstream, Path]]:
    config = keyed_config(
        tmp_path / "proxy.yaml",
        fake_url=fake_llm.url,
        storage=tmp_path / "data",
        queue={"max_attempts": MAX_ATTEMPTS, "backoff_base_s": 0.05, **queue_backend},
    )
    with KeyedProxy(config, embedder) as proxy:
        yield proxy, fake_llm, config


def client(proxy: KeyedProxy, key: str) -> httpx.Client:
    return proxy.client(key)


def chat(proxy: KeyedProxy, user: str, text: str) -> None:
    proxy.chat(user, text)


def log_of(proxy: KeyedProxy, key: str, **params: Any) -> httpx.Response:
    with client(proxy, key) as c:
        return c.get("/v1/learning", params=params)


def test_learned_chats_show_their_facts_and_decisions(
    setup: tuple[KeyedProxy, FakeUpstream, Path],
) -> None:
    proxy, _fake, config = setup
    chat(proxy, "alice", "I live in Paris and I have a dog named Biscuit.")
    wait_drained(proxy, timeout_s=30)
    chat(proxy, "alice", "I moved to Berlin.")
    wait_drained(proxy, timeout_s=30)
    chat(proxy, "bob", "I play the trumpet.")
    wait_drained(proxy, timeout_s=30)

    r = log_of(proxy, "alice", user_id="alice")
    assert r.status_code == 200, r.text
    moved, first = r.json()["results"]  # newest first; bob's job is not in alice's log
    assert r.json()["next_cursor"] is None
    assert first["facts"] == ["User lives in Paris", "User has a dog named Biscuit"]
    assert (first["status"], first["kind"], first["attempts"], first["error"]) == (
        "applied",
        "learn",
        1,
        None,
    )
    assert [(d["event"], d["text"], d["origin"]) for d in first["decisions"]] == [
        ("ADD", "User lives in Paris", "extraction"),
        ("ADD", "User has a dog named Biscuit", "extraction"),
    ]
    with client(proxy, "alice") as c:
        stored = {m["id"]: m["memory"] for m in c.get("/v1/memories").json()["results"]}
    paris_id = first["decisions"][0]["memory_id"]
    assert paris_id in stored and first["result"]["applied"]["ADD"] == 2

    (update,) = [d for d in moved["decisions"] if d["event"] == "UPDATE"]
    assert update == {
        "event": "UPDATE",
        "memory_id": paris_id,
        "text": "User lives in Berlin",
        "old_memory": "User lives in Paris",
        "reason": SCRIPTED_REASONS["UPDATE"],
        "origin": "update_answer",
    }
    assert stored[paris_id] == "User lives in Berlin"
    assert moved["result"]["version"] == 2 and "facts" not in moved["result"]

    # Pages: one job each, then the end.
    page = log_of(proxy, "alice", limit=1).json()  # a bound key's default: its user
    assert [e["id"] for e in page["results"]] == [moved["id"]]
    rest = log_of(proxy, "alice", limit=1, cursor=page["next_cursor"]).json()
    assert [e["id"] for e in rest["results"]] == [first["id"]] and rest["next_cursor"] is None

    # Isolation: bob's key never sees alice's log; an admin sees everyone's.
    assert log_of(proxy, "bob", user_id="alice").status_code == 403
    assert [e["user_id"] for e in log_of(proxy, "bob").json()["results"]] == ["bob"]
    everyone = log_of(proxy, "admin").json()["results"]
    assert [e["user_id"] for e in everyone] == ["bob", "alice", "alice"]

    # The CLI reads the same log.
    listed = run_cli("log", "--user-id", "alice", "--json", config=config)
    assert listed.returncode == 0, listed.stderr
    assert [e["id"] for e in orjson.loads(listed.stdout)] == [moved["id"], first["id"]]
    text = run_cli("log", "--user-id", "alice", "--limit", "1", config=config).stdout
    assert "fact: User lives in Berlin" in text
    assert f"UPDATE {paris_id} 'User lives in Paris' -> 'User lives in Berlin'" in text
    assert f"(reason: {SCRIPTED_REASONS['UPDATE']})" in text and first["id"] not in text
    nobody = run_cli("log", "--user-id", "carol", config=config)
    assert nobody.returncode == 0 and nobody.stdout == "no finished learning jobs of carol\n"


def test_a_dead_letter_shows_its_error_and_is_retried_through_the_api(
    setup: tuple[KeyedProxy, FakeUpstream, Path],
) -> None:
    proxy, fake, _config = setup
    fake.set_failures(invalid_json_next=1_000)  # prose to every memory prompt: the job dies
    chat(proxy, "alice", "I work at Acme.")
    wait_until(lambda: proxy.ready()["queue"]["dead"] == 1, timeout_s=30, what="the dead job")
    (dead,) = log_of(proxy, "alice").json()["results"]
    assert (dead["status"], dead["attempts"], dead["result"]) == ("dead", MAX_ATTEMPTS, None)
    assert dead["error"].startswith("ExtractionError") and "no JSON object" in dead["error"]
    assert dead["facts"] == [] and dead["decisions"] == []

    # Only a key for the job's user (or an admin) may retry it; to others it does not exist.
    with client(proxy, "bob") as c:
        refused = c.post(f"/v1/learning/{dead['id']}/retry")
    assert refused.status_code == 404 and set(refused.json()) == {"error"}
    with client(proxy, "alice") as c:
        assert c.post(f"/v1/learning/{uuid.uuid4().hex}/retry").status_code == 404
        fake.set_failures(invalid_json_next=0)
        retried = c.post(f"/v1/learning/{dead['id']}/retry")
        assert retried.status_code == 202, retried.text
        assert retried.json() == {"id": dead["id"], "status": "pending"}
        wait_drained(proxy, timeout_s=30)
        assert c.post(f"/v1/learning/{dead['id']}/retry").status_code == 404  # no longer dead
        memories = [m["memory"] for m in c.get("/v1/memories").json()["results"]]
    assert memories == ["User works at Acme"]
    applied, died = log_of(proxy, "alice").json()["results"]
    assert applied["id"] == died["id"] == dead["id"]  # the retry is a new entry of the job
    assert applied["status"] == "applied" and applied["facts"] == ["User works at Acme"]
    assert applied["attempts"] == 1 and "no JSON object" in applied["error"]


BAD_PARAMS: list[dict[str, Any]] = [
    {"limit": 0},
    {"limit": 201},
    {"limit": "x"},
    {"cursor": "x" * 65},
    {"cursor": "not-a-cursor"},
    {"user_id": "bad id with spaces"},
]


def test_bad_parameters_are_400s_and_the_log_needs_a_key(
    setup: tuple[KeyedProxy, FakeUpstream, Path],
) -> None:
    proxy, _fake, _config = setup
    for params in BAD_PARAMS:
        r = log_of(proxy, "admin", **params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(f"{proxy.url}/v1/learning", timeout=10).status_code == 401
    r = httpx.post(f"{proxy.url}/v1/learning/x/retry", timeout=10)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
