"""docs/mcp.md's client snippets, run as written (placeholders replaced), the ``memory://``
resources, the bounded ``/mcp`` body, and ``memproxy mcp --config`` sharing a data dir with a
running server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from proxy.app import create_app
from proxy.settings import Settings
from tests.fake_upstream import FakeUpstream
from tests.servers import ServerThread, wait_for
from tests.test_mcp import (
    KEYS,
    REPO,
    SISTER,
    check_roundtrip,
    mcp_server,
    roundtrip,
    settings_for,
    text_of,
    write_stdio_config,
)

DOC = REPO / "docs" / "mcp.md"
DOC_PROXY = "http://127.0.0.1:8787"
DOC_KEY = "sk-my-bound-key"
DOC_CONFIG = "/home/me/memproxy.yaml"


def snippet(name: str) -> str:
    """The code block after ``<!-- run: name -->`` in docs/mcp.md."""
    found = re.search(
        rf"<!-- run: {re.escape(name)} -->\n```\w+\n(.*?)```", DOC.read_text(), re.DOTALL
    )
    assert found, f"docs/mcp.md has no snippet {name!r}"
    return found.group(1)


def memproxy_command(command: str) -> str:
    """The snippet's ``memproxy`` command: the console script installed next to this Python."""
    assert command == "memproxy"
    installed = Path(sys.executable).parent / "memproxy"
    found = str(installed) if installed.exists() else shutil.which("memproxy")
    assert found, "the memproxy console script is not installed"
    return found


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **(extra or {})}


def run_client(params: StdioServerParameters | tuple[str, dict[str, str]], session: Any) -> Any:
    """Run ``session(client)`` over stdio (params) or Streamable HTTP ((url, headers))."""

    async def main() -> Any:
        if isinstance(params, StdioServerParameters):
            async with Client(params) as c:
                return await session(c)
        url, headers = params
        http = httpx2.AsyncClient(headers=headers, timeout=60)
        async with Client(streamable_http_client(url, http_client=http)) as c:
            return await session(c)

    return asyncio.run(main())


def http_params(url: str, headers: dict[str, str], srv: ServerThread) -> tuple[str, Any]:
    real = {k: v.replace(DOC_KEY, KEYS["alice"]) for k, v in headers.items()}
    return url.replace(DOC_PROXY, srv.base_url), real


@pytest.fixture(scope="module")
def fake(fake_upstream: FakeUpstream) -> FakeUpstream:
    return fake_upstream  # the session's fake provider


@pytest.fixture(scope="module")
def srv(fake: FakeUpstream, tmp_path_factory: Any, local_embedder: Any) -> Iterator[ServerThread]:
    storage = str(tmp_path_factory.mktemp("mcp-clients") / "db")
    with mcp_server(fake, storage, local_embedder) as server:
        yield server


def shared_config(fake: FakeUpstream, tmp_path: Path) -> Path:
    """A config both a server and ``memproxy mcp --config`` open: one data dir, the fake's
    embeddings (so both processes embed alike), re-reading the table every time."""
    queue = {"backoff_base_s": 0.05, "shutdown_grace_s": 1}
    return write_stdio_config(fake, tmp_path, read_consistency_interval_s=0, queue=queue)


def claude_desktop(name: str, replace: dict[str, str], env: dict[str, str]) -> Any:
    entry = json.loads(snippet(name))["mcpServers"]["memproxy"]
    # Whole arguments only: "me" is the user, not the "me" in "/home/me/".
    args = [replace.get(a, a) for a in entry["args"]]
    for placeholder in (DOC_PROXY, DOC_KEY):
        args = [a.replace(placeholder, replace.get(placeholder, placeholder)) for a in args]
    extra = {k: replace.get(v, v) for k, v in entry.get("env", {}).items()}
    return StdioServerParameters(
        command=memproxy_command(entry["command"]), args=args, env=child_env({**env, **extra})
    )


def test_claude_desktop_config_snippet_runs(fake: FakeUpstream, tmp_path: Path) -> None:
    config = shared_config(fake, tmp_path)
    params = claude_desktop("claude-desktop-config", {DOC_CONFIG: str(config), "me": "alice"}, {})
    assert params.args[-2:] == ["--user", "alice"]
    check_roundtrip(run_client(params, roundtrip))


def test_claude_desktop_url_snippet_runs(srv: ServerThread) -> None:
    params = claude_desktop(
        "claude-desktop-url", {DOC_PROXY: srv.base_url, DOC_KEY: KEYS["alice"]}, {}
    )
    assert params.args == ["mcp", "--url", srv.base_url + "/mcp"]
    assert params.env is not None and params.env["MEMPROXY_API_KEY"] == KEYS["alice"]
    check_roundtrip(run_client(params, roundtrip))


def test_cursor_and_vscode_snippets_run(srv: ServerThread) -> None:
    cursor = json.loads(snippet("cursor"))["mcpServers"]["memproxy"]
    vscode = json.loads(snippet("vscode"))["servers"]["memproxy"]
    assert vscode["type"] == "http"
    for entry in (cursor, vscode):
        check_roundtrip(run_client(http_params(entry["url"], entry["headers"], srv), roundtrip))


