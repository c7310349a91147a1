"""Facts stay in the language the user wrote in, and relative dates resolve against the
exchange's date whatever the language: the prompt rules (pure) and the pipeline end to end,
with the scripted fake writing facts as the rules ask (``tests/fake_languages.py``)."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import openai
import pytest

from memory_core import AsyncMemory, MemoryConfig
from memory_core.prompts import build_fact_extraction_messages, build_update_messages
from tests.fake_upstream import FakeUpstream
from tests.servers import ServerThread, fake_model_proxy, learn_state, wait_learned

SAID_AT = "2026-03-10T18:30:00Z"  # "yesterday" is 2026-03-09 in every language

# language -> (first exchange, its facts, a correcting exchange, the updated memory, a query)
CASES: dict[str, tuple[str, list[str], str, str, str]] = {
    "de": (
        "Ich wohne in Berlin. Ich habe gestern mit Yoga angefangen.",
        ["Der Nutzer wohnt in Berlin", "Der Nutzer hat am 2026-03-09 mit Yoga angefangen"],
        "Ich wohne in München.",
        "Der Nutzer wohnt in München",
        "Wo wohnt der Nutzer?",
    ),
    "es": (
        "Mi hermana vive en Sevilla. Empecé a correr ayer.",
        ["La hermana del usuario vive en Sevilla", "El usuario empezó a correr el 2026-03-09"],
        "Mi hermana vive en Valencia.",
        "La hermana del usuario vive en Valencia",
        "¿Dónde vive la hermana del usuario?",
    ),
    "zh": (
        "我住在上海。我昨天开始学钢琴。",
        ["用户住在上海", "用户2026-03-09开始学钢琴"],
        "我住在北京。",
        "用户住在北京",
        "用户住在哪里？",
    ),
}


@pytest.mark.parametrize(
    ("build", "rule"),
    [
        (lambda: build_fact_extraction_messages([], today="2026-03-10"), "Never translate."),
        (
            lambda: build_fact_extraction_messages([], today="2026-03-10"),
            '"gestern", "ayer", "昨天"',
        ),
        (lambda: build_fact_extraction_messages([], today="2026-03-10"), "Oboe"),
        (lambda: build_update_messages(["f"], []), "never translate"),
    ],
    ids=["extract-no-translation", "extract-relative-dates", "extract-german-example", "update"],
)
def test_prompts_carry_the_language_rules(build: Any, rule: str) -> None:
    assert rule in build()[0]["content"]


@pytest.fixture
async def learner(
    storage_uri: str, embedder: Any, fake_llm_config: dict[str, Any]
) -> AsyncIterator[AsyncMemory]:
    memory = AsyncMemory(
        MemoryConfig(storage_uri=storage_uri, llm=fake_llm_config), embedder=embedder
    )
    await memory.open()
    yield memory
    await memory.close()


@pytest.mark.parametrize("language", list(CASES))
async def test_facts_keep_the_language_and_the_exchange_date(
    learner: AsyncMemory, fake_llm: Any, language: str
) -> None:
    first, facts, correction, updated, _query = CASES[language]
    user = f"{language}-user"
    result = await learner.add(first, user_id=user, timestamp=SAID_AT)
    assert [r["memory"] for r in result["results"]] == facts
    assert "Exchange date: 2026-03-10" in str(fake_llm.requests_of("extract")[-1].messages)
    # A correction updates the memory in its own language, never an English rewrite.
    result = await learner.add(correction, user_id=user, timestamp=SAID_AT)
    assert [(r["event"], r["memory"]) for r in result["results"]] == [("UPDATE", updated)]
    stored = {m["memory"] for m in (await learner.get_all(user_id=user))["results"]}
    assert stored == {updated, facts[1]}


@pytest.fixture(scope="module")
def proxy() -> Iterator[ServerThread]:
    with tempfile.TemporaryDirectory() as storage, FakeUpstream() as fake:
        with ServerThread(fake_model_proxy(fake.url, storage)) as server:
            yield server


@pytest.mark.parametrize("language", list(CASES))
def test_chat_learns_and_recalls_in_the_users_language(proxy: ServerThread, language: str) -> None:
    first, facts, _correction, _updated, query = CASES[language]
    client = openai.OpenAI(base_url=proxy.url, api_key="sk-x", max_retries=0, timeout=20)
    user = f"{language}-{uuid.uuid4().hex[:8]}"
    before = learn_state(proxy)
    client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": first}],
        extra_body={"user_id": user},
    )
    wait_learned(proxy, before)
    listed = httpx.get(proxy.base_url + "/v1/memories", params={"user_id": user}).json()
    # Said now: "yesterday" is the day before the chat (the exchange date, in UTC).
    said = datetime.fromisoformat(listed["results"][0]["created_at"]).date()
    yesterday = (said - timedelta(days=1)).isoformat()
    learned = {item["memory"] for item in listed["results"]}
    assert learned == {fact.replace("2026-03-09", yesterday) for fact in facts}
    reply = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": query}],
        extra_body={"user_id": user},
    )
    block = (reply.choices[0].message.content or "").split("| MEMORIES: ")[-1]
    assert facts[0] in block, block
