"""Open WebUI and LibreChat, replayed (docs/chat-uis.md).

Requests shaped exactly like each UI's — headers, bodies with Open WebUI's 36 built-in tools,
its background-task prompts, LibreChat's title call, streaming with ``include_usage`` — live in
tests/data/openwebui_*.json and tests/data/librechat_*.json. They are sent to a real uvicorn
server built from docs/examples/memproxy-chatui.yaml (only the provider URL/key and the storage
directory are replaced), with the fake OpenAI-compatible provider behind it. The keys come from
docs/examples/openwebui-compose.yaml and docs/examples/librechat.yaml, so the documented setup
is the tested one (Docker itself is not run here).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from proxy import Settings, create_app
from proxy.auth import hash_key
from proxy.errors import Unauthorized
from proxy.openwebui_jwt import verify_hs256
from proxy.ui_tasks import background_task, task_recall_query
from tests.fake_state import RecordedRequest
from tests.fake_upstream import FakeUpstream
from tests.servers import ServerThread, learn_state, wait_learned
from tests.servers import conversation_of as conversation

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
EXAMPLES = ROOT / "docs" / "examples"
JWT_SECRET = "owui-forward-secret-for-tests-0123456789abcdef"
BOUND_KEY = "sk-bound-to-one-user"
BOUND_USER = "alice-bound"
T1 = "I live in Porto and I am allergic to peanuts."
T2 = "Which snacks are safe for someone allergic to peanuts like me?"
LC1 = "I have a cat called Miso and I work as a nurse."

OPENWEBUI_TASKS = {
    "openwebui_task_title": "title",
    "openwebui_task_tags": "tags",
    "openwebui_task_follow_ups": "follow_ups",
    "openwebui_task_search_query": "search_query",
    "openwebui_task_autocomplete": "autocomplete",
    "openwebui_task_emoji": "emoji",
}


# ---------------------------------------------------------------------------------------------
# The documented setup
# ---------------------------------------------------------------------------------------------


def load_yaml(name: str) -> dict[str, Any]:
    data = yaml.safe_load((EXAMPLES / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def openwebui_key() -> str:
    env = load_yaml("openwebui-compose.yaml")["services"]["open-webui"]["environment"]
    return str(env["OPENAI_API_KEY"])


def librechat_endpoint() -> dict[str, Any]:
    endpoint = load_yaml("librechat.yaml")["endpoints"]["custom"][0]
    assert isinstance(endpoint, dict)
    return endpoint


def example_config(fake_url: str, storage: Path) -> dict[str, Any]:
    """docs/examples/memproxy-chatui.yaml with the fake provider and a temporary store."""
    config = load_yaml("memproxy-chatui.yaml")
    for deployment in config["model_list"]:
        deployment["litellm_params"].update(api_base=fake_url, api_key="sk-fake-provider")
    config["memory"]["storage_uri"] = str(storage)
    config["server"] = {**(config.get("server") or {}), "public_metrics": True}  # the probes
    return config


def hardened_config(fake_url: str, storage: Path) -> dict[str, Any]:
    """The example with the hardening the docs describe: Open WebUI signs its users (plain
    headers no longer believed), search-query tasks get memories; plus a key bound to a user."""
    config = example_config(fake_url, storage)
    config["chat_ui"]["openwebui"].update(jwt_secret=JWT_SECRET, trust_user_headers=False)
    config["memory"]["recall"]["recall_for_tasks"] = ["search_query"]
    config["auth"]["keys"].append(
        {"name": "alice-laptop", "key_sha256": hash_key(BOUND_KEY), "users": [BOUND_USER]}
    )
    return config


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def server(fake: FakeUpstream, tmp_path_factory: Any) -> Iterator[ServerThread]:
    settings = Settings.from_dict(example_config(fake.url, tmp_path_factory.mktemp("chatui")))
    with ServerThread(create_app(settings)) as srv:
        yield srv


@pytest.fixture(scope="module")
def hardened(fake: FakeUpstream, tmp_path_factory: Any) -> Iterator[ServerThread]:
    settings = Settings.from_dict(hardened_config(fake.url, tmp_path_factory.mktemp("hard")))
    with ServerThread(create_app(settings)) as srv:
        yield srv


# ---------------------------------------------------------------------------------------------
# Replaying fixtures
# ---------------------------------------------------------------------------------------------


def new_values(**extra: str) -> dict[str, str]:
    """Fresh placeholder values for one simulated person (so tests never share memories)."""
    owui_user = str(uuid.uuid4())
    return {
        "OPENWEBUI_KEY": openwebui_key(),
        "OPENWEBUI_USER_ID": owui_user,
        "OPENWEBUI_USER_EMAIL": f"dana.{owui_user[:8]}@example.com",
        "CHAT_ID": str(uuid.uuid4()),
        "SOCKET_ID": uuid.uuid4().hex[:20],
        "LIBRECHAT_KEY": str(librechat_endpoint()["apiKey"]),
        "LIBRECHAT_USER_ID": uuid.uuid4().hex[:24],
        "JWT": "",
        **extra,
    }


def fixture(name: str, values: dict[str, str]) -> dict[str, Any]:
    text = (DATA / f"{name}.json").read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    doc = json.loads(text)
    assert "{{" not in json.dumps(doc["headers"]), f"unfilled placeholder in {name}"
    return doc


@dataclass
class Replay:
    status: int
    headers: httpx.Headers
    text: str = ""
    json: Any = None
    chunks: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False

    @property
    def content(self) -> str:
        if self.chunks:
            return "".join(
                (c["choices"][0]["delta"].get("content") or "") for c in self.chunks if c["choices"]
            )
        return str(self.json["choices"][0]["message"]["content"])


def replay(srv: ServerThread, doc: dict[str, Any], **header_changes: str | None) -> Replay:
    """Send one recorded request, byte for byte as the UI would, and read the whole answer."""
    headers = {k: v for k, v in doc["headers"].items() if k.lower() != "host"}
    for name, value in header_changes.items():
        name = name.replace("_", "-")
        headers = {k: v for k, v in headers.items() if k.lower() != name.lower()}
        if value is not None:
            headers[name] = value
    raw = orjson.dumps(doc["body"])
    with httpx.Client(base_url=srv.base_url, timeout=30) as client:
        with client.stream(doc["method"], doc["path"], headers=headers, content=raw) as response:
            body = response.read().decode()
    result = Replay(response.status_code, response.headers, body)
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in body.splitlines():
            if line == "data: [DONE]":
                result.done = True
            elif line.startswith("data: "):
                result.chunks.append(json.loads(line[len("data: ") :]))
    else:
        result.json = json.loads(body)
    return result


def last_chat(fake: FakeUpstream) -> RecordedRequest:
    return fake.requests_of("chat")[-1]


def sent_with(fake: FakeUpstream, messages: list[dict[str, Any]]) -> RecordedRequest:
    """The one request the provider received with exactly these messages."""
    found = [r for r in fake.requests_of("chat") if r.messages == messages]
    assert len(found) == 1
    return found[0]


def assert_learned_nothing_since(
    srv: ServerThread, fake: FakeUpstream, values: dict[str, str], before: dict[str, float]
) -> None:
    """A control turn of the same Open WebUI user is learned, and it is the only exchange
    learned since ``before`` (taken before the request under test)."""
    extracts = len(fake.requests_of("extract"))
    control = f"My locker number is {uuid.uuid4().int % 10_000}."
    doc = fixture("openwebui_chat_turn1", values)
    doc["body"]["messages"] = [{"role": "user", "content": control}]
    assert replay(srv, doc).status == 200
    after = wait_learned(srv, before, jobs=1)
    assert after["enqueued"] == before["enqueued"] + 1
    new = fake.requests_of("extract")[extracts:]
    assert [conversation(r)[0] for r in new] == [("user", control)]


def assert_usage_chunk(result: Replay) -> None:
    assert result.done
    final = result.chunks[-1]
    assert final["choices"] == []
    assert final["usage"]["total_tokens"] == (
        final["usage"]["prompt_tokens"] + final["usage"]["completion_tokens"]
    )


def mint_jwt(claims: dict[str, Any], secret: str, header: dict[str, Any] | None = None) -> str:
    """What Open WebUI's ``jwt.encode(payload, secret, algorithm='HS256')`` produces."""

    def segment(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = segment(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = segment(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{segment(signature)}"


def openwebui_claims(values: dict[str, str], **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": values["OPENWEBUI_USER_ID"],
        "email": values["OPENWEBUI_USER_EMAIL"],
        "name": "Dana Silva",
        "role": "user",
        "iss": "open-webui",
        "iat": now,
        "exp": now + 300,
        **changes,
    }


@pytest.fixture(scope="module")
def dana(server: ServerThread) -> dict[str, str]:
    """An Open WebUI user who already told memproxy where she lives and what she is allergic to."""
    values = new_values()
    before = learn_state(server)
    assert replay(server, fixture("openwebui_chat_turn1", values)).status == 200
    wait_learned(server, before, jobs=1)
    return values


# ---------------------------------------------------------------------------------------------
# The documented files agree with each other and with the fixtures
# ---------------------------------------------------------------------------------------------


def test_example_files_agree() -> None:
    config = load_yaml("memproxy-chatui.yaml")
    keys = {k["name"]: k for k in config["auth"]["keys"]}
    assert keys["openwebui"]["key_sha256"] == hash_key(openwebui_key())
    endpoint = librechat_endpoint()
    assert keys["librechat"]["key_sha256"] == hash_key(endpoint["apiKey"])
    assert config["chat_ui"]["openwebui"]["trusted_keys"] == ["openwebui"]

    compose = load_yaml("openwebui-compose.yaml")["services"]
    env = compose["open-webui"]["environment"]
    assert env["ENABLE_FORWARD_USER_INFO_HEADERS"] == "true"
    assert env["OPENAI_API_BASE_URL"] == "http://memproxy:8787/v1"
    assert "memproxy-chatui.yaml:/app/configs/chatui.yaml:ro" in compose["memproxy"]["volumes"][0]
    assert compose["memproxy"]["environment"]["MEMPROXY_CONFIG"] == "/app/configs/chatui.yaml"

    assert endpoint["baseURL"] == "http://memproxy:8787/v1"
    assert endpoint["headers"] == {"X-User-Id": "{{LIBRECHAT_USER_ID}}"}
    assert endpoint["titleConvo"] is True
    for name in ("librechat_chat_turn1", "librechat_title", "librechat_chat_turn2"):
        doc = json.loads((DATA / f"{name}.json").read_text())
        assert doc["path"] == "/v1/chat/completions"  # baseURL + /chat/completions
        assert doc["headers"]["X-User-Id"] == "{{LIBRECHAT_USER_ID}}"
        assert doc["body"]["user"] == "{{LIBRECHAT_USER_ID}}"
    turn1 = json.loads((DATA / "openwebui_chat_turn1.json").read_text())
    assert turn1["path"] == "/chat/completions"  # Open WebUI appends to .../v1
    assert len(turn1["body"]["tools"]) == 36
    assert len(orjson.dumps(turn1["body"]["tools"])) > 20_000


def test_the_guide_shows_the_tested_files() -> None:
    guide = (ROOT / "docs" / "chat-uis.md").read_text(encoding="utf-8")
    for name in ("memproxy-chatui.yaml", "openwebui-compose.yaml", "librechat.yaml"):
        assert (EXAMPLES / name).read_text(encoding="utf-8").strip() in guide, name


def test_models_are_listed_with_and_without_the_v1_prefix(server: ServerThread) -> None:
    headers = fixture("openwebui_chat_turn1", new_values())["headers"]
    headers.pop("Host")
    for path in ("/models", "/v1/models"):
        response = httpx.get(server.base_url + path, headers=headers)
        assert response.status_code == 200
        assert [m["id"] for m in response.json()["data"]] == ["gpt-4o-mini", "gpt-4o"]


# ---------------------------------------------------------------------------------------------
# Open WebUI
# ---------------------------------------------------------------------------------------------


def test_openwebui_conversation_learns_turns_and_recalls_them(
    server: ServerThread, fake: FakeUpstream
) -> None:
    values = new_values()
    extracts = len(fake.requests_of("extract"))
    before = learn_state(server)

    turn1 = fixture("openwebui_chat_turn1", values)
    title = fixture("openwebui_task_title", values)
    # The title task goes out at the same moment as the first turn.
    with ThreadPoolExecutor(2) as pool:
        first_future = pool.submit(replay, server, turn1)
        answer = replay(server, title)
        first = first_future.result()
    assert first.status == 200
    assert first.headers["x-memory-status"] == "ok"
    assert first.headers["x-memory-recalled"] == "0"
    assert first.headers["x-memory-mode"] == "auto"
    assert "x-memory-task" not in first.headers
    assert first.content == "ECHO: " + T1  # nothing known yet: nothing injected
    assert_usage_chunk(first)
    sent = sent_with(fake, turn1["body"]["messages"])
    # The 36 tools reach the provider untouched, in order, byte for byte once serialised.
    assert orjson.dumps(sent.body["tools"]) == orjson.dumps(turn1["body"]["tools"])
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.headers["authorization"] == "Bearer sk-fake-provider"  # not Open WebUI's key
    assert answer.status == 200
    assert answer.headers["x-memory-task"] == "title"
    assert answer.headers["x-memory-recalled"] == "0"
    assert sent_with(fake, title["body"]["messages"]).body == title["body"]

    state = wait_learned(server, before, jobs=1)
    for name in ("openwebui_task_tags", "openwebui_task_follow_ups"):
        assert replay(server, fixture(name, values)).status == 200

    turn2 = fixture("openwebui_chat_turn2", values)
    second = replay(server, turn2)
    assert second.status == 200
    assert int(second.headers["x-memory-recalled"]) >= 1
    assert second.content.startswith("ECHO: " + T2 + " | MEMORIES: ")
    assert "User is allergic to peanuts" in second.content
    assert_usage_chunk(second)
    sent = last_chat(fake)
    history = turn2["body"]["messages"]
    # The earlier history stays byte-identical; one memory block sits before the last turn.
    assert sent.messages[:2] == history[:2]
    assert sent.messages[2]["role"] == "system"
    assert sent.messages[2]["content"].startswith("<memories>")
    assert sent.messages[3:] == history[2:]
    assert orjson.dumps(sent.body["tools"]) == orjson.dumps(turn2["body"]["tools"])

    wait_learned(server, state, jobs=1)
    assert learn_state(server)["enqueued"] == before["enqueued"] + 2  # the two turns, no tasks
    learned = [conversation(r) for r in fake.requests_of("extract")[extracts:]]
    assert [c[0] for c in learned] == [("user", T1), ("user", T2)]  # only the new exchanges
    assert not any("### Task" in text or "chat_history" in text for c in learned for _, text in c)


@pytest.mark.parametrize("name", list(OPENWEBUI_TASKS))
def test_openwebui_tasks_get_no_memories_and_teach_nothing(
    server: ServerThread, fake: FakeUpstream, dana: dict[str, str], name: str
) -> None:
    before = learn_state(server)
    task = fixture(name, dana)
    answer = replay(server, task)
    assert answer.status == 200
    assert answer.headers["x-memory-task"] == OPENWEBUI_TASKS[name]
    assert answer.headers["x-memory-status"] == "ok"
    assert answer.headers["x-memory-recalled"] == "0"
    assert "MEMORIES" not in answer.content
    assert last_chat(fake).body == task["body"]  # forwarded exactly as sent
    assert_learned_nothing_since(server, fake, dana, before)


def test_openwebui_temporary_chat_recalls_but_never_learns(
    server: ServerThread, fake: FakeUpstream, dana: dict[str, str]
) -> None:
    before = learn_state(server)
    extracts = len(fake.requests_of("extract"))
    answer = replay(server, fixture("openwebui_temporary_chat", dana))
    assert answer.status == 200
    assert answer.headers["x-memory-mode"] == "read"
    assert int(answer.headers["x-memory-recalled"]) >= 1
    assert "User lives in Porto" in answer.content
    assert_usage_chunk(answer)
    assert_learned_nothing_since(server, fake, dana, before)
    assert not any("parrot" in str(r.body) for r in fake.requests_of("extract")[extracts:])


def test_openwebui_temporary_chat_in_write_mode_is_off(
    server: ServerThread, fake: FakeUpstream, dana: dict[str, str]
) -> None:
    before = learn_state(server)
    answer = replay(server, fixture("openwebui_temporary_chat", dana), X_Memory_Mode="write")
    assert answer.headers["x-memory-mode"] == "off"
    assert answer.headers["x-memory-status"] == "off"
    assert_learned_nothing_since(server, fake, dana, before)


def test_openwebui_headers_only_count_from_the_trusted_key(
    server: ServerThread, dana: dict[str, str]
) -> None:
    doc = fixture("openwebui_chat_turn1", dana)
    librechat_key = "Bearer " + dana["LIBRECHAT_KEY"]
    # From LibreChat's key the X-OpenWebUI-User-* headers are not believed: no user.
    answer = replay(server, doc, Authorization=librechat_key)
    assert answer.status == 200
    assert answer.headers["x-memory-status"] == "no-user"
    # Without any key: 401, in OpenAI's error shape.
    refused = replay(server, doc, Authorization=None)
    assert refused.status == 401
    assert refused.json["error"]["type"] == "authentication_error"


def test_per_request_memory_controls(
    server: ServerThread, fake: FakeUpstream, dana: dict[str, str]
) -> None:
    doc = fixture("openwebui_chat_turn2", dana)
    off = replay(server, doc, X_Memory_Mode="off")
    assert off.headers["x-memory-status"] == "off"
    assert off.headers["x-memory-recalled"] == "0"
    assert "memory" not in last_chat(fake).body
    # The body's memory.mode wins over the header, and is not forwarded.
    doc["body"]["memory"] = {"mode": "read"}
    before = learn_state(server)
    read = replay(server, doc, X_Memory_Mode="write")
    assert read.headers["x-memory-mode"] == "read"
    assert int(read.headers["x-memory-recalled"]) >= 1
    assert "memory" not in last_chat(fake).body
    assert_learned_nothing_since(server, fake, dana, before)
    bad = replay(server, doc | {"body": {**doc["body"], "memory": {"mode": "sometimes"}}})
    assert bad.status == 400
    assert bad.json["error"]["param"] == "memory.mode"


# ---------------------------------------------------------------------------------------------
# LibreChat
# ---------------------------------------------------------------------------------------------


def test_librechat_conversation(server: ServerThread, fake: FakeUpstream) -> None:
    values = new_values()
    extracts = len(fake.requests_of("extract"))
    before = learn_state(server)

    first = replay(server, fixture("librechat_chat_turn1", values))
    assert first.status == 200
    assert first.headers["x-memory-status"] == "ok"
    assert first.content == "ECHO: " + LC1
    assert_usage_chunk(first)
    sent = last_chat(fake)
    assert sent.body["user"] == values["LIBRECHAT_USER_ID"]  # OpenAI's own field passes through

    title = fixture("librechat_title", values)
    named = replay(server, title)
    assert named.status == 200
    assert named.headers["x-memory-task"] == "title"
    assert named.headers["x-memory-recalled"] == "0"
    assert last_chat(fake).body == title["body"]
    state = wait_learned(server, before, jobs=1)

    second = replay(server, fixture("librechat_chat_turn2", values))
    assert second.status == 200
    assert int(second.headers["x-memory-recalled"]) >= 1
    assert "User has a cat called Miso" in second.content
    assert_usage_chunk(second)

    wait_learned(server, state, jobs=1)
    assert learn_state(server)["enqueued"] == before["enqueued"] + 2
    learned = [conversation(r) for r in fake.requests_of("extract")[extracts:]]
    assert [c[0] for c in learned] == [("user", LC1), ("user", "What is my cat called?")]
    assert not any("5-word-or-less" in text for c in learned for _, text in c)


def test_librechat_body_user_alone_identifies(server: ServerThread) -> None:
    values = new_values()
    doc = fixture("librechat_chat_turn1", values)
    answer = replay(server, doc, X_User_Id=None)
    assert answer.headers["x-memory-status"] == "ok"
    doc["body"].pop("user")
    assert replay(server, doc, X_User_Id=None).headers["x-memory-status"] == "no-user"


# ---------------------------------------------------------------------------------------------
# Hardened setup: signed Open WebUI users, a bound key, memories for search-query tasks
# ---------------------------------------------------------------------------------------------


def test_openwebui_signed_user_is_verified(hardened: ServerThread, fake: FakeUpstream) -> None:
    values = new_values()
    values["JWT"] = mint_jwt(openwebui_claims(values), JWT_SECRET)
    doc = fixture("openwebui_jwt_chat", values)
    assert "X-OpenWebUI-User-Id" not in doc["headers"]
    before = learn_state(hardened)
    first = replay(hardened, doc)
    assert first.status == 200
    assert first.headers["x-memory-status"] == "ok"
    assert_usage_chunk(first)
    wait_learned(hardened, before, jobs=1)
    doc["body"]["messages"] = [{"role": "user", "content": "What is my cat called?"}]
    again = replay(hardened, doc)
    assert "User has a cat called Miso" in again.content

    # Plain headers are not believed here (trust_user_headers: false) ...
    plain = fixture("openwebui_chat_turn1", values)
    assert replay(hardened, plain).headers["x-memory-status"] == "no-user"
    # ... and a claim that contradicts the signed user is refused.
    conflict = replay(hardened, doc, X_User_Id="someone-else")
    assert conflict.status == 403
    assert conflict.json["error"]["type"] == "permission_error"


@pytest.mark.parametrize(
    "token",
    ["bad-signature", "expired", "alg-none", "other-issuer", "garbage"],
)
def test_openwebui_bad_user_jwt_is_refused(hardened: ServerThread, token: str) -> None:
    values = new_values()
    claims = openwebui_claims(values)
    if token == "bad-signature":
        jwt = mint_jwt(claims, "not-the-secret")
    elif token == "expired":
        jwt = mint_jwt({**claims, "exp": int(time.time()) - 600}, JWT_SECRET)
    elif token == "alg-none":
        jwt = mint_jwt(claims, JWT_SECRET, header={"alg": "none", "typ": "JWT"})
    elif token == "other-issuer":
        jwt = mint_jwt({**claims, "iss": "someone"}, JWT_SECRET)
    else:
        jwt = "not.a.jwt"
    values["JWT"] = jwt
    answer = replay(hardened, fixture("openwebui_jwt_chat", values))
    assert answer.status == 401
    assert answer.json["error"]["type"] == "authentication_error"


def test_a_bound_key_always_wins(hardened: ServerThread) -> None:
    values = new_values()
    doc = fixture("librechat_chat_turn1", values)
    key = "Bearer " + BOUND_KEY
    doc["body"].pop("user")
    alone = replay(hardened, doc, Authorization=key, X_User_Id=None)
    assert alone.headers["x-memory-status"] == "ok"  # the key's user, with no claim at all
    same = replay(hardened, doc, Authorization=key, X_User_Id=BOUND_USER)
    assert same.headers["x-memory-status"] == "ok"
    other = replay(hardened, doc, Authorization=key, X_User_Id="mallory")
    assert other.status == 403
    values["JWT"] = mint_jwt(openwebui_claims(values), JWT_SECRET)
    signed = replay(hardened, fixture("openwebui_jwt_chat", values), Authorization=key)
    assert signed.status == 403


def test_listed_tasks_get_memories_and_still_teach_nothing(
    hardened: ServerThread, fake: FakeUpstream
) -> None:
    values = new_values()
    values["JWT"] = mint_jwt(openwebui_claims(values), JWT_SECRET)
    doc = fixture("openwebui_jwt_chat", values)
    doc["body"]["messages"] = [{"role": "user", "content": T1}]
    before = learn_state(hardened)
    assert replay(hardened, doc).status == 200
    state = wait_learned(hardened, before, jobs=1)

    jwt_header = {"X_OpenWebUI_User_Jwt": values["JWT"]}
    unsigned = {f"X_OpenWebUI_User_{part}": None for part in ("Id", "Name", "Email", "Role")}
    query = replay(
        hardened, fixture("openwebui_task_search_query", values), **unsigned, **jwt_header
    )
    assert query.headers["x-memory-task"] == "search_query"
    assert int(query.headers["x-memory-recalled"]) >= 1
    assert "User is allergic to peanuts" in query.content
    title = replay(hardened, fixture("openwebui_task_title", values), **unsigned, **jwt_header)
    assert title.headers["x-memory-task"] == "title"
    assert title.headers["x-memory-recalled"] == "0"
    time.sleep(0.3)
    assert learn_state(hardened)["enqueued"] == state["enqueued"]


# ---------------------------------------------------------------------------------------------
# Pure parts
# ---------------------------------------------------------------------------------------------


def test_verify_hs256_accepts_the_rfc7515_example() -> None:
    token = (
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
        ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
        ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    )
    key = base64.urlsafe_b64decode(
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow=="
    )
    claims = verify_hs256(token, key, issuer="joe", now=1300819370)
    assert claims["http://example.com/is_root"] is True
    with pytest.raises(Unauthorized):
        verify_hs256(token, key, issuer="joe", now=1300819380 + 31)
    with pytest.raises(Unauthorized):
        verify_hs256(token, key[:-1], issuer="joe", now=1300819370)


EXPECTED_KINDS = {
    **OPENWEBUI_TASKS,
    "librechat_title": "title",
    "openwebui_chat_turn1": None,
    "openwebui_chat_turn2": None,
    "openwebui_temporary_chat": None,
    "openwebui_jwt_chat": None,
    "librechat_chat_turn1": None,
    "librechat_chat_turn2": None,
}


@pytest.mark.parametrize("name", list(EXPECTED_KINDS))
def test_background_task_kind_of_each_fixture(name: str) -> None:
    body = fixture(name, new_values(JWT="x"))["body"]
    assert background_task(body["messages"]) == EXPECTED_KINDS[name]


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


LIBRECHAT_OLD_TITLE = "Please generate a concise, 5-word-or-less title for the conversation, ..."
TASK_RULES: list[tuple[list[dict[str, str]], str | None]] = [
    # A UI's system prompt does not hide a task ...
    ([msg("system", "Be terse."), msg("user", "### Task:\nGenerate 1-3 broad tags")], "tags"),
    # ... but "### Task:" typed by a person in an ongoing chat is a chat turn.
    ([msg("user", "hi"), msg("assistant", "hello"), msg("user", "### Task:\nwrite a title")], None),
    # LibreChat's older title call: one system message, no user message.
    ([msg("system", LIBRECHAT_OLD_TITLE)], "title"),
    # Open WebUI's prompt-based tool selection.
    ([msg("system", "Available Tools: [...]"), msg("user", "Query: hi")], "function_calling"),
    # The measured 0.12.4 follow-up wording (DESIGN.md section 6).
    ([msg("user", "### Task:\nPredict 3-5 useful messages the user might send")], "follow_ups"),
    ([msg("user", "### Task:\nSomething new")], "other"),
    ([msg("user", "Tell me a joke")], None),
]


@pytest.mark.parametrize(("messages", "kind"), TASK_RULES)
def test_background_task_rules(messages: list[dict[str, Any]], kind: str | None) -> None:
    assert background_task(messages) == kind


def test_extra_task_prefixes_and_task_recall_query() -> None:
    custom = [{"role": "user", "content": "[[title]] Summarise this chat: ..."}]
    assert background_task(custom) is None
    assert background_task(custom, ["[[title]]"]) == "other"
    query = fixture("openwebui_task_search_query", new_values())["body"]["messages"]
    assert task_recall_query(query) == f"USER: {T1}\nASSISTANT: ECHO: {T1}\nUSER: {T2}"
    title = fixture("librechat_title", new_values())["body"]["messages"]
    assert task_recall_query(title) == f"User: {LC1}\nAI: ECHO: {LC1}"
