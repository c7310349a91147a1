"""A proxy with API keys, the scripted fake LLM and a learning queue, for the learning-log
tests (tests/test_learning_log_api.py, tests/test_browser_learning.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import yaml

from proxy.auth import hash_key
from tests.queue_procs import InProcessProxy, write_config

KEYS = {"alice": "sk-log-alice", "bob": "sk-log-bob", "admin": "sk-log-admin"}


def keyed_config(path: Path, *, fake_url: str, storage: Path, queue: dict[str, Any]) -> Path:
    """``write_config``'s proxy with three keys: bound to alice, bound to bob, admin."""
    config = write_config(path, fake_url=fake_url, storage=storage, queue=queue)
    settings = yaml.safe_load(config.read_text())
    settings["auth"] = {
        "keys": [
            {"name": "alice-app", "key_sha256": hash_key(KEYS["alice"]), "users": ["alice"]},
            {"name": "bob-app", "key_sha256": hash_key(KEYS["bob"]), "users": ["bob"]},
            {"name": "ops", "key_sha256": hash_key(KEYS["admin"]), "admin": True},
        ]
    }
    config.write_text(yaml.safe_dump(settings))
    return config


class KeyedProxy(InProcessProxy):
    """The proxy with API keys: its queue counts in ``/ready`` need the admin key."""

    def ready(self) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {KEYS['admin']}"}
        return dict(httpx.get(f"{self.url}/ready", headers=headers, timeout=10).json())

    def client(self, key: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {KEYS[key]}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def chat(self, user: str, text: str) -> None:
        """One chat turn for ``user`` (the admin key names the user)."""
        body = {
            "model": "fake-model",
            "user_id": user,
            "messages": [{"role": "user", "content": text}],
        }
        with self.client("admin") as c:
            response = c.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
