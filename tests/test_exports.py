"""Structured exports: the library's ``export_structured`` with a Pydantic model, and the
durable ``POST /v1/exports`` job on a real server (validated, corrected once, dead-lettered
with the validation error, isolated per user)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from memory_core import AsyncMemory, LLMConfig, MemoryConfig
from memory_core.exports import ExportInvalid
from memory_core.extraction import LiteLLMChat
from proxy.app import create_app
from proxy.auth import hash_key
from proxy.settings import Settings
from tests.conftest import HashEmbedder
from tests.fake_upstream import FakeUpstream
from tests.servers import ServerThread

KEYS = {"alice": "sk-ex-alice", "bob": "sk-ex-bob"}
FACTS = ["I live in Porto", "My sister Ana is a pilot", "I have a cat named Miso", "I am 41"]
PROFILE = {
    "type": "object",
    "properties": {
        "live": {"type": "string"},
        "sister": {"type": "string"},
        "cat": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["live", "sister", "cat"],
}


class Profile(BaseModel):
    live: str
    sister: str
    cat: list[str]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


async def test_library_export_returns_a_validated_model(fake: FakeUpstream, tmp_path: Path) -> None:
    llm = LiteLLMChat(LLMConfig(model="openai/fake-model", api_base=fake.url, api_key="sk-f"))
    memory = AsyncMemory(MemoryConfig(storage_uri=str(tmp_path / "db")), embedder=HashEmbedder())
    await memory.open()
    try:
        await memory.add(FACTS, user_id="u", infer=False)
        await memory.add(["I live in Oslo"], user_id="other", infer=False)
        profile = await memory.export_structured(Profile, user_id="u", llm=llm)
        assert isinstance(profile, Profile)
        assert profile.live == "I live in Porto" and "pilot" in profile.sister
        assert profile.cat == ["I have a cat named Miso"]
        as_dict = await memory.export_structured(PROFILE, user_id="u", llm=llm)
        assert as_dict == profile.model_dump()
        with pytest.raises(ExportInvalid, match="'live' is a required property"):
            await memory.export_structured(
                PROFILE, user_id="u", llm=llm, instructions="[[export-invalid]]"
            )
    finally:
        await memory.close()


@pytest.fixture(scope="module")
def srv(fake: FakeUpstream, tmp_path_factory: Any) -> Iterator[ServerThread]:
    deployment = {
        "model_name": "fake-model",
        "litellm_params": {"model": "openai/fake-model", "api_base": fake.url, "api_key": "sk-f"},
    }
    settings = Settings.from_dict(
        {
            "model_list": [deployment],
            "memory": {
                "storage_uri": str(tmp_path_factory.mktemp("exports") / "db"),
                "extraction_model": "fake-model",
                "queue": {"backoff_base_s": 0.05, "max_attempts": 2, "shutdown_grace_s": 1},
            },
            "auth": {
                "keys": [
                    {"name": n, "key_sha256": hash_key(k), "users": [n]} for n, k in KEYS.items()
                ]
            },
            "server": {"public_metrics": True},
        }
    )
    memory = AsyncMemory(settings.memory.core_config(), embedder=HashEmbedder())
    with ServerThread(create_app(settings, memory=memory)) as server:
        with client(server, "alice") as c:
            r = c.post("/memories", json={"messages": FACTS, "infer": False})
            assert r.status_code == 200, r.text
        yield server


def client(srv: ServerThread, who: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {KEYS[who]}"}
    return httpx.Client(base_url=srv.base_url + "/v1", headers=headers, timeout=30)


def finished(c: httpx.Client, export_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        record = c.get(f"/exports/{export_id}").json()
        if record["status"] in ("completed", "failed"):
            return dict(record)
        assert time.monotonic() < deadline, record
        time.sleep(0.1)


def test_export_job_fills_the_schema(srv: ServerThread) -> None:
    with client(srv, "alice") as c:
        r = c.post("/exports", json={"schema": PROFILE})
        assert r.status_code == 202, r.text
        export_id = r.json()["id"]
        record = finished(c, export_id)
    assert record["status"] == "completed", record
    assert record["result"]["live"] == "I live in Porto"
    assert record["result"]["cat"] == ["I have a cat named Miso"]
    assert record["user_id"] == "alice" and record["error"] is None and record["attempts"] == 1
    with client(srv, "bob") as c:  # another user's key: exactly like an absent id
        foreign = c.get(f"/exports/{export_id}")
        absent = c.get("/exports/" + "0" * 32)
        assert foreign.status_code == absent.status_code == 404
        assert foreign.json()["error"]["message"].replace(export_id, "X") == absent.json()["error"][
            "message"
        ].replace("0" * 32, "X")
        assert c.post("/exports", json={"schema": PROFILE, "user_id": "alice"}).status_code == 403


def test_invalid_output_is_corrected_once_or_dead_lettered(srv: ServerThread) -> None:
    with client(srv, "alice") as c:
        once = c.post(
            "/exports", json={"schema": PROFILE, "instructions": "[[export-invalid-once]]"}
        ).json()["id"]
        never = c.post(
            "/exports", json={"schema": PROFILE, "instructions": "[[export-invalid]]"}
        ).json()["id"]
        corrected = finished(c, once)
        failed = finished(c, never)
    assert corrected["status"] == "completed" and corrected["result"]["sister"]
    assert failed["status"] == "failed" and failed["attempts"] == 2
    assert "'live' is a required property" in failed["error"]
    samples = httpx.get(srv.base_url + "/metrics").text.splitlines()
    dead = [line for line in samples if line.startswith("memproxy_queue_dead")]
    assert dead and float(dead[0].rsplit(" ", 1)[1]) >= 1, dead


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"schema": {"type": "array"}}, 400, "describe an object"),
        ({"schema": {"type": "object", "properties": {"a": {"type": 5}}}}, 400, "JSON Schema"),
        ({"schema": PROFILE, "filters": {"nope": {"$x": 1}}}, 400, ""),
        ({"schema": PROFILE, "instructions": "x" * 5000}, 400, "instructions"),
        ({}, 400, "schema"),
        ({"schema": PROFILE, "user_id": "a' OR '1'='1"}, 400, "user_id"),
    ],
)
def test_bad_export_requests(srv: ServerThread, body: Any, status: int, message: str) -> None:
    with client(srv, "alice") as c:
        r = c.post("/exports", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]


def test_export_ids_are_never_sql(srv: ServerThread) -> None:
    with client(srv, "alice") as c:
        for hostile in ["' OR '1'='1", "x" * 500, "%00", "../../etc"]:
            assert c.get(f"/exports/{hostile}").status_code == 404
