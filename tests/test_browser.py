"""The memory browser in real headless Chromium (Debian's package, driven by Playwright):
loads without console errors; list -> edit -> the change is visible through the API ->
history -> delete. Needs Debian's Chromium (``apt-get install -y chromium``); .ci/run
installs it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from tests.conftest import API_KEYS, CHROMIUM, ApiServer

# The docs' screenshot is refreshed on request only, so a test run leaves the tree clean.
DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "memory-browser.png"
SCREENSHOT = (
    DOCS_SCREENSHOT
    if os.environ.get("MEMPROXY_UPDATE_SCREENSHOT") == "1"
    else Path(tempfile.gettempdir()) / "memproxy-memory-browser.png"
)

# Never skipped: a missing browser is a failing test with the fix in its message.
assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: apt-get install -y chromium"


def seed(server: ApiServer) -> dict[str, str]:
    ids = {}
    with server.client("team") as c:
        for user, texts in {
            "alice": [
                "Alice is vegetarian",
                "Alice's sister lives in Lisbon",
                "Alice plays the cello on weekends",
                "<img src=x onerror=alert(1)> is just text",
            ],
            "bob": ["Bob's secret: he hates jazz"],
        }.items():
            r = c.post("/memories", json={"messages": texts, "user_id": user, "infer": False})
            assert r.status_code == 200, r.text
            for item in r.json()["results"]:
                ids[item["memory"]] = item["id"]
    return ids


def connect_as_team(tab: Any, server: ApiServer) -> None:
    """Open the browser with the all-users key, ready to type a user."""
    tab.goto(server.base_url + "/ui/")
    tab.fill("#api-key", API_KEYS["team"])
    tab.click("#connect")
    tab.wait_for_selector("#user-input:visible")


def test_browse_edit_history_delete(api_server: ApiServer, page: tuple[Any, list[str]]) -> None:
    tab, problems = page
    ids = seed(api_server)
    target = ids["Alice plays the cello on weekends"]

    tab.goto(api_server.base_url + "/")  # redirects to /ui/
    assert tab.url.endswith("/ui/")
    tab.fill("#api-key", API_KEYS["alice"])
    tab.click("#connect")
    # A key bound to alice: the user picker offers only alice, and her list loads.
    tab.wait_for_selector(f"li.memory[data-id='{target}']")
    assert tab.locator("#user-select option").all_inner_texts() == ["alice"]
    texts = tab.locator("li.memory .text").all_inner_texts()
    assert len(texts) == 4 and "Bob's secret: he hates jazz" not in texts
    assert "<img src=x onerror=alert(1)> is just text" in texts  # shown as text, not markup
    assert tab.evaluate("sessionStorage.getItem('memproxy.apiKey')") == API_KEYS["alice"]

    # Search.
    tab.fill("#search-input", "where does her sister live")
    tab.click("#search")
    tab.wait_for_selector("#results-title:has-text('results for')")
    first = tab.locator("li.memory .text").first.inner_text()
    assert first == "Alice's sister lives in Lisbon"
    tab.click("#clear-search")
    tab.wait_for_selector(f"li.memory[data-id='{target}']")

    # Edit -> the change is visible through the API.
    row = tab.locator(f"li.memory[data-id='{target}']")
    row.locator(".edit-button").click()
    row.locator("textarea").fill("Alice plays the viola on weekends")
    row.locator(".save").click()
    tab.wait_for_selector("#status:has-text('Saved.')")
    assert row.locator(".text").inner_text() == "Alice plays the viola on weekends"
    with api_server.client("alice") as c:
        assert c.get(f"/v1/memories/{target}").json()["memory"] == (
            "Alice plays the viola on weekends"
        )

    # History.
    row.locator(".history-button").click()
    tab.wait_for_selector("#history:not([hidden]) #history-list li")
    events = tab.locator("#history-list li strong").all_inner_texts()
    assert events == ["ADD", "UPDATE"]
    assert "→" in tab.locator("#history-list li").nth(1).inner_text()
    SCREENSHOT.parent.mkdir(exist_ok=True)
    tab.screenshot(path=str(SCREENSHOT), full_page=True)

    # Delete (two clicks, no browser dialog) -> gone through the API too.
    row.locator(".delete-button").click()
    row.locator(".confirm-delete").click()
    tab.wait_for_selector(f"li.memory[data-id='{target}']", state="detached")
    with api_server.client("alice") as c:
        assert c.get(f"/v1/memories/{target}").status_code == 404

    assert problems == []


def test_memory_sources_are_shown(api_server: ApiServer, page: tuple[Any, list[str]]) -> None:
    tab, problems = page
    sourced = {
        "The boiler was serviced in March": {
            "source": "document",
            "filename": "house.pdf",
            "page": 2,
            "start": 0,
            "end": 32,
        },
        "Carol's dog is a golden retriever": {"source": "image"},
        "Carol likes green tea": {"source": "mcp", "mood": "calm"},
    }
    with api_server.client("team") as c:
        for text, metadata in sourced.items():
            body = {"messages": [text], "user_id": "carol", "infer": False, "metadata": metadata}
            assert c.post("/memories", json=body).status_code == 200
    connect_as_team(tab, api_server)
    tab.fill("#user-input", "carol")
    tab.click("#load")
    tab.wait_for_selector("li.memory:has-text('boiler')")
    shown = {
        text: tab.locator("li.memory", has_text=text).locator(".meta").inner_text()
        for text in sourced
    }
    assert "from house.pdf p. 2" in shown["The boiler was serviced in March"]
    assert '"start"' not in shown["The boiler was serviced in March"]
    assert "from an image" in shown["Carol's dog is a golden retriever"]
    assert 'via mcp · metadata {"mood":"calm"}' in shown["Carol likes green tea"]
    assert not problems


def test_wrong_key_shows_the_error(api_server: ApiServer, page: tuple[Any, list[str]]) -> None:
    tab, problems = page
    tab.goto(api_server.base_url + "/ui/")
    tab.fill("#api-key", "sk-not-a-key")
    tab.click("#connect")
    tab.wait_for_selector("#status.error")
    assert "401" in tab.locator("#status").inner_text()
    assert tab.locator("#controls").is_hidden()
    # The failed fetch itself is logged by Chromium; nothing else may be.
    assert all("401" in p for p in problems), problems


def test_any_user_key_types_a_user(api_server: ApiServer, page: tuple[Any, list[str]]) -> None:
    tab, problems = page
    seed_bob = "Bob likes sailing"
    with api_server.client("team") as c:
        c.post("/memories", json={"messages": seed_bob, "user_id": "bob2", "infer": False})
    connect_as_team(tab, api_server)
    tab.fill("#user-input", "bob2")
    tab.click("#load")
    tab.wait_for_selector("li.memory")
    assert tab.locator("li.memory .text").all_inner_texts() == [seed_bob]
    tab.fill("#add-input", "Bob2 owns a red boat")
    tab.click("#add")
    tab.wait_for_selector("li.memory:has-text('Bob2 owns a red boat')")
    with api_server.client("team") as c:
        listed = c.get("/v1/memories", params={"user_id": "bob2"}).json()["results"]
        assert {x["memory"] for x in listed} == {seed_bob, "Bob2 owns a red boat"}
    assert problems == []


def test_scopes_filter_add_and_delete_all(
    api_server: ApiServer, page: tuple[Any, list[str]]
) -> None:
    """agent_id / run_id / app_id narrow what is shown, added and deleted; the rest stays."""
    tab, problems = page
    with api_server.client("team") as c:
        for text, ids in {
            "Dana's tutor app: she studies Portuguese": {"app_id": "tutor"},
            "Dana's support app: her router is a Fritzbox": {"app_id": "support"},
            "Dana likes hiking": {},
        }.items():
            body = {"messages": [text], "user_id": "dana", "infer": False, **ids}
            assert c.post("/memories", json=body).status_code == 200
    connect_as_team(tab, api_server)
    tab.fill("#user-input", "dana")
    tab.click("#scope summary")
    tab.fill("#app-input", "tutor")
    tab.click("#load")
    tab.wait_for_selector("#results-title:has-text('app_id tutor')")
    assert tab.locator("li.memory .text").all_inner_texts() == [
        "Dana's tutor app: she studies Portuguese"
    ]
    assert "app_id tutor" in tab.locator("li.memory .meta").first.inner_text()
    tab.fill("#add-input", "Dana's tutor app: she is at level B1")
    tab.click("#add")
    tab.wait_for_selector("li.memory:has-text('level B1')")
    tab.click("#delete-scope")
    tab.click("#confirm-delete-scope")
    tab.wait_for_selector("#status:has-text('Deleted 2 memories')")
    with api_server.client("team") as c:
        left = c.get("/v1/memories", params={"user_id": "dana"}).json()["results"]
    assert sorted(x["memory"] for x in left) == [
        "Dana likes hiking",
        "Dana's support app: her router is a Fritzbox",
    ]
    assert problems == []


def test_api_page_renders(api_server: ApiServer, page: tuple[Any, list[str]]) -> None:
    tab, problems = page
    tab.goto(api_server.base_url + "/docs")
    assert tab.title() == "memproxy memory API"
    assert tab.locator("section.op h2 code", has_text="/memories/{memory_id}/history").count() == 1
    assert tab.locator("td code", has_text="top_k").count() >= 2
    assert problems == []


def test_expiration_immutable_and_feedback(
    api_server: ApiServer, page: tuple[Any, list[str]]
) -> None:
    tab, problems = page
    with api_server.client("team") as c:

        def add(text: str, **fields: Any) -> str:
            body = {"messages": [text], "user_id": "dora", "infer": False, **fields}
            r = c.post("/memories", json=body)
            assert r.status_code == 200, r.text
            return str(r.json()["results"][0]["id"])

        gone = add("Dora's old phone number was 555-0100", expiration_date="2020-01-31")
        fixed = add("Dora is allergic to penicillin", immutable=True)
        plain = add("Dora likes hiking")
    tab.goto(api_server.base_url + "/ui/")
    tab.fill("#api-key", API_KEYS["team"])
    tab.click("#connect")
    tab.wait_for_selector("#user-input:visible")
    tab.fill("#user-input", "dora")
    tab.click("#load")
    tab.wait_for_selector(f"li.memory[data-id='{plain}']")
    assert tab.locator(f"li.memory[data-id='{gone}']").count() == 0  # expired: hidden
    fixed_row = tab.locator(f"li.memory[data-id='{fixed}']")
    assert fixed_row.locator(".badge.immutable").inner_text() == "immutable"
    tab.check("#show-expired")
    tab.wait_for_selector(f"li.memory[data-id='{gone}'].expired")
    gone_row = tab.locator(f"li.memory[data-id='{gone}']")
    assert gone_row.locator(".badge.expired").inner_text() == "expired after 2020-01-31"

    # Feedback from the picker, visible through the API and as a badge.
    row = tab.locator(f"li.memory[data-id='{plain}']")
    row.locator(".feedback").select_option("VERY_NEGATIVE")
    tab.wait_for_selector("#status:has-text('Feedback saved: VERY_NEGATIVE.')")
    assert "hidden from search and recall" in row.locator(".badges").inner_text()
    with api_server.client("team") as c:
        assert c.get(f"/v1/memories/{plain}").json()["feedback"] == "VERY_NEGATIVE"
        found = c.post("/v1/search", json={"query": "hiking", "user_id": "dora"}).json()
        assert plain not in {x["id"] for x in found["results"]}

    # Editing an immutable memory's text is refused until it is unlocked; a date can be set.
    fixed_row.locator(".edit-button").click()
    assert fixed_row.locator(".edit .immutable").is_checked()
    fixed_row.locator("textarea").fill("Dora is allergic to nothing")
    fixed_row.locator(".save").click()
    tab.wait_for_selector("#status.error:has-text('409')")
    fixed_row.locator("textarea").fill("Dora is allergic to penicillin")
    fixed_row.locator(".edit .expiry").fill("2099-12-31")
    fixed_row.locator(".save").click()
    tab.wait_for_selector("#status:has-text('Saved.')")
    assert fixed_row.locator(".badge.expires").inner_text() == "visible until 2099-12-31"
    fixed_row.locator(".edit-button").click()
    fixed_row.locator(".edit .immutable").uncheck()
    fixed_row.locator("textarea").fill("Dora is allergic to amoxicillin")
    fixed_row.locator(".save").click()
    tab.wait_for_selector(f"li.memory[data-id='{fixed}'] .text:has-text('amoxicillin')")
    with api_server.client("team") as c:
        item = c.get(f"/v1/memories/{fixed}").json()
    assert item["memory"] == "Dora is allergic to amoxicillin"
    assert item["immutable"] is False and item["expiration_date"] == "2099-12-31"

    # Adding with an expiry date and immutable from the add form.
    tab.fill("#add-input", "Dora's flight lands at 9")
    tab.fill("#add-expiry", "2099-06-30")
    tab.check("#add-immutable")
    tab.click("#add")
    tab.wait_for_selector("li.memory:has-text('flight lands') .badge.immutable")
    with api_server.client("team") as c:
        listed = c.get("/v1/memories", params={"user_id": "dora"}).json()["results"]
    flight = next(x for x in listed if "flight" in x["memory"])
    assert flight["immutable"] is True and flight["expiration_date"] == "2099-06-30"
    # The 409 fetch itself is logged by Chromium; nothing else may be.
    assert all("409" in p for p in problems), problems
