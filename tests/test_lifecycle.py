"""Expiration, immutable memories and feedback (issue 20): the pure rules, the library on real
LanceDB (including a store written before the columns existed), the REST API on a real server,
and the chat path, where the memory block is what the fake upstream echoes back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import lancedb
import openai
import orjson
import pyarrow as pa
import pytest

from memory_core import AsyncMemory, MemoryConfig
from memory_core.errors import ImmutableMemory, InvalidInput
from memory_core.extraction import Decision
from memory_core.learning_report import LearningReport
from memory_core.lifecycle import (
    IMMUTABLE_REASON,
    MAX_TTL_S,
    check_feedback,
    default_expiry,
    expiration_day,
    expiry_after,
    parse_expiration_date,
    protect_immutable,
)
from memory_core.llm_client import CallOptions
from memory_core.records import SEARCH_TEXT, content_hash
from memory_core.retrieval import apply_feedback
from memory_core.scope_cache import CachingStore
from memory_core.store_schema import HISTORY, HISTORY_SCHEMA, LIFECYCLE_FIELDS, MEMORIES
from tests.conftest import ApiServer, HashEmbedder
from tests.fake_upstream import FakeUpstream
from tests.servers import ServerThread, fake_model_proxy, learn_state, wait_learned

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)

# ---- the pure rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expires_at"),
    [
        ("2030-01-31", "2030-02-01T00:00:00.000000+00:00"),  # the day itself is included
        ("2028-02-29", "2028-03-01T00:00:00.000000+00:00"),
        ("2030-12-31", "2031-01-01T00:00:00.000000+00:00"),
    ],
)
def test_expiration_date_is_the_last_visible_day(given: str, expires_at: str) -> None:
    assert parse_expiration_date(given) == expires_at
    assert expiration_day(expires_at) == given


@pytest.mark.parametrize(
    "given",
    [
        "2030-1-31",
        "2030-02-30",
        "2029-02-29",
        "2030-01-31T00:00:00Z",
        " 2030-01-31",
        "31.01.2030",
        "tomorrow",
        "",
        "9999-12-31",
        "２０３０-01-31",  # full-width digits match \d but are no date
    ],
)
def test_expiration_date_is_parsed_strictly(given: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_expiration_date(given)
    assert caught.value.param == "expiration_date"


@pytest.mark.parametrize("ttl", [0, -5, MAX_TTL_S + 1, True, 1.5, "60", None])
def test_ttl_is_bounded(ttl: Any) -> None:
    with pytest.raises(InvalidInput):
        expiry_after(ttl, NOW)


def test_ttl_and_category_defaults() -> None:
    assert expiry_after(60, NOW) == "2030-05-01T12:01:00.000000+00:00"
    by_category = {"travel": 86400, "plans": 3600}
    assert default_expiry(["travel", "plans", "food"], by_category, NOW) == (
        "2030-05-01T13:00:00.000000+00:00"  # the shortest TTL of the memory's categories
    )
    assert default_expiry(["food"], by_category, NOW) is None
    assert default_expiry([], by_category, NOW) is None


@pytest.mark.parametrize(
    ("feedback", "reason", "stored"),
    [
        ("positive", None, ("POSITIVE", None)),
        ("Very_Negative", "  wrong\n person ", ("VERY_NEGATIVE", "wrong person")),
        ("NEGATIVE", "   ", ("NEGATIVE", None)),
        (None, "ignored when the feedback is taken back", (None, None)),
    ],
)
def test_feedback_values(feedback: Any, reason: Any, stored: tuple[Any, Any]) -> None:
    assert check_feedback(feedback, reason) == stored


@pytest.mark.parametrize(
    ("feedback", "reason"),
    [("meh", None), ("", None), (1, None), ("POSITIVE", "x" * 1001), ("POSITIVE", 5)],
)
def test_bad_feedback_is_refused(feedback: Any, reason: Any) -> None:
    with pytest.raises(InvalidInput):
        check_feedback(feedback, reason)


def _row(memory_id: str, text: str, *, immutable: bool) -> dict[str, Any]:
    return {"id": memory_id, "memory": text, "immutable": immutable}


BERLIN, PARIS, TEA = "User lives in Berlin", "User lives in Paris", "User likes tea"
REFUSED = Decision("NONE", PARIS, "m1", reason=IMMUTABLE_REASON)  # what the learning log shows


@pytest.mark.parametrize(
    ("decision", "kept", "refused"),
    [
        # A contradiction of an immutable memory: its text becomes a memory of its own.
        (
            Decision("UPDATE", BERLIN, "m1", "moved"),
            [REFUSED, Decision("ADD", BERLIN, reason="moved")],
            ["m1"],
        ),
        (Decision("DELETE", PARIS, "m1"), [REFUSED], ["m1"]),
        (Decision("NONE", PARIS, "m1"), [Decision("NONE", PARIS, "m1")], []),
        (Decision("UPDATE", TEA + " a lot", "m2"), [Decision("UPDATE", TEA + " a lot", "m2")], []),
        (Decision("DELETE", TEA, "m2"), [Decision("DELETE", TEA, "m2")], []),
        (Decision("ADD", "User has a cat"), [Decision("ADD", "User has a cat")], []),
    ],
)
def test_protect_immutable(decision: Decision, kept: list[Decision], refused: list[str]) -> None:
    existing = {
        "m1": _row("m1", "User lives in Paris", immutable=True),
        "m2": _row("m2", "User likes tea", immutable=False),
    }
    got_kept, got_refused = protect_immutable([decision], existing)
    assert got_kept == kept
    assert [r["id"] for r in got_refused] == refused
    assert all(r["event"] == "NONE" and r["reason"] == IMMUTABLE_REASON for r in got_refused)


def test_negative_feedback_moves_a_memory_down() -> None:
    rows = [{"id": "a", "feedback": "NEGATIVE"}, {"id": "b"}, {"id": "c", "feedback": "POSITIVE"}]
    fused = [(rows[0], 0.9, 0.30), (rows[1], 0.8, 0.25), (rows[2], 0.7, 0.20)]
    order = [row["id"] for row, _s, _f in apply_feedback(fused, weight=1.0, unit=0.1)]
    assert order == ["b", "c", "a"]  # a: 0.30 - 0.1; c: 0.20 + 0.025
    assert apply_feedback(fused, weight=0.0, unit=0.1) == fused
    plain = [(rows[1], 0.8, 0.25)]
    assert apply_feedback(plain, weight=1.0, unit=0.1) == plain


# ---- the library on LanceDB ----------------------------------------------------------------


class UpdatingLLM:
    """Extraction: each ``user:`` line is a fact. Update: the offered memory about where the
    user lives is UPDATEd to the first fact, every other one DELETEd (the worst an extraction
    model can answer)."""

    async def complete(self, messages: list[dict[str, Any]], *, call: CallOptions) -> str:
        text = messages[-1]["content"]
        if "<new_facts>" in text:
            facts = orjson.loads(text.split("<new_facts>")[1].split("</new_facts>")[0])
            offered = orjson.loads(
                text.split("<existing_memories>")[1].split("</existing_memories>")[0]
            )
            decisions = [
                {"id": m["id"], "text": facts[0], "event": "UPDATE"}
                if " lives in " in m["text"]
                else {"id": m["id"], "text": m["text"], "event": "DELETE"}
                for m in offered
            ]
            return orjson.dumps({"memory": decisions}).decode()
        conversation = text.split("<conversation>")[1].split("</conversation>")[0]
        facts = [line[6:] for line in conversation.strip().splitlines() if line.startswith("user:")]
        return orjson.dumps({"facts": facts}).decode()


@pytest.fixture
async def lance(tmp_path: Path) -> Any:
    config = MemoryConfig(
        storage_uri=str(tmp_path / "db"),
        search={"mode": "vector"},
        duplicate_threshold=None,
        expiration={"by_category": {"plans": 3600}},
    )
    memory = AsyncMemory(config, embedder=HashEmbedder(), llm=UpdatingLLM())
    await memory.open()
    yield memory
    await memory.close()


async def test_expired_memories_are_never_searched_but_kept_until_purged(lance: Any) -> None:
    old = await lance.add(
        "my locker code is 4711", user_id="u", infer=False, timestamp="2020-01-01", ttl_s=60
    )
    live = await lance.add("my locker is in hall B", user_id="u", infer=False)
    dated = await lance.add(
        "my locker key is blue", user_id="u", infer=False, expiration_date="2020-06-30"
    )
    expired = {old["results"][0]["id"], dated["results"][0]["id"]}
    found = await lance.search("locker", user_id="u")
    assert [r["id"] for r in found["results"]] == [live["results"][0]["id"]]
    listed = await lance.get_all(user_id="u")
    assert [r["id"] for r in listed["results"]] == [live["results"][0]["id"]]
    everything = await lance.search("locker", user_id="u", include_expired=True)
    assert {r["id"] for r in everything["results"]} == expired | {live["results"][0]["id"]}
    item = await lance.get(dated["results"][0]["id"])  # by id, as Mem0: always returned
    assert item["expiration_date"] == "2020-06-30"
    # Saying an expired memory again stores it anew (the exact-text guard ignores it).
    again = await lance.add("my locker code is 4711", user_id="u", infer=False)
    assert again["results"][0]["event"] == "ADD"

    store = lance.store
    assert isinstance(store, CachingStore)
    seen: list[Any] = []

    class Watcher:  # what webhooks and profile rebuilds watch
        async def memories_changed(self, changes: Any) -> None:
            seen.extend(changes)

    lance.watch(Watcher())
    await store.optimize()  # the maintenance: purges, each with a history row
    assert sorted((c.memory_id, c.event, c.source) for c in seen) == sorted(
        (memory_id, "DELETE", "expired") for memory_id in expired
    )
    left = await lance.get_all(user_id="u", include_expired=True)
    assert {r["id"] for r in left["results"]} == {
        live["results"][0]["id"],
        again["results"][0]["id"],
    }
    for memory_id in expired:
        history = await lance.history(memory_id)
        assert [(h["event"], h["source"]) for h in history] == [
            ("ADD", None),
            ("DELETE", "expired"),
        ]
        assert history[-1]["is_deleted"] is True


async def test_expiry_is_judged_at_read_time_in_the_scope_cache(lance: Any) -> None:
    store = lance.store
    assert isinstance(store, CachingStore)
    soon = await lance.add("my parking spot is 42", user_id="c", infer=False, ttl_s=2)
    await lance.add("my parking permit is green", user_id="c", infer=False)
    assert len((await lance.search("parking", user_id="c"))["results"]) == 2
    await store.cache.loads()
    assert await store.scope_index(lance_scope("c")) is not None  # served from the cache now
    hits_before = store.cache.hits
    expires = datetime.fromisoformat((await lance.get(soon["results"][0]["id"]))["expires_at"])
    await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.05)
    found = await lance.search("parking", user_id="c")
    assert [r["memory"] for r in found["results"]] == ["my parking permit is green"]
    assert store.cache.hits > hits_before  # no write, no purge: the cached scope filtered it


def lance_scope(user: str) -> Any:
    from memory_core.types import Scope

    return Scope(user)


async def test_category_defaults_and_explicit_expiry(lance: Any) -> None:
    said = "2030-05-01T12:00:00+00:00"
    plan = await lance.add(
        "dinner with Tom on Friday", user_id="k", infer=False, categories=["plans"], timestamp=said
    )
    item = await lance.get(plan["results"][0]["id"])
    assert item["categories"] == ["plans"]
    assert item["expires_at"] == "2030-05-01T13:00:00.000000+00:00"  # 3600 s after it was said
    explicit = await lance.add(
        "Tom's birthday party",
        user_id="k",
        infer=False,
        categories=["plans"],
        expiration_date="2031-01-01",
    )
    assert (await lance.get(explicit["results"][0]["id"]))["expiration_date"] == "2031-01-01"
    for bad in (
        {"categories": "plans"},
        {"categories": [""]},
        {"categories": [str(i) for i in range(17)]},
        {"ttl_s": 60, "expiration_date": "2031-01-01"},
        {"immutable": "yes"},
    ):
        with pytest.raises(InvalidInput):
            await lance.add("x y z", user_id="k", infer=False, **bad)


async def test_extraction_never_changes_an_immutable_memory(lance: Any) -> None:
    ids = {}
    for text, immutable in (
        ("User lives in Paris", True),
        ("User likes green tea", True),
        ("User has a dog", False),
    ):
        added = await lance.add(text, user_id="i", infer=False, immutable=immutable)
        ids[text] = added["results"][0]["id"]
    report = LearningReport()
    chat = [{"role": "user", "content": "User lives in Berlin"}]
    result = await lance.add(chat, user_id="i", report=report)
    got = sorted((r["event"], r["memory"], r.get("reason")) for r in result["results"])
    assert got == [
        ("ADD", "User lives in Berlin", None),  # the contradiction: a memory of its own
        ("DELETE", "User has a dog", None),  # the mutable one goes as asked
        ("NONE", "User likes green tea", IMMUTABLE_REASON),
        ("NONE", "User lives in Paris", IMMUTABLE_REASON),
    ]
    none_ids = {r["id"] for r in result["results"] if r["event"] == "NONE"}
    assert none_ids == {ids["User lives in Paris"], ids["User likes green tea"]}
    for text in ("User lives in Paris", "User likes green tea"):
        assert (await lance.get(ids[text]))["memory"] == text
        assert [h["event"] for h in await lance.history(ids[text])] == ["ADD"]
    assert report.applied["NONE"] == 2 and report.applied["ADD"] == 1
    logged = {(d["event"], d["memory_id"], d["reason"]) for d in report.decisions}
    for text in ("User lives in Paris", "User likes green tea"):  # the learning log says why
        assert ("NONE", ids[text], IMMUTABLE_REASON) in logged
    texts = sorted(r["memory"] for r in (await lance.get_all(user_id="i"))["results"])
    assert texts == ["User likes green tea", "User lives in Berlin", "User lives in Paris"]


async def test_the_near_duplicate_fold_never_refines_an_immutable_memory(tmp_path: Path) -> None:
    class AddOnly(UpdatingLLM):
        async def complete(self, messages: list[dict[str, Any]], *, call: CallOptions) -> str:
            if "<new_facts>" in messages[-1]["content"]:
                facts = orjson.loads(
                    messages[-1]["content"].split("<new_facts>")[1].split("</new_facts>")[0]
                )
                return orjson.dumps(
                    {"memory": [{"id": "n", "text": f, "event": "ADD"} for f in facts]}
                ).decode()
            return await super().complete(messages, call=call)

    config = MemoryConfig(
        storage_uri=str(tmp_path / "db"), search={"mode": "vector"}, duplicate_threshold=0.5
    )
    memory = AsyncMemory(config, embedder=HashEmbedder(), llm=AddOnly())
    await memory.open()
    try:
        for immutable, user in ((True, "frozen"), (False, "mutable")):
            await memory.add("User lives in Paris", user_id=user, infer=False, immutable=immutable)
            chat = [{"role": "user", "content": "User lives in Paris France"}]
            results = (await memory.add(chat, user_id=user))["results"]
            texts = sorted(r["memory"] for r in (await memory.get_all(user_id=user))["results"])
            if immutable:  # a memory of its own, the immutable one unchanged
                assert [r["event"] for r in results] == ["ADD"]
                assert texts == ["User lives in Paris", "User lives in Paris France"]
            else:  # the fold refines the mutable one (what the guard prevents above)
                assert [r["event"] for r in results] == ["UPDATE"]
                assert texts == ["User lives in Paris France"]
    finally:
        await memory.close()


async def test_updates_of_an_immutable_memory(lance: Any) -> None:
    added = await lance.add("my blood type is 0+", user_id="p", infer=False, immutable=True)
    memory_id = added["results"][0]["id"]
    with pytest.raises(ImmutableMemory):
        await lance.update(memory_id, "my blood type is A")
    # The same text, metadata, an expiration: allowed without lifting it.
    item = await lance.update(memory_id, metadata={"source": "doctor"}, ttl_s=3600)
    assert item["immutable"] and item["metadata"] == {"source": "doctor"}
    assert item["expires_at"] is not None
    item = await lance.update(memory_id, clear_expiration=True)
    assert item["expires_at"] is None and item["expiration_date"] is None
    item = await lance.update(memory_id, "my blood type is A", immutable=False)
    assert item["memory"] == "my blood type is A" and not item["immutable"]
    with pytest.raises(InvalidInput):
        await lance.update(memory_id)  # nothing to update


async def test_feedback_lowers_and_hides(lance: Any) -> None:
    a = (await lance.add("my favourite fruit is mango", user_id="f", infer=False))["results"][0]
    b = (await lance.add("my favourite fruit is a mango", user_id="f", infer=False))["results"][0]
    query = "my favourite fruit is mango"
    first = [r["id"] for r in (await lance.search(query, user_id="f"))["results"]]
    assert first[0] == a["id"]
    assert (await lance.feedback(a["id"], "negative", "outdated")) == {
        "id": a["id"],
        "feedback": "NEGATIVE",
        "feedback_reason": "outdated",
    }
    lowered = (await lance.search(query, user_id="f"))["results"]
    assert [r["id"] for r in lowered] == [b["id"], a["id"]]
    assert lowered[1]["feedback"] == "NEGATIVE"
    await lance.feedback(a["id"], "VERY_NEGATIVE")
    assert [r["id"] for r in (await lance.search(query, user_id="f"))["results"]] == [b["id"]]
    await lance.store.cache.loads()  # the scope is cached again, with the feedback
    hits = lance.store.cache.hits
    assert [r["id"] for r in (await lance.search(query, user_id="f"))["results"]] == [b["id"]]
    assert lance.store.cache.hits == hits + 1
    listed = {r["id"]: r for r in (await lance.get_all(user_id="f"))["results"]}
    assert listed[a["id"]]["feedback"] == "VERY_NEGATIVE"  # still listed, so it can be undone
    await lance.feedback(a["id"], None)
    assert len((await lance.search(query, user_id="f"))["results"]) == 2


async def test_a_store_written_before_the_columns_opens_and_keeps_its_data(tmp_path: Path) -> None:
    """A LanceDB table of the previous schema (no lifecycle columns, history without source)
    is migrated on open: every row kept, readable, and the new features work on it."""
    uri = str(tmp_path / "old")
    embedder = HashEmbedder()
    new_fields = {f.name for f in LIFECYCLE_FIELDS}
    current = MemoryConfig(storage_uri=uri)
    from memory_core.store_schema import memories_schema

    appended = new_fields | {"app_id"}  # the columns added since the first release
    old_schema = pa.schema(
        [f for f in memories_schema(embedder.dimension) if f.name not in appended]
    )
    texts = ["I live in Paris", "I like green tea"]
    vectors = await embedder.embed(texts)
    stamp = "2026-01-01T00:00:00.000000+00:00"
    rows = [
        {
            "id": f"old-{i}",
            "user_id": "legacy",
            "agent_id": None,
            "run_id": None,
            "memory": text,
            "hash": content_hash(text),
            "vector": vector.tolist(),
            "metadata": None,
            "categories": [],
            "created_at": stamp,
            "updated_at": stamp,
            SEARCH_TEXT: text,
        }
        for i, (text, vector) in enumerate(zip(texts, vectors, strict=True))
    ]
    db = await lancedb.connect_async(uri)
    await db.create_table(MEMORIES, data=pa.Table.from_pylist(rows, schema=old_schema))
    old_history = pa.schema([f for f in HISTORY_SCHEMA if f.name != "source"])
    await db.create_table(HISTORY, schema=old_history)

    memory = AsyncMemory(current, embedder=embedder)
    await memory.open()
    try:
        listed = (await memory.get_all(user_id="legacy"))["results"]
        assert sorted(r["memory"] for r in listed) == sorted(texts)
        assert all(
            r["expires_at"] is None and r["immutable"] is False and r["feedback"] is None
            for r in listed
        )
        assert (await memory.search("Paris", user_id="legacy"))["results"][0]["id"] == "old-0"
        await memory.feedback("old-0", "VERY_NEGATIVE")
        assert "old-0" not in {
            r["id"] for r in (await memory.search("Paris", user_id="legacy"))["results"]
        }
        await memory.update("old-1", immutable=True, expiration_date="2099-12-31")
        assert (await memory.get("old-1"))["expiration_date"] == "2099-12-31"
        added = await memory.add("I have a cat", user_id="legacy", infer=False)
        assert added["results"][0]["event"] == "ADD"
    finally:
        await memory.close()
    table = await (await lancedb.connect_async(uri)).open_table(MEMORIES)
    assert appended <= set((await table.schema()).names)
    assert await table.count_rows() == 3


# ---- the REST API ----------------------------------------------------------------------------


def _add(c: httpx.Client, text: str, user: str, **fields: Any) -> str:
    r = c.post("/v1/memories", json={"messages": text, "user_id": user, "infer": False, **fields})
    assert r.status_code == 200, r.text
    return str(r.json()["results"][0]["id"])


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


def test_api_expiration(bulk_server: ApiServer) -> None:
    user = f"exp-{uuid.uuid4().hex[:8]}"
    with bulk_server.client("admin") as c:
        past = _add(c, "my gate code is 1234", user, expiration_date="2020-01-01")
        soon = _add(c, "my gate is the north one", user, ttl_s=3600, categories=["home"])
        listed = c.get("/v1/memories", params={"user_id": user}).json()["results"]
        assert [x["id"] for x in listed] == [soon]
        assert listed[0]["categories"] == ["home"] and listed[0]["expires_at"]
        everything = c.get("/v1/memories", params={"user_id": user, "include_expired": "true"})
        assert {x["id"] for x in everything.json()["results"]} == {past, soon}
        found = c.post("/v1/search", json={"query": "gate code", "user_id": user}).json()
        assert [x["id"] for x in found["results"]] == [soon]
        found = c.post(
            "/v1/search", json={"query": "gate code", "user_id": user, "include_expired": True}
        ).json()
        assert {x["id"] for x in found["results"]} == {past, soon}
        assert c.get(f"/v1/memories/{past}").json()["expiration_date"] == "2020-01-01"
        # Moving the date brings it back; null clears it.
        r = c.put(f"/v1/memories/{past}", json={"expiration_date": "2099-01-31"})
        assert r.status_code == 200 and r.json()["expiration_date"] == "2099-01-31"
        assert r.json()["memory"] == "my gate code is 1234"
        r = c.put(f"/v1/memories/{past}", json={"expiration_date": None})
        assert r.json()["expires_at"] is None
        assert len(c.get("/v1/memories", params={"user_id": user}).json()["results"]) == 2
        export = c.get("/v1/memories/export", params={"user_id": user})
        exported = {
            orjson.loads(line)["id"]: orjson.loads(line) for line in export.content.splitlines()
        }
        assert exported[soon]["expires_at"] == listed[0]["expires_at"]


@pytest.mark.parametrize(
    "fields",
    [
        {"expiration_date": "2030-02-30"},
        {"expiration_date": "2030-01-31T10:00:00Z"},
        {"expiration_date": "next week"},
        {"expiration_date": 20300131},
        {"ttl_s": 0},
        {"ttl_s": MAX_TTL_S + 1},
        {"ttl_s": "3600"},
        {"ttl_s": 1.5},
        {"ttl_s": 60, "expiration_date": "2031-01-01"},
        {"immutable": "true"},
        {"categories": "plans"},
        {"categories": ["x" * 65]},
        {"categories": [f"c{i}" for i in range(17)]},
    ],
)
def test_api_refuses_bad_lifecycle_fields(bulk_server: ApiServer, fields: dict[str, Any]) -> None:
    with bulk_server.client("admin") as c:
        body = {"messages": "hostile", "user_id": "hostile", "infer": False, **fields}
        error = _error(c.post("/v1/memories", json=body), 400)
        assert error["type"] == "invalid_request_error"
        if "categories" not in fields:  # an update keeps the categories; the rest, checked
            memory_id = _add(c, f"a plain memory {uuid.uuid4().hex}", "hostile")
            _error(c.put(f"/v1/memories/{memory_id}", json={"text": "t", **fields}), 400)
            assert c.get(f"/v1/memories/{memory_id}").json()["memory"].startswith("a plain")
    with bulk_server.client("admin") as c:
        listed = c.get("/v1/memories", params={"user_id": "hostile", "include_expired": "true"})
        assert all(x["memory"] != "hostile" for x in listed.json()["results"])


def test_api_immutable(bulk_server: ApiServer) -> None:
    user = f"imm-{uuid.uuid4().hex[:8]}"
    with bulk_server.client("admin") as c:
        memory_id = _add(c, "my passport number is X123", user, immutable=True)
        item = c.get(f"/v1/memories/{memory_id}").json()
        assert item["immutable"] is True
        error = _error(c.put(f"/v1/memories/{memory_id}", json={"text": "changed"}), 409)
        assert "immutable" in error["message"]
        assert c.get(f"/v1/memories/{memory_id}").json()["memory"] == "my passport number is X123"
        r = c.put(f"/v1/memories/{memory_id}", json={"metadata": {"checked": True}})
        assert r.status_code == 200 and r.json()["immutable"] is True
        r = c.put(
            f"/v1/memories/{memory_id}",
            json={"text": "my passport number is Y9", "immutable": False},
        )
        assert r.status_code == 200
        assert r.json()["memory"] == "my passport number is Y9" and r.json()["immutable"] is False
        r = c.put(f"/v1/memories/{memory_id}", json={"immutable": True})
        assert r.json()["immutable"] is True
        _error(c.put(f"/v1/memories/{memory_id}", json={}), 400)
        events = [h["event"] for h in c.get(f"/v1/memories/{memory_id}/history").json()]
        assert events == ["ADD", "UPDATE", "UPDATE", "UPDATE"]


def test_api_feedback(bulk_server: ApiServer) -> None:
    user = f"fb-{uuid.uuid4().hex[:8]}"
    with bulk_server.client("admin") as c:
        memory_id = _add(c, "my dentist is Dr Alvarez", user)
        query = {"query": "who is my dentist", "user_id": user}
        assert [x["id"] for x in c.post("/v1/search", json=query).json()["results"]] == [memory_id]
        r = c.post(f"/v1/memories/{memory_id}/feedback", json={"feedback": "negative"})
        assert r.status_code == 200
        assert r.json() == {"id": memory_id, "feedback": "NEGATIVE", "feedback_reason": None}
        # Mem0's platform route, memory named in the body.
        r = c.post(
            "/v1/feedback/",
            json={"memory_id": memory_id, "feedback": "VERY_NEGATIVE", "feedback_reason": "wrong"},
        )
        assert r.json() == {
            "id": memory_id,
            "feedback": "VERY_NEGATIVE",
            "feedback_reason": "wrong",
        }
        assert c.post("/v1/search", json=query).json()["results"] == []
        listed = c.get("/v1/memories", params={"user_id": user}).json()["results"]
        assert listed[0]["feedback"] == "VERY_NEGATIVE" and listed[0]["feedback_reason"] == "wrong"
        r = c.post(f"/v1/memories/{memory_id}/feedback", json={"feedback": None})
        assert r.json()["feedback"] is None
        assert len(c.post("/v1/search", json=query).json()["results"]) == 1
        for bad in ({"feedback": "LOVE_IT"}, {"feedback": 1}, {"feedback_reason": "x" * 1001}):
            _error(c.post(f"/v1/memories/{memory_id}/feedback", json=bad), 400)
        _error(c.post("/v1/feedback", json={"feedback": "POSITIVE"}), 400)  # no memory_id
        _error(c.post("/v1/feedback", json={"memory_id": "../x", "feedback": "POSITIVE"}), 400)
        absent = "00000000-0000-4000-8000-000000000000"
        _error(c.post(f"/v1/memories/{absent}/feedback", json={"feedback": "POSITIVE"}), 404)
        _error(c.post("/v1/feedback", json={"memory_id": absent, "feedback": "POSITIVE"}), 404)


def test_openapi_documents_the_new_routes(bulk_server: ApiServer) -> None:
    with bulk_server.client("admin") as c:
        spec = c.get("/openapi.json").json()
    assert "post" in spec["paths"]["/memories/{memory_id}/feedback"]
    assert "post" in spec["paths"]["/feedback"]
    add = spec["components"]["schemas"]["AddRequest"]["properties"]
    assert {"expiration_date", "ttl_s", "immutable", "categories"} <= set(add)
    assert "include_expired" in spec["components"]["schemas"]["SearchRequest"]["properties"]


# ---- the chat path -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_proxy(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerThread, FakeUpstream]]:
    with FakeUpstream() as fake:
        storage = str(tmp_path_factory.mktemp("lifecycle-chat"))
        with ServerThread(fake_model_proxy(fake.url, storage)) as server:
            yield server, fake


def _block(server: ServerThread, user: str, question: str) -> str:
    client = openai.OpenAI(base_url=server.url, api_key="sk-x", max_retries=0, timeout=30)
    reply = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": question}],
        extra_body={"user_id": user, "memory": {"mode": "read"}},
    )
    content = reply.choices[0].message.content or ""
    assert content.startswith(f"ECHO: {question}")
    return content.split("| MEMORIES: ", 1)[1] if "| MEMORIES: " in content else ""


def _api(server: ServerThread) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url, timeout=30, headers={"Content-Type": "application/json"}
    )


def test_chat_never_injects_an_expired_memory(
    chat_proxy: tuple[ServerThread, FakeUpstream],
) -> None:
    server, _fake = chat_proxy
    user = f"chat-exp-{uuid.uuid4().hex[:8]}"
    with _api(server) as c:
        _add(c, "User's locker code is 4711", user, expiration_date="2020-12-31")
        _add(c, "User's locker is in hall B", user)
        soon = _add(c, "User's locker key is under the mat", user, ttl_s=3)
        block = _block(server, user, "Where is my locker and what is its code?")
        assert "hall B" in block and "under the mat" in block
        assert "4711" not in block
        expires = datetime.fromisoformat(c.get(f"/v1/memories/{soon}").json()["expires_at"])
        time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.1)
        block = _block(server, user, "Remind me about my locker key and where my locker is")
        assert "hall B" in block and "under the mat" not in block and "4711" not in block
        # Not purged yet (no maintenance ran): hidden at read time only.
        assert [h["event"] for h in c.get(f"/v1/memories/{soon}/history").json()] == ["ADD"]


def test_chat_contradiction_leaves_an_immutable_memory(
    chat_proxy: tuple[ServerThread, FakeUpstream],
) -> None:
    server, fake = chat_proxy
    user = f"chat-imm-{uuid.uuid4().hex[:8]}"
    client = openai.OpenAI(base_url=server.url, api_key="sk-x", max_retries=0, timeout=30)
    with _api(server) as c:
        kept = _add(c, "User lives in Paris", user, immutable=True)
        before = learn_state(server)
        updates = len(fake.requests_of("update"))
        client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": "I live in Berlin"}],
            extra_body={"user_id": user},
        )
        wait_learned(server, before)
        assert len(fake.requests_of("update")) == updates + 1  # the model was asked, said UPDATE
        texts = {
            x["memory"]: x
            for x in c.get("/v1/memories", params={"user_id": user}).json()["results"]
        }
        assert set(texts) == {"User lives in Paris", "User lives in Berlin"}
        assert (
            texts["User lives in Paris"]["id"] == kept and texts["User lives in Paris"]["immutable"]
        )
        assert [h["event"] for h in c.get(f"/v1/memories/{kept}/history").json()] == ["ADD"]
        (job,) = c.get("/v1/learning", params={"user_id": user}).json()["results"]
        refused = [d for d in job["decisions"] if d["memory_id"] == kept]
        assert [(d["event"], d["reason"]) for d in refused] == [("NONE", IMMUTABLE_REASON)]
        block = _block(server, user, "Where do I live?")
        assert "User lives in Paris" in block and "User lives in Berlin" in block


def test_chat_drops_a_memory_after_very_negative_feedback(
    chat_proxy: tuple[ServerThread, FakeUpstream],
) -> None:
    server, _fake = chat_proxy
    user = f"chat-fb-{uuid.uuid4().hex[:8]}"
    with _api(server) as c:
        wrong = _add(c, "User's favourite colour is teal", user)
        _add(c, "User's favourite food is ramen", user)
        assert "teal" in _block(server, user, "What is my favourite colour and food?")
        r = c.post(f"/v1/memories/{wrong}/feedback", json={"feedback": "very_negative"})
        assert r.status_code == 200
        block = _block(server, user, "Tell me my favourite colour and food")
        assert "teal" not in block and "ramen" in block


async def test_graph_recall_respects_expiry_and_feedback(
    storage_uri: str, embedder: Any, fake_llm_config: dict[str, Any]
) -> None:
    """Graph memory's walk is one more ranking, and its relations go into the chat block: a
    memory expired or hidden by feedback comes back through neither."""
    config = MemoryConfig(storage_uri=storage_uri, llm=fake_llm_config, graph={"enabled": True})
    memory = AsyncMemory(config, embedder=embedder)
    await memory.open()
    try:
        query = "Where does my sister live?"
        await memory.add("My sister Maria lives in Lisbon.", user_id="g1")
        found = await memory.search(query, user_id="g1")
        assert found["relations"] and found["results"]  # the walk finds her, relations too
        await memory.add(
            "My sister Maria lives in Lisbon.", user_id="g2", expiration_date="2020-01-31"
        )
        expired = await memory.search(query, user_id="g2")
        assert expired["results"] == [] and expired["relations"] == []
        with_expired = await memory.search(query, user_id="g2", include_expired=True)
        assert with_expired["results"] and with_expired["relations"]
        graph = memory.graph
        assert graph is not None and await graph.store.relations("user_id = 'g2'")
        assert await memory.purge_expired() == 1  # the graph forgets it, as for a delete
        assert await graph.store.relations("user_id = 'g2'") == []
        assert await graph.store.relations("user_id = 'g1'")  # nobody else's
        for item in (await memory.get_all(user_id="g1"))["results"]:
            await memory.feedback(item["id"], "VERY_NEGATIVE")
        hidden = await memory.search(query, user_id="g1")
        assert hidden["results"] == [] and hidden["relations"] == []
    finally:
        await memory.close()
