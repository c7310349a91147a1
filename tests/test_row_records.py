"""The memories table's packed record (``store_schema.pack_record``): a scope's cache load
reads only that column, so after every write, also one racing another connection's, it must
hold exactly what the row's columns hold."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import orjson
import pyarrow as pa
import pytest

from memory_core import AsyncMemory, MemoryConfig
from memory_core.bm25 import _WORD, ANALYSER_VERSION, tokenize
from memory_core.errors import StoreError
from memory_core.records import SEARCH_TEXT
from memory_core.storage import ScopeRows, Selection
from memory_core.store import LanceStore
from memory_core.store_rows import UPDATE_ATTEMPTS, backfill_records, scan_columns
from memory_core.store_schema import (
    MEMORIES,
    RECORD,
    REVISION,
    TERM_SEPARATOR,
    encode_row,
    memories_schema,
    unpack_records,
)
from memory_core.types import Scope
from tests.conftest import HashEmbedder

DIM = 4
BASE = {
    "id": "m1",
    "user_id": "u",
    "agent_id": None,
    "run_id": None,
    "memory": "User likes green tea",
    "hash": "h",
    "vector": [0.5, -0.25, 1e-8, 3.0],
    "metadata": None,
    "categories": [],
    "created_at": "2026-01-01T00:00:00.000000+00:00",
    "updated_at": "2026-01-01T00:00:00.000000+00:00",
    SEARCH_TEXT: "User likes green tea",
    "app_id": None,
    "expires_at": None,
    "immutable": None,
    "feedback": None,
    "feedback_reason": None,
}


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"metadata": {"tags": ["drinks"], "n": 1, "nested": {"a": [1, 2]}}},
        {"categories": ["food", "preferences"], "immutable": True},
        {"memory": 'Ünïcödé — 東京 "quoted" \\ back\nslash', "agent_id": "a1", "run_id": "r"},
        {SEARCH_TEXT: "the context said before\nUser likes green tea", "app_id": "app"},
        {"expires_at": "2027-01-01T00:00:00.000000+00:00", "feedback": "NEGATIVE"},
        {"feedback": "VERY_NEGATIVE", "feedback_reason": "wrong", "vector": [0, 0, 0, 0]},
    ],
)
def test_a_packed_row_unpacks_to_what_its_columns_read_as(changes: dict[str, Any]) -> None:
    row = encode_row({**BASE, **changes})
    assert row[REVISION] == 0
    [unpacked], vectors, [text], [terms] = (lambda s: (s.rows, s.vectors, s.texts, s.terms))(
        unpack_records([row[RECORD]], DIM)
    )
    expected = {**BASE, **changes}
    assert unpacked["metadata"] == (expected["metadata"] or {})
    assert unpacked["categories"] == expected["categories"]
    assert unpacked["immutable"] is bool(expected["immutable"])
    for name in ("id", "memory", "agent_id", "run_id", "app_id", "expires_at", "feedback"):
        assert unpacked[name] == expected[name]
    assert text == expected[SEARCH_TEXT]
    assert terms == tokenize(expected[SEARCH_TEXT]) and terms
    assert vectors.dtype == np.float32
    assert vectors[0].tolist() == np.asarray(expected["vector"], np.float32).tolist()


@pytest.mark.parametrize(
    "record",
    [
        b"",
        b"\x01",
        b"\x02" + np.zeros(DIM, "<f4").tobytes() + b"{}",  # another format
        b"\x01" + np.zeros(DIM - 1, "<f4").tobytes(),  # a vector too short, no fields
        b"\x01" + np.zeros(DIM, "<f4").tobytes() + b"{not json",
    ],
)
def test_a_record_of_another_format_or_size_is_refused(record: bytes) -> None:
    with pytest.raises(ValueError):
        unpack_records([record], DIM)


def _record(fields: dict[str, Any]) -> bytes:
    return b"\x01" + np.asarray(BASE["vector"], "<f4").tobytes() + orjson.dumps(fields)


PACKED = {k: v for k, v in BASE.items() if k != "vector"}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        # The stored terms are what the load uses (not analysed again)...
        ({"terms": "stored|term", "analyser": ANALYSER_VERSION}, ["stored", "term"]),
        ({"terms": "", "analyser": ANALYSER_VERSION}, []),
        # ...unless another analyser made them, none did, or they are not one string.
        ({"terms": "stored", "analyser": ANALYSER_VERSION + 1}, ["user", "like", "green", "tea"]),
        ({"terms": "stored"}, ["user", "like", "green", "tea"]),
        ({}, ["user", "like", "green", "tea"]),
        ({"terms": ["stored"], "analyser": ANALYSER_VERSION}, ["user", "like", "green", "tea"]),
        ({"terms": 1, "analyser": ANALYSER_VERSION}, ["user", "like", "green", "tea"]),
        ({"terms": None, "analyser": ANALYSER_VERSION}, ["user", "like", "green", "tea"]),
    ],
)
def test_a_record_s_terms_are_used_only_when_this_analyser_made_them(
    extra: dict[str, Any], expected: list[str]
) -> None:
    scanned = unpack_records([_record({**PACKED, **extra})], DIM)
    assert scanned.terms == [expected]
    assert scanned.rows[0]["memory"] == BASE["memory"]
    assert "terms" not in scanned.rows[0] and "analyser" not in scanned.rows[0]


def by_id(
    scanned: ScopeRows,
) -> dict[str, tuple[dict[str, Any], list[float], str, list[str]]]:
    return {
        row["id"]: (row, vector.tolist(), text, terms)
        for row, vector, text, terms in zip(
            scanned.rows, scanned.vectors, scanned.texts, scanned.terms, strict=True
        )
    }


async def assert_records_match_columns(store: LanceStore, user: str, count: int) -> None:
    """The scope read from its records equals it read column by column."""
    table: Any = store._table()
    await table.checkout_latest()
    from_columns = await scan_columns(table, f"user_id = '{user}'", 100, store.dimension)
    from_records = await store.scan(Selection(Scope(user)), limit=100)
    assert len(from_records.rows) == count
    assert by_id(from_records) == by_id(from_columns)
    nulls = await table.count_rows(f"user_id = '{user}' AND ({RECORD} IS NULL)")
    assert nulls == 0


async def test_every_write_keeps_the_record_equal_to_the_columns(tmp_path: Path) -> None:
    memory = AsyncMemory(MemoryConfig(storage_uri=str(tmp_path / "db")), embedder=HashEmbedder())
    await memory.open()
    store: Any = memory.store
    lance: LanceStore = store.inner
    added = await memory.add(
        ["User likes green tea", "User lives in Lisbon"],
        user_id="u",
        infer=False,
        metadata={"topic": "life"},
        context="we talked about drinks",
    )
    first, second = (r["id"] for r in added["results"])
    await assert_records_match_columns(lance, "u", 2)
    steps = [
        lambda: memory.update(first, "User likes black coffee"),
        lambda: memory.update(first, metadata={"mood": "awake"}),
        lambda: memory.update(second, ttl_s=3600, immutable=True),
        lambda: memory.feedback(second, "NEGATIVE", "not quite"),
        lambda: memory.update(second, clear_expiration=True),
        lambda: memory.feedback(second, None),
    ]
    for step in steps:
        await step()
        await assert_records_match_columns(lance, "u", 2)
    found = (await memory.search("coffee", user_id="u"))["results"]
    coffee = next(item for item in found if item["id"] == first)
    assert coffee["memory"] == "User likes black coffee"
    assert coffee["metadata"] == {"topic": "life", "mood": "awake"}
    revisions = await lance._table().query().select(["id", REVISION]).to_arrow()
    assert dict(zip(*revisions.to_pydict().values(), strict=True)) == {first: 2, second: 4}
    await memory.close()


@pytest.mark.parametrize("interval", [None, 0.0])
async def test_updates_racing_from_two_connections_keep_both_changes_and_the_record_true(
    tmp_path: Path, interval: float | None
) -> None:
    uri = str(tmp_path / "db")
    one = LanceStore(uri, DIM, read_consistency_interval_s=interval)
    two = LanceStore(uri, DIM, read_consistency_interval_s=interval)
    await one.open()
    await two.open()
    await one.insert([BASE])
    await two._table().checkout_latest()
    rounds = 6
    for i in range(rounds):
        # Different columns of the same row at once: neither change may be lost, and the
        # record must end with both.
        await asyncio.gather(
            one.update("m1", {"feedback": f"NEGATIVE-{i}", "feedback_reason": f"r{i}"}),
            two.update("m1", {"memory": f"text {i}", "metadata": {"round": i}}),
        )
        await assert_records_match_columns(one, "u", 1)
        [row] = await one.fetch(Selection.of_ids(["m1"]))
        assert (row["feedback"], row["memory"], row["metadata"]) == (
            f"NEGATIVE-{i}",
            f"text {i}",
            {"round": i},
        )
    revision = (await one._table().query().select([REVISION]).to_arrow()).column(0)[0]
    assert revision.as_py() == 2 * rounds
    await one.close()
    await two.close()


async def test_an_update_that_never_applies_is_refused_not_lost_silently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LanceStore(str(tmp_path / "db"), DIM)
    await store.open()
    await store.insert([BASE])
    table = store._table()
    real_update = table.update
    attempts = 0

    async def lost_race(updates: dict[str, Any], *, where: str) -> Any:
        nonlocal attempts
        attempts += 1  # another writer moves the revision on before each of ours
        await real_update({REVISION: 100 + attempts}, where="id = 'm1'")
        return await real_update(updates, where=where)

    monkeypatch.setattr(table, "update", lost_race)
    with pytest.raises(StoreError, match="kept changing"):
        await store.update("m1", {"feedback": "POSITIVE"})
    assert attempts == UPDATE_ATTEMPTS
    [row] = await store.fetch(Selection.of_ids(["m1"]))
    assert row["feedback"] is None
    await store.close()


async def test_an_update_of_a_missing_memory_writes_nothing(tmp_path: Path) -> None:
    store = LanceStore(str(tmp_path / "db"), DIM)
    await store.open()
    await store.insert([BASE])
    version = await store._table().version()
    await store.update("gone", {"feedback": "POSITIVE"})
    assert await store._table().version() == version
    await store.close()


async def test_rows_written_before_the_record_column_load_and_get_one_when_updated(
    tmp_path: Path,
) -> None:
    store = LanceStore(str(tmp_path / "db"), DIM)
    await store.open()
    await store.insert([BASE, {**BASE, "id": "m2", "memory": "User lives in Lisbon"}])
    table = store._table()
    await table.update({RECORD: None, REVISION: None}, where="id = 'm1'")  # as an older store
    scanned = await store.scan(Selection(Scope("u")), limit=10)
    assert sorted(r["id"] for r in scanned.rows) == ["m1", "m2"]
    await assert_records_match_columns_allowing_nulls(store)
    await store.update("m1", {"feedback": "POSITIVE"})
    await assert_records_match_columns(store, "u", 2)
    await store.close()


async def assert_records_match_columns_allowing_nulls(store: LanceStore) -> None:
    table: Any = store._table()
    from_columns = await scan_columns(table, "user_id = 'u'", 100, store.dimension)
    from_records = await store.scan(Selection(Scope("u")), limit=100)
    assert by_id(from_records) == by_id(from_columns)


async def test_an_older_store_gets_its_records_in_the_background(tmp_path: Path) -> None:
    uri = str(tmp_path / "db")
    old_schema = pa.schema([f for f in memories_schema(DIM) if f.name not in (RECORD, REVISION)])
    rows = [{**BASE, "id": f"m{i}", "memory": f"fact {i}", "metadata": None} for i in range(5)]
    db = await lancedb.connect_async(uri)
    await db.create_table(MEMORIES, data=pa.Table.from_pylist(rows, schema=old_schema))
    store = LanceStore(uri, DIM)
    await store.open()  # adds the two columns (NULL), then starts the maintenance that fills them
    maintenance = store._maintenance
    assert maintenance is not None
    await maintenance
    await assert_records_match_columns(store, "u", 5)
    revisions = (await store._table().query().select([REVISION]).to_arrow()).column(0)
    assert revisions.to_pylist() == [0] * 5
    assert await store.backfill_records() == 0
    await store.close()
    reopened = LanceStore(uri, DIM)
    await reopened.open()
    assert reopened._maintenance is None  # nothing left to fill
    await reopened.close()


async def test_a_backfill_keeps_what_an_update_wrote_first(tmp_path: Path) -> None:
    store = LanceStore(str(tmp_path / "db"), DIM)
    await store.open()
    await store.insert([{**BASE, "id": f"m{i}"} for i in range(3)])
    table = store._table()
    await table.update({RECORD: None, REVISION: None})  # as rows of an older store

    async def update_then_write(operation: Any) -> Any:
        # The update lands between the backfill's read and its merge.
        await store.update("m1", {"feedback": "POSITIVE", "memory": "changed"})
        return await store._write(operation)

    assert await backfill_records(table, update_then_write, batch=10) == 3
    await assert_records_match_columns(store, "u", 3)
    [row] = await store.fetch(Selection.of_ids(["m1"]))
    assert (row["feedback"], row["memory"]) == ("POSITIVE", "changed")
    stored = await table.query().select(["id", REVISION]).to_arrow()
    assert dict(zip(*stored.to_pydict().values(), strict=True)) == {"m0": 0, "m1": 1, "m2": 0}
    assert await backfill_records(table, store._write) == 0
    await store.close()


def test_no_index_term_holds_the_term_separator() -> None:
    """Packed terms are split on ``TERM_SEPARATOR``: no word the analyser keeps, of any
    alphabet (accents folded, ligatures decomposed), may contain it."""
    words = [chr(c) for c in range(0x110000) if _WORD.fullmatch(chr(c))]
    words += ["\ufdfa", "ﬁnance", "Ǆemal", "Straße"]  # decompose into several characters
    assert len(words) > 100_000
    assert not [w for w in words if any(TERM_SEPARATOR in t for t in tokenize(w))]
    assert tokenize("\ufdfa")  # a ligature whose decomposition holds spaces is still a term