def test_openai_agents_sdk_snippet_runs(srv: ServerThread, fake: FakeUpstream) -> None:
    add = {"text": SISTER}
    alice = (srv.base_url + "/mcp", {"Authorization": f"Bearer {KEYS['alice']}"})
    added = run_client(alice, lambda c: c.call_tool("add_memory", add))
    assert not added.is_error, text_of(added)
    script = snippet("openai-agents")
    question = '"Where does my sister live?"'
    assert question in script and DOC_PROXY in script and DOC_KEY in script
    # The fake model calls a tool only when asked to in so many words.
    script = (
        script.replace(DOC_PROXY, srv.base_url)
        .replace(DOC_KEY, KEYS["alice"])
        .replace(question, repr('Call tool search_memories {"query": "where does my sister live"}'))
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("TOOL RESULT: - [") and "Lisbon" in done.stdout, done.stdout
    # The tool result the agent sent back came from memproxy's search over MCP.
    tool_turns = [
        m
        for request in fake.requests_of("chat")
        for m in request.messages
        if m.get("role") == "tool" and "Lisbon" in str(m.get("content"))
    ]
    assert tool_turns


def test_resources_are_templates_read_by_the_tools_rules(srv: ServerThread) -> None:
    async def alice_side(c: Client) -> dict[str, Any]:
        added = await c.call_tool("add_memory", {"text": "My bike is a blue Brompton"})
        memory_id = added.structured_content["results"][0]["id"]
        templates = await c.list_resource_templates()
        mine = await c.read_resource("memory://users/alice/memories")
        one = await c.read_resource(f"memory://memories/{memory_id}")
        return {"id": memory_id, "templates": templates, "mine": mine, "one": one}

    alice = (srv.base_url + "/mcp", {"Authorization": f"Bearer {KEYS['alice']}"})
    out = run_client(alice, alice_side)
    uris = sorted(t.uri_template for t in out["templates"].resource_templates)
    assert uris == ["memory://memories/{memory_id}", "memory://users/{user_id}/memories"]
    listed = json.loads(out["mine"].contents[0].text)
    assert any(m["id"] == out["id"] for m in listed["results"])
    assert {m["user_id"] for m in listed["results"]} == {"alice"}
    one = json.loads(out["one"].contents[0].text)
    assert one["id"] == out["id"] and "Brompton" in one["memory"]

    bob = (srv.base_url + "/mcp", {"Authorization": f"Bearer {KEYS['bob']}"})
    hostile = [
        "memory://users/alice/memories",
        f"memory://memories/{out['id']}",
        "memory://memories/00000000-0000-0000-0000-000000000000",
        "memory://users/alice' OR '1'='1/memories",
        "memory://memories/" + "x" * 5000,
    ]

    async def bob_side(c: Client) -> list[str]:
        errors = []
        for uri in hostile:
            with pytest.raises(MCPError) as caught:
                await c.read_resource(uri)
            errors.append(str(caught.value))
        return errors

    errors = run_client(bob, bob_side)
    assert "may not act for user 'alice'" in errors[0]
    # Another user's memory reads exactly like an absent one.
    assert errors[1].replace(out["id"], "ID") == errors[2].replace(
        "00000000-0000-0000-0000-000000000000", "ID"
    )
    assert all("Brompton" not in e and "Traceback" not in e for e in errors)


def test_mcp_body_is_bounded_in_size_and_time(fake: FakeUpstream, tmp_path: Path) -> None:
    settings = settings_for(
        fake.url,
        str(tmp_path / "db"),
        server={"limits": {"body_timeout_s": 0.5, "max_api_body_bytes": 10_000}},
    )
    with ServerThread(create_app(settings)) as server:
        headers = {
            "Authorization": f"Bearer {KEYS['alice']}",
            "Accept": "application/json, text/event-stream",
        }
        big = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": "y" * 20_000}}
        assert httpx.post(server.base_url + "/mcp", json=big, headers=headers).status_code == 413
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        ok = httpx.post(server.base_url + "/mcp", json=ping, headers=headers)
        assert ok.status_code == 200 and ok.json()["id"] == 1
        host, port = server.base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + f"Authorization: Bearer {KEYS['alice']}\r\n".encode()
                + b'Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{"jsonrpc"'
            )
            started = time.monotonic()
            answer = sock.recv(4096).decode()
        assert answer.startswith("HTTP/1.1 408"), answer
        assert time.monotonic() - started < 5
        assert "body_timeout" in answer


def test_stdio_shares_a_data_dir_with_a_running_server(fake: FakeUpstream, tmp_path: Path) -> None:
    path = shared_config(fake, tmp_path)
    settings = Settings.load(str(path))
    stdio = StdioServerParameters(
        command=sys.executable,
        args=["-m", "proxy.cli", "mcp", "--config", str(path), "--user", "erin"],
        env=child_env(),
    )
    with ServerThread(create_app(settings)) as server:
        api = server.base_url + "/v1/memories"
        stored = httpx.post(
            api, json={"messages": "I play the oboe", "user_id": "erin", "infer": False}
        )
        assert stored.status_code == 200, stored.text

        async def session(c: Client) -> dict[str, Any]:
            seen = await c.call_tool("search_memories", {"query": "oboe"})
            added = await c.call_tool("add_memory", {"text": "My cat is called Miso"})
            learned = await c.call_tool(
                "add_memory", {"messages": [{"role": "user", "content": SISTER}], "infer": True}
            )
            return {"seen": seen, "added": added, "learned": learned}

        out = run_client(stdio, session)
        assert "oboe" in text_of(out["seen"])  # the server's write, read by the stdio process
        assert not out["added"].is_error and out["learned"].structured_content["queued"]

        def listed() -> str:
            return httpx.get(api, params={"user_id": "erin"}).text

        assert "Miso" in listed()  # the stdio process's write, read by the server
        wait_for(lambda: "Lisbon" in listed())  # learned by the server from the shared queue
