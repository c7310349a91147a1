"""The MCP server through the official ``mcp`` client SDK: Streamable HTTP at ``/mcp`` on a
real uvicorn server, and ``memproxy mcp`` on stdio as a subprocess."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
import yaml
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from memory_core import AsyncMemory
from proxy.app import create_app
from proxy.auth import hash_key
from proxy.settings import Settings
from tests.conftest import SharedEmbedder
from tests.fake_upstream import FakeUpstream
from tests.servers import ServerThread, metric, wait_for

KEYS = {"alice": "sk-mcp-alice", "bob": "sk-mcp-bob", "team": "sk-mcp-team"}
SISTER = "I'm vegetarian and my sister lives in Lisbon"
REPO = Path(__file__).resolve().parent.parent


def settings_for(
    fake_url: str, storage: str, models: tuple[str, ...] = ("fake-model",), **extra: Any
) -> Settings:
    deployments = [
        {
            "model_name": name,
            "litellm_params": {
                "model": "openai/fake-model",
                "api_base": fake_url,
                "api_key": "sk-f",
            },
        }
        for name in models
    ]
    return Settings.from_dict(
        {
            "model_list": deployments,
            "memory": {
                "storage_uri": storage,
                "extraction_model": "fake-model",
                "queue": {"backoff_base_s": 0.05, "shutdown_grace_s": 1},
            },
            "auth": {
                "keys": [
                    {"name": "a", "key_sha256": hash_key(KEYS["alice"]), "users": ["alice"]},
                    {"name": "b", "key_sha256": hash_key(KEYS["bob"]), "users": ["bob"]},
                    {"name": "t", "key_sha256": hash_key(KEYS["team"]), "users": ["*"]},
                ]
            },
            **extra,
        }
    )


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@contextmanager
def mcp_server(fake: FakeUpstream, storage: str, embedder: Any) -> Iterator[ServerThread]:
    """A real server with the three keys, public metrics and the shared embedder."""
    # gpt-4o-mini: the model docs/mcp.md's Agents SDK snippet names (tests/test_mcp_clients.py).
    settings = settings_for(
        fake.url, storage, models=("fake-model", "gpt-4o-mini"), server={"public_metrics": True}
    )
    memory = AsyncMemory(settings.memory.core_config(), embedder=SharedEmbedder(embedder))
    with ServerThread(create_app(settings, memory=memory)) as server:
        yield server


@pytest.fixture(scope="module")
def srv(fake: FakeUpstream, tmp_path_factory: Any, local_embedder: Any) -> Iterator[ServerThread]:
    with mcp_server(fake, str(tmp_path_factory.mktemp("mcp") / "db"), local_embedder) as server:
        yield server


Session = Callable[[Client], Awaitable[Any]]


def over_http(srv: ServerThread, key: str | None, run: Session, **headers: str) -> Any:
    if key is not None:
        headers["Authorization"] = f"Bearer {KEYS.get(key, key)}"

    async def main() -> Any:
        http = httpx2.AsyncClient(headers=headers, timeout=60)
        async with Client(streamable_http_client(srv.base_url + "/mcp", http_client=http)) as c:
            return await run(c)

    return asyncio.run(main())


def text_of(result: Any) -> str:
    return str(result.content[0].text)


async def roundtrip(c: Client, user_id: str | None = None) -> dict[str, Any]:
    """add → search → update → history → delete, returning what each step answered."""
    who = {"user_id": user_id} if user_id else {}
    out: dict[str, Any] = {"tools": [t.name for t in (await c.list_tools()).tools]}
    added = await c.call_tool("add_memory", {"text": "My favourite tea is sencha", **who})
    assert not added.is_error, text_of(added)
    memory_id = added.structured_content["results"][0]["id"]
    out["search"] = await c.call_tool("search_memories", {"query": "favourite tea", **who})
    out["update"] = await c.call_tool(
        "update_memory", {"id": memory_id, "text": "My favourite tea is gyokuro"}
    )
    out["history"] = await c.call_tool("memory_history", {"id": memory_id})
    out["list"] = await c.call_tool("list_memories", {"limit": 5, **who})
    out["delete"] = await c.call_tool("delete_memory", {"id": memory_id})
    out["after"] = await c.call_tool("search_memories", {"query": "favourite tea", **who})
    out["id"] = memory_id
    return out


def check_roundtrip(out: dict[str, Any]) -> None:
    assert set(out["tools"]) == {
        "search_memories",
        "list_memories",
        "add_memory",
        "update_memory",
        "delete_memory",
        "memory_history",
    }
    assert "sencha" in text_of(out["search"])
    assert out["search"].structured_content["results"][0]["id"] == out["id"]
    assert "gyokuro" in text_of(out["update"])
    events = [h["event"] for h in out["history"].structured_content["results"]]
    assert events == ["ADD", "UPDATE"]
    assert [h["source"] for h in out["history"].structured_content["results"]] == ["mcp", "mcp"]
    assert "gyokuro" in text_of(out["list"])
    assert not out["delete"].is_error
    assert all(r["id"] != out["id"] for r in out["after"].structured_content["results"])


def test_http_roundtrip_for_one_user(srv: ServerThread) -> None:
    check_roundtrip(over_http(srv, "alice", roundtrip))


def test_multi_user_key_names_the_user(srv: ServerThread) -> None:
    check_roundtrip(over_http(srv, "team", lambda c: roundtrip(c, "carol")))

    async def unnamed(c: Client) -> Any:
        return await c.call_tool("search_memories", {"query": "tea"})

    result = over_http(srv, "team", unnamed)
    assert result.is_error and "must name a user_id" in text_of(result)


def test_another_users_key_sees_nothing(srv: ServerThread) -> None:
    async def plant(c: Client) -> str:
        added = await c.call_tool("add_memory", {"text": "My locker code is 4417"})
        return str(added.structured_content["results"][0]["id"])

    alice_id = over_http(srv, "alice", plant)

    async def snoop(c: Client) -> dict[str, Any]:
        absent = "00000000-0000-0000-0000-000000000000"
        return {
            "search": await c.call_tool("search_memories", {"query": "locker code"}),
            "list": await c.call_tool("list_memories", {}),
            "as_alice": await c.call_tool(
                "search_memories", {"query": "locker code", "user_id": "alice"}
            ),
            "get": [
                await c.call_tool(tool, args)
                for tool, args in [
                    ("memory_history", {"id": alice_id}),
                    ("update_memory", {"id": alice_id, "text": "pwned"}),
                    ("delete_memory", {"id": alice_id}),
                    ("memory_history", {"id": absent}),
                ]
            ],
        }

    seen = over_http(srv, "bob", snoop)
    assert seen["search"].structured_content["results"] == []
    assert "4417" not in text_of(seen["list"])
    assert seen["as_alice"].is_error and "4417" not in text_of(seen["as_alice"])
    messages = [text_of(r).partition(": ")[2] for r in seen["get"]]
    assert all(r.is_error for r in seen["get"])
    # A foreign id answers exactly like an absent one.
    assert [m.replace(alice_id, "ID") for m in messages[:3]] == [
        messages[3].replace("00000000-0000-0000-0000-000000000000", "ID")
    ] * 3

    async def still_there(c: Client) -> Any:
        return await c.call_tool("memory_history", {"id": alice_id})

    history = over_http(srv, "alice", still_there)
    assert [h["event"] for h in history.structured_content["results"]] == ["ADD"]


HOSTILE: list[tuple[str, dict[str, Any]]] = [
    ("search_memories", {"query": "x", "user_id": "bob"}),
    ("search_memories", {"query": "x", "user_id": "alice' OR user_id != '"}),
    ("search_memories", {"query": "x", "user_id": {"$ne": "alice"}}),
    ("search_memories", {"query": "x" * 20_000}),
    ("search_memories", {"query": "x", "limit": 10**9}),
    ("list_memories", {"cursor": "not-a-cursor"}),
    ("list_memories", {"limit": -1}),
    ("add_memory", {"text": "y" * 20_000}),
    ("add_memory", {"text": "hi", "messages": [{"role": "user", "content": "hi"}]}),
    ("add_memory", {}),
    ("add_memory", {"messages": [{"role": "user", "content": "hi"}] * 500}),
    ("add_memory", {"messages": [{"role": 1, "content": {"a": "b"}}]}),
    ("update_memory", {"id": "x" * 5000, "text": "z"}),
    ("update_memory", {"id": "' OR 1=1 --", "text": "z"}),
    ("delete_memory", {"id": "\x00"}),
    ("memory_history", {"id": ""}),
]


def test_hostile_arguments_are_tool_errors(srv: ServerThread) -> None:
    async def attack(c: Client) -> list[Any]:
        return [await c.call_tool(tool, args) for tool, args in HOSTILE]

    results = over_http(srv, "alice", attack)
    for (tool, args), result in zip(HOSTILE, results, strict=True):
        assert result.is_error, (tool, args, text_of(result))
        assert "Traceback" not in text_of(result) and "SELECT" not in text_of(result)
    # The server still answers, and bob's key still sees nothing of alice's.
    assert (
        over_http(srv, "bob", lambda c: c.call_tool("list_memories", {})).structured_content[
            "results"
        ]
        == []
    )


def test_http_auth_and_browser_rules(srv: ServerThread) -> None:
    init = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    accept = {"Accept": "application/json, text/event-stream"}
    assert httpx.post(srv.base_url + "/mcp", json=init, headers=accept).status_code == 401
    wrong = {**accept, "Authorization": "Bearer sk-wrong"}
    assert httpx.post(srv.base_url + "/mcp", json=init, headers=wrong).status_code == 401
    hostile = {**accept, "Authorization": f"Bearer {KEYS['alice']}", "Origin": "https://evil.test"}
    answer = httpx.post(srv.base_url + "/mcp", json=init, headers=hostile)
    assert answer.status_code == 403 and "origin" in answer.text.lower()


def test_open_mode_keeps_loopback_and_origin_rules(fake: FakeUpstream, tmp_path: Path) -> None:
    settings = settings_for(fake.url, str(tmp_path / "db"))
    settings.auth.keys.clear()
    with ServerThread(create_app(settings)) as server:
        url = server.base_url + "/mcp"
        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        accept = {"Accept": "application/json, text/event-stream"}
        evil = httpx.post(url, json=body, headers={**accept, "Origin": "http://evil.test"})
        assert evil.status_code == 403
        rebound = httpx.post(url, json=body, headers={**accept, "Host": "attacker.test"})
        assert rebound.status_code == 403


def test_config_limits_the_tools(fake: FakeUpstream, tmp_path: Path) -> None:
    settings = settings_for(fake.url, str(tmp_path / "db"), mcp={"read_only": True})
    with ServerThread(create_app(settings)) as server:

        async def names(c: Client) -> list[str]:
            return sorted(t.name for t in (await c.list_tools()).tools)

        listed = over_http(server, "alice", names)
        assert listed == ["list_memories", "memory_history", "search_memories"]
        result = over_http(server, "alice", lambda c: c.call_tool("add_memory", {"text": "x"}))
        assert result.is_error
    disabled = settings_for(fake.url, str(tmp_path / "db2"), mcp={"enabled": False})
    with ServerThread(create_app(disabled)) as server:
        assert httpx.post(server.base_url + "/mcp", json={}).status_code == 404


def test_chat_learned_memory_is_found_by_mcp(srv: ServerThread) -> None:
    client = openai.OpenAI(base_url=srv.url, api_key=KEYS["bob"], max_retries=0, timeout=30)
    client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": SISTER}]
    )

    def found() -> bool:
        query = {"query": "sister"}
        result = over_http(srv, "bob", lambda c: c.call_tool("search_memories", query))
        return "Lisbon" in text_of(result)

    wait_for(found)


def test_mcp_memory_is_recalled_into_chat_and_infer_is_queued(srv: ServerThread) -> None:
    async def add(c: Client) -> list[Any]:
        verbatim = await c.call_tool(
            "add_memory", {"text": "My dog is a corgi named Biscuit", "user_id": "dora"}
        )
        learned = await c.call_tool(
            "add_memory",
            {"messages": [{"role": "user", "content": SISTER}], "infer": True, "user_id": "dora"},
        )
        return [verbatim, learned]

    enqueued = metric(srv, "memproxy_learning_enqueued_total")
    verbatim, learned = over_http(srv, "team", add)
    assert metric(srv, "memproxy_learning_enqueued_total") == enqueued + 1
    assert not verbatim.is_error and learned.structured_content["queued"] is True
    key = {"Authorization": f"Bearer {KEYS['team']}"}
    client = openai.OpenAI(base_url=srv.url, api_key=KEYS["team"], max_retries=0, timeout=30)
    reply = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "What is my dog called?"}],
        extra_headers={"X-User-Id": "dora"},
    )
    assert "Biscuit" in (reply.choices[0].message.content or "")

    def learned_via_rest() -> bool:
        listed = httpx.get(srv.base_url + "/v1/memories", params={"user_id": "dora"}, headers=key)
        return "Lisbon" in listed.text

    wait_for(learned_via_rest)
    listed = httpx.get(srv.base_url + "/v1/memories", params={"user_id": "dora"}, headers=key)
    lisbon = next(m for m in listed.json()["results"] if "Lisbon" in m["memory"])
    history = httpx.get(srv.base_url + f"/v1/memories/{lisbon['id']}/history", headers=key)
    assert [h["source"] for h in history.json()] == ["mcp"]


async def test_history_source_column_is_added_to_old_data_dirs(tmp_path: Path) -> None:
    import lancedb
    import pyarrow as pa

    from memory_core import MemoryConfig
    from memory_core.store_schema import HISTORY, HISTORY_SCHEMA
    from tests.conftest import HashEmbedder

    uri = str(tmp_path / "old")
    old_schema = pa.schema([f for f in HISTORY_SCHEMA if f.name != "source"])
    db = await lancedb.connect_async(uri)
    await db.create_table(HISTORY, schema=old_schema)
    memory = AsyncMemory(MemoryConfig(storage_uri=uri), embedder=HashEmbedder())
    await memory.open()
    try:
        added = await memory.add("I live in Porto", user_id="u", infer=False)
        memory_id = added["results"][0]["id"]
        await memory.update(memory_id, "I live in Braga", source="mcp")
        history = await memory.history(memory_id)
        assert [(h["event"], h["source"]) for h in history] == [("ADD", None), ("UPDATE", "mcp")]
    finally:
        await memory.close()


def write_stdio_config(fake: FakeUpstream, tmp_path: Path, **memory: Any) -> Path:
    """A config file for ``memproxy mcp --config``: the fake's embeddings (no model to load in
    the subprocess) and LLM, one data dir under ``tmp_path``."""
    deployment = {
        "model_name": "fake-model",
        "litellm_params": {"model": "openai/fake-model", "api_base": fake.url, "api_key": "sk-f"},
    }
    embedder = {
        "provider": "litellm",
        "model": "openai/fake-embed",
        "api_base": fake.url,
        "api_key": "sk-f",
        "dimensions": 64,
    }
    config = {
        "model_list": [deployment],
        "memory": {
            "storage_uri": str(tmp_path / "db"),
            "extraction_model": "fake-model",
            "embedder": embedder,
            **memory,
        },
    }
    path = tmp_path / "memproxy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_stdio_roundtrip_and_isolation(fake: FakeUpstream, tmp_path: Path) -> None:
    path = write_stdio_config(fake, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def stdio(*args: str) -> StdioServerParameters:
        command = ["-m", "proxy.cli", "mcp", "--config", str(path), *args]
        return StdioServerParameters(command=sys.executable, args=command, env=env)

    async def main() -> tuple[dict[str, Any], Any, Any]:
        async with Client(stdio("--user", "alice")) as c:
            out = await roundtrip(c)
            await c.call_tool("add_memory", {"text": "My locker code is 4417"})
        async with Client(stdio("--user", "bob")) as c:
            snoop = await c.call_tool("search_memories", {"query": "locker", "user_id": "alice"})
            mine = await c.call_tool("list_memories", {})
        return out, snoop, mine

    out, snoop, mine = asyncio.run(main())
    check_roundtrip(out)
    assert snoop.is_error and "4417" not in text_of(snoop)
    assert mine.structured_content["results"] == []


def test_stdio_relays_to_a_running_server(srv: ServerThread) -> None:
    def relay(key: str) -> StdioServerParameters:
        env = {**os.environ, "PYTHONPATH": str(REPO), "MEMPROXY_API_KEY": KEYS[key]}
        args = ["-m", "proxy.cli", "mcp", "--url", srv.base_url + "/mcp"]
        return StdioServerParameters(command=sys.executable, args=args, env=env)

    async def main() -> tuple[dict[str, Any], Any]:
        async with Client(relay("alice")) as c:
            out = await roundtrip(c)
        async with Client(relay("bob")) as c:
            snoop = await c.call_tool("search_memories", {"query": "tea", "user_id": "alice"})
        return out, snoop

    out, snoop = asyncio.run(main())
    check_roundtrip(out)
    assert snoop.is_error and "may not act for user 'alice'" in text_of(snoop)


def test_add_memory_takes_expiration_and_immutable(srv: ServerThread) -> None:
    async def run(c: Client) -> list[Any]:
        fixed = await c.call_tool(
            "add_memory",
            {"text": "My seat at work is 4B", "immutable": True, "expiration_date": "2099-01-31"},
        )
        memory_id = fixed.structured_content["results"][0]["id"]
        refused = await c.call_tool("update_memory", {"id": memory_id, "text": "My seat is 9C"})
        expired = await c.call_tool(
            "add_memory", {"text": "My old seat was 1A", "expiration_date": "2020-01-01"}
        )
        found = await c.call_tool("search_memories", {"query": "my seat at work"})
        bad = await c.call_tool("add_memory", {"text": "x", "expiration_date": "31.01.2099"})
        queued = await c.call_tool("add_memory", {"text": "x", "infer": True, "immutable": True})
        return [memory_id, refused, expired, found, bad, queued]

    memory_id, refused, expired, found, bad, queued = over_http(srv, "alice", run)
    assert refused.is_error and "immutable" in text_of(refused)
    assert not expired.is_error
    texts = [r["memory"] for r in found.structured_content["results"]]
    assert "My seat at work is 4B" in texts and "My old seat was 1A" not in texts
    item = next(r for r in found.structured_content["results"] if r["id"] == memory_id)
    assert item["immutable"] is True and item["expiration_date"] == "2099-01-31"
    assert bad.is_error and "expiration_date" in text_of(bad)
    assert queued.is_error and "infer=false" in text_of(queued)
