"""Open local mode against a real browser (Debian's Chromium, as in tests/test_browser.py): a
page from another origin cannot write, reset or chat through the user's local proxy, with
any request a page can make; the memory browser on the proxy's own origin still works."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from memory_core import AsyncMemory
from proxy.app import create_app
from proxy.settings import Settings
from tests.conftest import HashEmbedder
from tests.servers import ServerThread

ATTACK_PAGE = """<!doctype html><meta charset=utf-8><title>evil</title>
<form id=f method=POST enctype=text/plain action="PROXY/v1/memories" target=sink>
<input name='{"messages":"form planted","user_id":"victim","infer":false,"x":"' value='"}'>
</form><iframe name=sink></iframe>
<script>
const proxy = "PROXY";
const body = JSON.stringify({messages: "planted by a web page", user_id: "victim", infer: false});
async function attempt(name, url, init) {
  try { const r = await fetch(url, init); return name + ":" + r.status; }
  catch (e) { return name + ":blocked"; }
}
window.results = (async () => {
  const out = [];
  out.push(await attempt("text-plain", proxy + "/v1/memories",
    {method: "POST", mode: "no-cors", body, headers: {"Content-Type": "text/plain"}}));
  out.push(await attempt("blob", proxy + "/v1/memories",
    {method: "POST", mode: "no-cors", body: new Blob([body])}));
  out.push(await attempt("json-cors", proxy + "/v1/memories",
    {method: "POST", body, headers: {"Content-Type": "application/json"}}));
  out.push(await attempt("reset", proxy + "/v1/reset", {method: "POST", mode: "no-cors"}));
  out.push(await attempt("chat", proxy + "/v1/chat/completions", {method: "POST", mode: "no-cors",
    body: JSON.stringify({model: "m", messages: [{role: "user", content: "hi"}], user_id: "v"}),
    headers: {"Content-Type": "text/plain"}}));
  out.push(await attempt("read", proxy + "/v1/memories?user_id=victim", {}));
  document.getElementById("f").submit();
  await new Promise(r => setTimeout(r, 500));
  return out;
})();
</script>"""


@pytest.fixture(scope="module")
def local_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    settings = Settings.from_dict({"memory": {"storage_uri": str(tmp_path_factory.mktemp("o"))}})
    memory = AsyncMemory(settings.memory.core_config(), embedder=HashEmbedder())
    with ServerThread(create_app(settings, memory=memory)) as server:
        yield server


@pytest.fixture(scope="module")
def evil_site(local_proxy: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The attack page on another origin (127.0.0.2: another host, same machine)."""
    root = Path(tmp_path_factory.mktemp("evil"))
    (root / "index.html").write_text(ATTACK_PAGE.replace("PROXY", local_proxy.base_url))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.2:{server.server_address[1]}/index.html"
    server.shutdown()
    server.server_close()


def memories_of(server: ServerThread, user: str) -> list[str]:
    r = httpx.get(server.base_url + "/v1/memories", params={"user_id": user})
    return [item["memory"] for item in r.json()["results"]]


def test_a_page_from_another_origin_changes_nothing(
    local_proxy: ServerThread, evil_site: str, page: tuple[Any, list[str]]
) -> None:
    body = {"messages": "victim's real memory", "user_id": "victim", "infer": False}
    assert httpx.post(local_proxy.base_url + "/v1/memories", json=body).status_code == 200
    tab, _problems = page  # the page's own failed fetches are logged: expected here
    tab.goto(evil_site)
    results = tab.evaluate("window.results")
    statuses = dict(item.split(":", 1) for item in results)
    # no-cors answers are opaque (status 0): the proxy refused them, as the store shows.
    assert statuses["json-cors"] == "blocked" and statuses["read"] == "blocked", statuses
    assert memories_of(local_proxy, "victim") == ["victim's real memory"]


def test_the_memory_browser_works_on_its_own_origin(
    local_proxy: ServerThread, page: tuple[Any, list[str]]
) -> None:
    tab, problems = page
    tab.goto(local_proxy.base_url + "/ui/")
    tab.click("#connect")  # open mode: no key
    tab.wait_for_selector("#user-input:visible")
    tab.fill("#user-input", "carol")
    tab.click("#load")
    tab.fill("#add-input", "Carol grows tomatoes")
    tab.click("#add")
    tab.wait_for_selector("li.memory:has-text('Carol grows tomatoes')")
    row = tab.locator("li.memory").first
    row.locator(".edit-button").click()
    row.locator("textarea").fill("Carol grows cherry tomatoes")
    row.locator(".save").click()
    tab.wait_for_selector("#status:has-text('Saved.')")
    row.locator(".delete-button").click()
    row.locator(".confirm-delete").click()
    tab.wait_for_selector("li.memory", state="detached")
    assert memories_of(local_proxy, "carol") == []
    assert problems == []
