"""The memory browser's graph view in real headless Chromium (Debian's package, driven by
Playwright): a user's learned graph drawn as SVG (names as text, never markup), a relation
renamed and another deleted, each change visible through the API. The docs' screenshot
(docs/graph-browser.png) is refreshed with ``MEMPROXY_UPDATE_SCREENSHOT=1``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from tests.conftest import API_KEYS, CHROMIUM, ApiServer

DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "graph-browser.png"
SCREENSHOT = (
    DOCS_SCREENSHOT
    if os.environ.get("MEMPROXY_UPDATE_SCREENSHOT") == "1"
    else Path(tempfile.gettempdir()) / "memproxy-graph-browser.png"
)

# Never skipped: a missing browser is a failing test with the fix in its message.
assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: apt-get install -y chromium"

FACTS = [
    "My sister Maria lives in Lisbon.",
    "Maria works at Acme.",
    "My brother Tom plays chess.",
    "Tom is married to Anna.",
    "My friend Zoe owns <img src=x onerror=alert(1)>.",
    "My sister Maria moved to Porto.",
]


def edges_of(server: ApiServer, user: str, **params: Any) -> list[dict[str, Any]]:
    with server.client("team") as c:
        r = c.get("/v1/graph", params={"user_id": user, **params})
        assert r.status_code == 200, r.text
        return list(r.json()["edges"])


def find(edges: list[dict[str, Any]], relationship: str, destination: str) -> dict[str, Any]:
    return next(
        e for e in edges if e["relationship"] == relationship and e["destination"] == destination
    )


def test_graph_view_draws_renames_and_deletes(
    graph_server: ApiServer, page: tuple[Any, list[str]]
) -> None:
    tab, problems = page
    with graph_server.client("team") as c:
        for text in FACTS:
            body = {"messages": [{"role": "user", "content": text}], "user_id": "lena"}
            assert c.post("/v1/memories", json=body).status_code == 200
    edges = edges_of(graph_server, "lena")
    with graph_server.client("team") as c:
        nodes = c.get("/v1/graph", params={"user_id": "lena"}).json()["nodes"]
    assert len(edges) >= 7

    tab.goto(graph_server.base_url + "/ui/")
    tab.fill("#api-key", API_KEYS["team"])
    tab.click("#connect")
    tab.wait_for_selector("#user-input:visible")
    tab.fill("#user-input", "lena")
    tab.click("#show-graph")
    tab.wait_for_selector("#graph-svg g.edge")
    assert tab.locator("#results").is_hidden()

    # Every valid relation is an edge labelled with its relationship; every entity a node.
    drawn = tab.locator("#graph-svg g.edge")
    assert sorted(drawn.evaluate_all("gs => gs.map(g => g.dataset.id)")) == sorted(
        e["id"] for e in edges
    )
    labels = tab.locator("#graph-svg g.node text").all_text_contents()
    assert sorted(labels) == sorted(n["name"] for n in nodes)
    assert "<img src=x onerror=alert(1)>" in labels  # a hostile name is text, not markup
    assert tab.locator("#graph-svg img, #graph-svg foreignObject").count() == 0
    lisbon = find(edges_of(graph_server, "lena", include_invalid="true"), "lives_in", "Lisbon")
    assert tab.locator(f"#graph-svg g.edge[data-id='{lisbon['id']}']").count() == 0

    # History on request: the superseded relation is drawn too (dashed).
    tab.check("#graph-history")
    tab.wait_for_selector(f"#graph-svg g.edge.invalid[data-id='{lisbon['id']}']")
    tab.uncheck("#graph-history")
    tab.wait_for_selector(f"#graph-svg g.edge[data-id='{lisbon['id']}']", state="detached")

    # Rename: click the edge, type, save -> the label and the API both show the new name.
    brother = find(edges, "brother", "Tom")
    tab.locator(f"#graph-svg text.edge-label[data-id='{brother['id']}']").click()
    tab.wait_for_selector("#edge-panel:not([hidden])")
    assert tab.locator("#edge-text").inner_text() == "User —brother→ Tom"
    tab.fill("#edge-name", "Cousin of")
    tab.click("#edge-rename")
    tab.wait_for_selector("#status:has-text('Renamed.')")
    edge_label = tab.locator(f"#graph-svg text.edge-label[data-id='{brother['id']}']")
    assert edge_label.text_content() == "cousin_of"
    assert find(edges_of(graph_server, "lena"), "cousin_of", "Tom")["id"] == brother["id"]
    SCREENSHOT.parent.mkdir(exist_ok=True)
    tab.screenshot(path=str(SCREENSHOT), full_page=True)

    # Delete (two clicks, no dialog) -> the edge and the entity it alone joined are gone.
    chess = find(edges, "plays", "chess")
    tab.locator(f"#graph-svg text.edge-label[data-id='{chess['id']}']").click()
    tab.wait_for_selector("#edge-panel:not([hidden])")
    tab.click("#edge-delete")
    tab.click("#edge-confirm-delete")
    tab.wait_for_selector(f"#graph-svg g.edge[data-id='{chess['id']}']", state="detached")
    assert "chess" not in tab.locator("#graph-svg g.node text").all_text_contents()
    assert chess["id"] not in {e["id"] for e in edges_of(graph_server, "lena")}

    # Back to the memories: the list shows again.
    tab.click("#load")
    tab.wait_for_selector("li.memory")
    assert tab.locator("#graph-view").is_hidden()
    assert problems == []


def test_graph_view_of_a_bound_key_and_an_empty_graph(
    graph_server: ApiServer, page: tuple[Any, list[str]]
) -> None:
    """A key bound to alice draws her (empty) graph and says so; no other user is offered."""
    tab, problems = page
    tab.goto(graph_server.base_url + "/ui/")
    tab.fill("#api-key", API_KEYS["alice"])
    tab.click("#connect")
    tab.wait_for_selector("#user-select:visible")
    tab.click("#show-graph")
    tab.wait_for_selector("#status:has-text('No relations yet.')")
    assert tab.locator("#graph-svg g.edge").count() == 0
    assert "alice" in tab.locator("#graph-title").inner_text()
    assert problems == []


def test_graph_view_says_when_graph_memory_is_off(
    api_server: ApiServer, page: tuple[Any, list[str]]
) -> None:
    tab, problems = page
    tab.goto(api_server.base_url + "/ui/")
    tab.fill("#api-key", API_KEYS["team"])
    tab.click("#connect")
    tab.wait_for_selector("#user-input:visible")
    tab.fill("#user-input", "alice")
    tab.click("#show-graph")
    tab.wait_for_selector("#status.error")
    assert "409" in tab.locator("#status").inner_text()
    assert "memory.graph.enabled" in tab.locator("#status").inner_text()
    # The failed fetch itself is logged by Chromium; nothing else may be.
    assert all("409" in p for p in problems), problems


def test_relations_open_from_the_keyboard(
    graph_server: ApiServer, page: tuple[Any, list[str]]
) -> None:
    tab, problems = page
    with graph_server.client("team") as c:
        body = {"messages": [{"role": "user", "content": "My brother Tom plays chess."}]}
        assert c.post("/v1/memories", json={**body, "user_id": "milo"}).status_code == 200
    tab.goto(graph_server.base_url + "/ui/")
    tab.fill("#api-key", API_KEYS["team"])
    tab.click("#connect")
    tab.wait_for_selector("#user-input:visible")
    tab.fill("#user-input", "milo")
    tab.click("#show-graph")
    tab.wait_for_selector("#graph-svg text.edge-label")
    label = tab.locator("#graph-svg text.edge-label", has_text="plays")
    label.focus()
    tab.keyboard.press("Enter")
    tab.wait_for_selector("#edge-panel:not([hidden])")
    assert tab.locator("#edge-text").inner_text() == "Tom —plays→ chess"
    assert problems == []
