"""The memory browser's Learning tab in real headless Chromium: a key bound to alice sees her
learning jobs (facts, decisions with the model's reasons, a dead letter's error), never
bob's; Retry requeues the dead letter and, the model healthy again, the refreshed log shows
it applied. ``MEMPROXY_UPDATE_SCREENSHOT=1`` refreshes docs/learning-log.png."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SharedEmbedder
from tests.fake_answers import SCRIPTED_REASONS
from tests.fake_upstream import FakeUpstream
from tests.learning_servers import KEYS, KeyedProxy, keyed_config
from tests.queue_procs import wait_drained, wait_until

DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "learning-log.png"
SCREENSHOT = (
    DOCS_SCREENSHOT
    if os.environ.get("MEMPROXY_UPDATE_SCREENSHOT") == "1"
    else Path(tempfile.gettempdir()) / "memproxy-learning-log.png"
)


@pytest.fixture
def proxy(tmp_path: Path, fake_llm: FakeUpstream, embedder: SharedEmbedder) -> Iterator[KeyedProxy]:
    config = keyed_config(
        tmp_path / "proxy.yaml",
        fake_url=fake_llm.url,
        storage=tmp_path / "data",
        queue={"max_attempts": 2, "backoff_base_s": 0.05},
    )
    with KeyedProxy(config, embedder) as server:
        yield server


def test_learning_tab_shows_jobs_and_retries_a_dead_letter(
    proxy: KeyedProxy, fake_llm: FakeUpstream, page: tuple[Any, list[str]]
) -> None:
    tab, problems = page
    proxy.chat("alice", "I live in Paris and I have a dog named <b>Biscuit</b>.")
    wait_drained(proxy, timeout_s=30)
    proxy.chat("alice", "I moved to Berlin.")
    proxy.chat("bob", "I play the trumpet.")
    wait_drained(proxy, timeout_s=30)
    fake_llm.set_failures(invalid_json_next=1_000)  # prose to every memory prompt: it dies
    proxy.chat("alice", "I work at Acme.")
    wait_until(lambda: proxy.ready()["queue"]["dead"] == 1, timeout_s=30, what="the dead job")

    tab.goto(proxy.url + "/ui/")
    tab.fill("#api-key", KEYS["alice"])
    tab.click("#connect")
    tab.wait_for_selector("li.memory")
    tab.click("#tab-learning")
    tab.wait_for_selector("li.job >> nth=2")
    assert tab.locator("#results").is_hidden() and tab.locator("#search-form").is_hidden()
    jobs = tab.locator("li.job")
    assert jobs.count() == 3  # alice's three; bob's job is not shown
    assert "trumpet" not in tab.locator("#jobs").inner_text()
    assert tab.locator("#learning-title").inner_text() == "3 learning jobs of alice"

    dead, moved, first = jobs.nth(0), jobs.nth(1), jobs.nth(2)
    assert dead.locator(".job-status").inner_text() == "dead"
    assert "no JSON object" in dead.locator(".job-error").inner_text()
    assert "attempts 2" in dead.locator(".job-meta").inner_text()
    assert dead.locator(".retry-button").is_visible()
    update = moved.locator(".decision", has_text="UPDATE")
    assert update.inner_text() == (
        f"UPDATE User lives in Paris → User lives in Berlin ({SCRIPTED_REASONS['UPDATE']})"
        " · update answer"
    )
    assert moved.locator(".retry-button").is_hidden()
    facts = first.locator(".facts li").all_inner_texts()
    assert facts == ["User lives in Paris", "User has a dog named <b>Biscuit</b>"]  # as text
    assert first.locator(".facts b").count() == 0
    SCREENSHOT.parent.mkdir(exist_ok=True)
    tab.screenshot(path=str(SCREENSHOT), full_page=True)

    # Retry the dead letter with the model healthy again; the refreshed log shows it applied.
    fake_llm.set_failures(invalid_json_next=0)
    dead.locator(".retry-button").click()
    tab.wait_for_selector("#status:has-text('Queued again')")
    wait_drained(proxy, timeout_s=30)
    tab.click("#learning-refresh")
    tab.wait_for_selector("li.job >> nth=3")
    newest = tab.locator("li.job").first
    assert newest.locator(".job-status").inner_text() == "applied"
    assert newest.locator(".facts li").all_inner_texts() == ["User works at Acme"]
    assert "Failed attempt: ExtractionError" in newest.locator(".job-error").inner_text()

    # Back to the memories: the retried job's memory is there.
    tab.click("#tab-memories")
    tab.click("#load")
    tab.wait_for_selector("li.memory:has-text('User works at Acme')")
    assert problems == []
