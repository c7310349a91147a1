"""Metrics, the Grafana dashboard built on them, and the logs (issue 18).

- Every metric the dashboard (docs/grafana-dashboard.json) queries exists on ``/metrics`` of a
  server that chatted, recalled and learned.
- ``server.log_format: json``: every line of a real ``memproxy serve`` is one JSON object with
  a ``request_id``; a chat's request id follows it into its learning job; planted secrets (the
  client's key, the provider key, a memory text) never appear in the captured log.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from proxy.logs import JsonFormatter, Scrubber, TextFormatter, secrets_in
from tests.conftest import SharedEmbedder
from tests.fake_upstream import FakeUpstream
from tests.queue_procs import (
    FakeProcess,
    InProcessProxy,
    ProxyProcess,
    metric,
    post_chat,
    wait_drained,
    write_config,
)

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
METRIC_NAME = re.compile(r"\bmemproxy_[a-z_]+\b")


def dashboard_metric_names() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    names = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names |= set(METRIC_NAME.findall(target["expr"]))
    return names


def exposed_names(text: str) -> set[str]:
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


@pytest.fixture
def proxy(
    tmp_path: Path, fake_llm: FakeUpstream, embedder: SharedEmbedder
) -> Iterator[InProcessProxy]:
    config = write_config(tmp_path / "proxy.yaml", fake_url=fake_llm.url, storage=tmp_path / "d")
    with InProcessProxy(config, embedder) as server:
        yield server


def chat(url: str, user: str, text: str, **headers: str) -> httpx.Response:
    with httpx.Client(timeout=60) as client:
        response = post_chat(client, url, user, text, headers=headers)
    assert response.status_code == 200, response.text
    return response


def test_every_dashboard_metric_exists(proxy: InProcessProxy) -> None:
    user = f"obs-{uuid.uuid4().hex[:6]}"
    chat(proxy.url, user, "I live in Paris")
    wait_drained(proxy, timeout_s=60)
    recalled = chat(proxy.url, user, "Where do I live?")
    assert recalled.headers["x-memory-recalled"] != "0"
    httpx.get(f"{proxy.url}/v1/memories", params={"user_id": user}, timeout=30)
    text = proxy.metrics()
    names = dashboard_metric_names()
    assert len(names) >= 15, names
    missing = sorted(names - exposed_names(text))
    assert missing == [], f"the dashboard queries metrics the proxy does not expose: {missing}"
    # The labels the panels group by carry real values.
    assert metric(text, "memproxy_learning_decisions_total", 'event="ADD"') == 1
    for stage in ("total", "embed", "search"):
        assert metric(text, "memproxy_memory_overhead_seconds_count", f'stage="{stage}"') == 2
    # Injecting happens only when something was recalled: the second chat.
    assert metric(text, "memproxy_memory_overhead_seconds_count", 'stage="inject"') == 1
    assert metric(text, "memproxy_memories_recalled_per_request_count") == 2
    chats = 'method="POST",route="/v1/chat/completions",status="200"'
    assert metric(text, "memproxy_http_requests_total", chats) == 2
    assert metric(text, "memproxy_requests_total", "") is None  # labelled family only
    versions = metric(text, "memproxy_store_table_version", 'table="memories"')
    assert versions is not None and versions >= 1
    applied = metric(text, "memproxy_queue_applied", 'backend="sqlite"')
    assert applied is not None and applied >= 1


def test_unmatched_routes_and_odd_methods_keep_labels_bounded(proxy: InProcessProxy) -> None:
    for n in range(5):
        httpx.get(f"{proxy.url}/no/such/path/{uuid.uuid4().hex}", timeout=10)
        httpx.request(f"X{n}WEIRD", f"{proxy.url}/v1/models", timeout=10)
    text = proxy.metrics()
    routes = set(re.findall(r'memproxy_http_requests_total\{[^}]*route="([^"]*)"', text))
    methods = set(re.findall(r'memproxy_http_requests_total\{[^}]*method="([^"]*)"', text))
    assert "unmatched" in routes and not any("no/such" in r for r in routes)
    assert methods <= {"GET", "POST", "other"}, methods


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("calling with Authorization: Bearer planted-client-key-1234", "planted-client-key-1234"),
        ("provider said: invalid key sk-proj-PLANTED0123456789", "sk-proj-PLANTED0123456789"),
        ("connecting to redis://:hunter2secret@10.0.0.5:6379/0", "hunter2secret"),
        ("retrying with configured-provider-value in the request", "configured-provider-value"),
    ],
)
def test_scrubber_removes_secrets(line: str, secret: str) -> None:
    configured = list(secrets_in({"model_list": [{"litellm_params": {"api_key": secret}}]}))
    for formatter in (JsonFormatter(Scrubber(configured)), TextFormatter(Scrubber(configured))):
        record = logging.LogRecord("x", logging.WARNING, __file__, 1, line, None, None)
        try:
            raise RuntimeError(line)
        except RuntimeError:
            record.exc_info = sys.exc_info()
        out = formatter.format(record)
        assert secret not in out and "[redacted]" in out, out


def test_secrets_in_finds_nested_secret_fields() -> None:
    config: dict[str, Any] = {
        "model_list": [{"model_name": "m", "litellm_params": {"api_key": "sk-one-abcdef"}}],
        "memory": {"storage_options": {"aws_secret_access_key": "s3-secret-xyz", "region": "eu"}},
        "server": {"host": "127.0.0.1"},
    }
    assert sorted(secrets_in(config)) == ["s3-secret-xyz", "sk-one-abcdef"]


def test_json_logs_request_ids_and_no_secrets(tmp_path: Path) -> None:
    provider_key = "sk-provider-PLANTED-" + uuid.uuid4().hex[:8]
    client_key = "mp-client-PLANTED-" + uuid.uuid4().hex[:8]
    marker = "Zanzibar" + uuid.uuid4().hex[:6]
    with FakeProcess() as fake:
        config_path = write_config(
            tmp_path / "proxy.yaml", fake_url=fake.url, storage=tmp_path / "d"
        )
        config = yaml.safe_load(config_path.read_text())
        config["model_list"][0]["litellm_params"]["api_key"] = provider_key
        config["server"] = {"log_level": "info", "log_format": "json"}
        config_path.write_text(yaml.safe_dump(config))
        server = ProxyProcess(config_path, tmp_path / "server.log").start()
        try:
            headers = {"Authorization": f"Bearer {client_key}", "X-Request-Id": "obs-chat-1"}
            reply = chat(server.url, "obs-user", f"I live in {marker}", **headers)
            assert reply.headers["x-request-id"] == "obs-chat-1"
            fresh = chat(server.url, "obs-user", f"My friend is called {marker}")
            assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["x-request-id"])
            httpx.post(
                f"{server.url}/v1/search",
                json={"query": marker, "user_id": "obs-user"},
                headers={"Authorization": f"Bearer {client_key}"},
                timeout=30,
            )
            wait_drained(server, timeout_s=60)
        finally:
            server.terminate()
    log = server.log(tail=None)
    lines = [line for line in log.splitlines() if line.strip()]
    assert len(lines) > 5, log
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message", "request_id"} <= set(e) for e in entries)
    chat_lines = [e for e in entries if e["request_id"] == "obs-chat-1"]
    assert any(e["logger"] == "proxy.access" for e in chat_lines), chat_lines
    # The learning job of that chat logs under the chat's request id.
    assert any(e["logger"] == "proxy.learning" for e in chat_lines), chat_lines
    access = [e for e in entries if e["logger"] == "proxy.access"]
    assert all(e["request_id"] for e in access)
    for planted in (provider_key, client_key, marker, "Authorization", "Bearer"):
        assert planted not in log, f"{planted!r} was logged"


def test_text_log_lines_stay_parseable() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter(Scrubber()))
    logger = logging.getLogger("obs-text-test")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("plain line")
    finally:
        logger.removeHandler(handler)
    assert re.match(r"^\S+ \S+ WARNING obs-text-test: plain line$", stream.getvalue().strip())
