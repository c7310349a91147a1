"""Images and documents end to end on a real server: documents through the memory API
(verbatim passages with file name and page, or learned), images learned from chat and from
the API by the fake's vision answer, URL fetching off by default and then allowed for one
loopback host, and every bad input a 4xx with nothing stored."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from memory_core import AsyncMemory
from proxy.app import create_app
from proxy.auth import hash_key
from proxy.settings import Settings
from tests.conftest import SharedEmbedder
from tests.fake_media import pdf_with_pages, png_data_url, png_with_fact
from tests.fake_upstream import FakeUpstream
from tests.servers import ServerThread, wait_for

KEYS = {"alice": "sk-mm-alice", "bob": "sk-mm-bob"}
KESTREL = "My dog is a golden retriever named Kestrel."


def settings_for(fake: FakeUpstream, storage: str, **multimodal: Any) -> Settings:
    deployment = {
        "model_name": "fake-model",
        "litellm_params": {"model": "openai/fake-model", "api_base": fake.url, "api_key": "sk-f"},
    }
    return Settings.from_dict(
        {
            "model_list": [deployment],
            "memory": {
                "storage_uri": storage,
                "extraction_model": "fake-model",
                "queue": {"backoff_base_s": 0.05, "shutdown_grace_s": 1},
                "multimodal": {"enabled": True, **multimodal},
            },
            "auth": {
                "keys": [
                    {"name": n, "key_sha256": hash_key(k), "users": [n]} for n, k in KEYS.items()
                ]
            },
        }
    )


@pytest.fixture(scope="module")
def fake(fake_upstream: FakeUpstream) -> FakeUpstream:
    return fake_upstream  # the session's fake provider


@pytest.fixture(scope="module")
def srv(fake: FakeUpstream, tmp_path_factory: Any, local_embedder: Any) -> Iterator[ServerThread]:
    settings = settings_for(fake, str(tmp_path_factory.mktemp("mm") / "db"))
    memory = AsyncMemory(settings.memory.core_config(), embedder=SharedEmbedder(local_embedder))
    with ServerThread(create_app(settings, memory=memory)) as server:
        yield server


def api_client(srv: ServerThread, who: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {KEYS[who]}"}
    return httpx.Client(base_url=srv.base_url + "/v1", headers=headers, timeout=60)


def file_part(filename: str, data: bytes, *, data_url: str | None = None) -> dict[str, Any]:
    encoded = base64.b64encode(data).decode()
    file_data = f"data:{data_url};base64,{encoded}" if data_url else encoded
    return {"type": "file", "file": {"filename": filename, "file_data": file_data}}


def listed(client: httpx.Client) -> list[dict[str, Any]]:
    return list(client.get("/memories", params={"top_k": 1000}).json()["results"])


def test_documents_are_stored_as_passages_with_file_and_page(srv: ServerThread) -> None:
    pdf = pdf_with_pages(["The boiler was serviced in March.", "The roof needs new tiles."])
    notes = b"# Garden\n\nThe roses are pruned in February.\n\nThe pond has six koi."
    message = {
        "role": "user",
        "content": [
            {"type": "text", "text": "my house notes"},
            file_part("house.pdf", pdf, data_url="application/pdf"),
            file_part("garden.md", notes),
        ],
    }
    with api_client(srv, "alice") as c:
        r = c.post("/memories", json={"messages": [message], "infer": False})
        assert r.status_code == 200, r.text
        stored = {m["memory"]: m["metadata"] for m in listed(c)}
        found = c.post("/search", json={"query": "when are the roses pruned"}).json()
    boiler = next(meta for text, meta in stored.items() if "boiler" in text)
    roof = next(meta for text, meta in stored.items() if "roof" in text)
    assert (boiler["filename"], boiler["page"], roof["page"]) == ("house.pdf", 1, 2)
    assert boiler["source"] == "document" and "start" in boiler and "end" in boiler
    garden = [meta for text, meta in stored.items() if "koi" in text or "roses" in text]
    assert garden and all(meta["filename"] == "garden.md" for meta in garden)
    assert "page" not in garden[0]
    assert "my house notes" in stored  # the text part is stored as before
    assert "roses" in found["results"][0]["memory"]


def test_mem0_one_part_form_is_read(srv: ServerThread) -> None:
    # Mem0's documented shape: the content is the one part itself, not a list.
    note = file_part("note.txt", b"The spare key is under the blue pot.")
    with api_client(srv, "alice") as c:
        r = c.post(
            "/memories", json={"messages": [{"role": "user", "content": note}], "infer": False}
        )
        assert r.status_code == 200, r.text
        stored = [m for m in listed(c) if "spare key" in m["memory"]]
    assert stored and stored[0]["metadata"]["filename"] == "note.txt"


def test_a_document_can_be_learned_from(srv: ServerThread, fake: FakeUpstream) -> None:
    text = b"I keep three beehives in my garden.\n\nMy favourite honey is heather honey."
    message = {"role": "user", "content": [file_part("bees.txt", text)]}
    with api_client(srv, "bob") as c:
        r = c.post("/memories", json={"messages": [message], "infer": True})
        assert r.status_code == 200, r.text
        learned = {m["memory"]: m["metadata"] for m in listed(c)}
    assert any("beehives" in t for t in learned), learned
    assert all(meta["source"] == "document" for meta in learned.values())
    assert {meta.get("filename") for meta in learned.values()} == {"bees.txt"}


def user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


BAD_INPUTS: list[tuple[Any, bool, str]] = [
    (user(file_part("x.pdf", b"%PDF-1.4 not a pdf")), False, "PDF"),
    (user(file_part("x.exe", b"MZ\x90")), False, "unsupported document"),
    (user(file_part("x.txt", b"\xff\xfe\xfa")), False, "UTF-8"),
    (user({"type": "image_url", "image_url": {"url": "data:image/png;base64,!!"}}), True, "base64"),
    (user({"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGk="}}), True, "PNG"),
    (
        user({"type": "document_url", "document_url": {"url": "https://example.com/a.pdf"}}),
        False,
        "fetching URLs is off",
    ),
]


@pytest.mark.parametrize(("messages", "infer", "message"), BAD_INPUTS)
def test_bad_media_is_a_400_and_nothing_is_stored(
    srv: ServerThread, messages: Any, infer: bool, message: str
) -> None:
    good = {"role": "user", "content": [file_part("ok.txt", b"The good part is kept apart.")]}
    with api_client(srv, "bob") as c:
        before = len(listed(c))
        r = c.post("/memories", json={"messages": [good, *messages], "infer": infer})
        assert r.status_code == 400, r.text
        assert message in r.json()["error"]["message"]
        assert len(listed(c)) == before


def test_images_without_infer_are_left_alone(srv: ServerThread, fake: FakeUpstream) -> None:
    visions = len(fake.requests_of("vision"))
    image = {"type": "image_url", "image_url": {"url": png_data_url("I own a red kayak.")}}
    text = {"type": "text", "text": "Photo from the lake trip"}
    with api_client(srv, "bob") as c:
        r = c.post("/memories", json={"messages": user(text, image), "infer": False})
        assert r.status_code == 200, r.text
    assert [x["memory"] for x in r.json()["results"]] == ["Photo from the lake trip"]
    assert len(fake.requests_of("vision")) == visions


def test_oversized_documents_and_bodies_are_refused(
    fake: FakeUpstream, tmp_path: Path, local_embedder: Any
) -> None:
    settings = settings_for(fake, str(tmp_path / "db"), max_document_bytes=2048)
    settings.server.limits.max_body_bytes = 64 * 1024
    with ServerThread(create_app(settings)) as server:
        with api_client(server, "alice") as c:
            big = {"role": "user", "content": [file_part("big.txt", b"words " * 1000)]}
            r = c.post("/memories", json={"messages": [big], "infer": False})
            assert r.status_code == 400 and "larger than 2048 bytes" in r.text
            huge = {"role": "user", "content": [file_part("huge.txt", b"w" * 100_000)]}
            r = c.post("/memories", json={"messages": [huge], "infer": False})
            assert r.status_code == 413


def test_an_image_in_chat_is_learned_once(srv: ServerThread, fake: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key=KEYS["alice"], max_retries=0)
    image = {"type": "image_url", "image_url": {"url": png_data_url(KESTREL)}}
    first = [{"role": "user", "content": [{"type": "text", "text": "look at him!"}, image]}]
    visions = len(fake.requests_of("vision"))
    reply = client.chat.completions.create(model="fake-model", messages=first)
    # The image went to the provider as the client sent it.
    chats = [r for r in fake.requests_of("chat") if "look at him" in str(r.body)]
    assert chats[-1].messages[-1]["content"][1] == image

    def learned() -> list[dict[str, Any]]:
        with api_client(srv, "alice") as c:
            return [m for m in listed(c) if "Kestrel" in m["memory"]]

    wait_for(lambda: bool(learned()))
    (kestrel,) = learned()
    assert kestrel["metadata"]["source"] == "image" and "golden retriever" in kestrel["memory"]
    # The client re-sends the history (image included) with a new turn: not learned again.
    again = [
        *first,
        {"role": "assistant", "content": reply.choices[0].message.content or ""},
        {"role": "user", "content": "what breed is he?"},
    ]
    client.chat.completions.create(model="fake-model", messages=again)
    time.sleep(1.0)
    assert len(fake.requests_of("vision")) == visions + 1
    assert len(learned()) == 1
    # Recalled into the next chat like any memory.
    answer = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "What is my dog called?"}]
    )
    assert "Kestrel" in (answer.choices[0].message.content or "")
    with api_client(srv, "bob") as c:  # and only for alice
        assert not [m for m in listed(c) if "Kestrel" in m["memory"]]


@pytest.mark.parametrize("api", ["responses", "messages"])
def test_images_on_the_other_apis_are_learned(srv: ServerThread, api: str) -> None:
    fact = f"My bicycle is a green {api} tandem."
    png = base64.b64encode(png_with_fact(fact)).decode()
    headers = {"Authorization": f"Bearer {KEYS['bob']}"}
    if api == "responses":
        image = {"type": "input_image", "image_url": f"data:image/png;base64,{png}"}
        said = {"type": "input_text", "text": "my ride"}
        body: dict[str, Any] = {
            "model": "fake-model",
            "input": [{"type": "message", "role": "user", "content": [said, image]}],
        }
    else:
        image = {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": png},
        }
        said = {"type": "text", "text": "my ride"}
        body = {
            "model": "fake-model",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": [said, image]}],
        }
    r = httpx.post(f"{srv.base_url}/v1/{api}", json=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text

    def learned() -> bool:
        with api_client(srv, "bob") as c:
            return any(f"{api} tandem" in m["memory"] for m in listed(c))

    wait_for(learned)


def test_an_image_added_through_the_api_is_learned(srv: ServerThread) -> None:
    image = {
        "type": "image_url",
        "image_url": {"url": png_data_url("My cat Miso sleeps on the piano.")},
    }
    with api_client(srv, "bob") as c:
        r = c.post("/memories", json={"messages": [{"role": "user", "content": [image]}]})
        assert r.status_code == 200, r.text
        assert any("Miso" in x["memory"] for x in r.json()["results"])
        stored = [m for m in listed(c) if "Miso" in m["memory"]]
    assert stored and stored[0]["metadata"]["source"] == "image"
    assert "base64" not in str(stored)  # the image itself is never stored


class ImageServer:
    """A loopback HTTP server that serves one PNG at /pet.png."""

    def __init__(self, body: bytes) -> None:
        served = body

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path != "/pet.png":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(served)))
                self.end_headers()
                self.wfile.write(served)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/pet.png"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_url_images_are_fetched_only_when_allowed(
    fake: FakeUpstream, tmp_path: Path, local_embedder: Any
) -> None:
    pets = ImageServer(png_with_fact("My parrot Pip says hello every morning."))
    try:
        image = {"type": "image_url", "image_url": {"url": pets.url}}
        said = {"type": "text", "text": "I live in Porto"}
        for allowed, storage in ((False, "off"), (True, "on")):
            fetch = {"enabled": True, "schemes": ["http"], "allow_private_hosts": ["127.0.0.1"]}
            settings = settings_for(
                fake, str(tmp_path / storage), fetch_urls=fetch if allowed else {}
            )
            memory = AsyncMemory(
                settings.memory.core_config(), embedder=SharedEmbedder(local_embedder)
            )
            with ServerThread(create_app(settings, memory=memory)) as server:
                client = openai.OpenAI(
                    base_url=server.base_url + "/v1", api_key=KEYS["alice"], max_retries=0
                )
                messages = [{"role": "user", "content": [said, image]}]
                client.chat.completions.create(model="fake-model", messages=messages)
                with api_client(server, "alice") as c:
                    wait_for(lambda: any("Porto" in m["memory"] for m in listed(c)))
                    time.sleep(0.5)
                    texts = [m["memory"] for m in listed(c)]
                assert any("Pip" in t for t in texts) is allowed, texts
    finally:
        pets.close()
