"""The learning log in the queue backends (SQLite file, real redis-server): per-user pages
newest first with cursors, retention by count and by age (Redis: the per-user index goes
with the entries), job kinds, the error of a failed attempt before a success, dead letters,
hostile cursors, and a queue file from before the log's columns."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from memory_core.config import QueueConfig
from memory_core.errors import InvalidInput
from memory_core.jobs import JobStore
from memory_core.queue import open_job_store
from memory_core.redis_job_store import RedisJobStore

MakeStore = Callable[..., JobStore]


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    """Opens a store of this test's queue with the given retention (same file / prefix)."""
    opened: list[JobStore] = []
    backend: dict[str, Any] = {}
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        prefix = request.getfixturevalue("redis_prefix")
        backend = {"backend": "redis", "redis_url": server.url, "redis_prefix": prefix}

    def make(**retention: Any) -> JobStore:
        store = open_job_store(QueueConfig(**backend, **retention), tmp_path / "queue.sqlite3")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def finish(store: JobStore, job_id: str, scope: str, **payload: Any) -> None:
    """Enqueue, claim and complete one job with a result naming it."""
    store.enqueue(job_id, scope, payload)
    (job,) = store.claim("o", 1, 60.0, [])
    assert job.id == job_id
    store.complete("o", job_id, {"status": "applied", "job": job_id})


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [row["id"] for row in rows]


def test_a_users_log_pages_newest_first(make_store: MakeStore) -> None:
    store = make_store()
    for n in range(7):
        finish(store, f"a{n}", "alice")
        finish(store, f"b{n}", "bob")
    first = store.results(3, scope_key="alice")
    assert ids(first) == ["a6", "a5", "a4"]
    assert {row["scope_key"] for row in first} == {"alice"}
    second = store.results(3, scope_key="alice", before=first[-1]["cursor"])
    assert ids(second) == ["a3", "a2", "a1"]
    last = store.results(3, scope_key="alice", before=second[-1]["cursor"])
    assert ids(last) == ["a0"]
    assert store.results(3, scope_key="carol") == []
    # The global log pages the same way, and a job id narrows either.
    everyone = store.results(4)
    assert ids(everyone) == ["b6", "a6", "b5", "a5"]
    assert ids(store.results(2, before=everyone[1]["cursor"])) == ["b5", "a5"]
    assert ids(store.results(5, "a2", scope_key="alice")) == ["a2"]
    assert store.results(5, "a2", scope_key="bob") == []


def test_retention_by_count_drops_the_oldest_of_every_user(make_store: MakeStore) -> None:
    store = make_store(results_kept=4)
    for job_id, scope in [("a0", "alice"), ("b0", "bob"), ("a1", "alice"), ("c0", "carol")]:
        finish(store, job_id, scope)
    finish(store, "b1", "bob")
    finish(store, "b2", "bob")
    assert ids(store.results(10)) == ["b2", "b1", "c0", "a1"]
    assert ids(store.results(10, scope_key="alice")) == ["a1"]
    assert ids(store.results(10, scope_key="bob")) == ["b2", "b1"]
    if isinstance(store, RedisJobStore):  # the per-user index shrinks with the log
        assert store._redis.xlen(store._key("rscope:alice")) == 1
        assert store._redis.xlen(store._key("rscope:bob")) == 2
        assert store._redis.xlen(store._key("results")) == 4


def test_retention_by_age(make_store: MakeStore) -> None:
    store = make_store(results_max_age_s=0.5)
    finish(store, "old", "alice")
    finish(store, "old-bob", "bob")
    time.sleep(0.7)
    # Past the age, entries are no longer read, and the next write drops them.
    assert store.results(10) == [] and store.results(10, scope_key="alice") == []
    finish(store, "new", "alice")
    fresh = make_store()  # no age limit: shows what is really left
    assert ids(fresh.results(10)) == ["new"]
    assert ids(fresh.results(10, scope_key="alice")) == ["new"]
    assert fresh.results(10, scope_key="bob") == []
    if isinstance(store, RedisJobStore):  # bob's index went with his last entry
        assert store._redis.exists(store._key("rscope:bob")) == 0


def test_kinds_errors_and_dead_letters(make_store: MakeStore) -> None:
    store = make_store()
    store.enqueue("learn", "alice", {"messages": []})
    store.enqueue("export", "bob", {"kind": "export", "export_id": "e1"})
    store.enqueue("doomed", "carol", {"kind": 7})
    jobs = {job.id for job in store.claim("o", 10, 60.0, [])}
    assert jobs == {"learn", "export", "doomed"}
    store.fail("o", "learn", "ExtractionError: HTTP 500", time.time() - 1)  # retry at once
    (again,) = store.claim("o", 1, 60.0, [])
    assert (again.id, again.attempts) == ("learn", 2)
    store.complete("o", "learn", {"status": "applied"})
    store.complete("o", "export", {"export_id": "e1"})
    store.fail("o", "doomed", "InvalidInput: bad payload", None)
    by_id = {row["id"]: row for row in store.results(10)}
    # A success after a failed attempt says how many attempts it took and what failed.
    assert by_id["learn"]["attempts"] == 2
    assert by_id["learn"]["error"] == "ExtractionError: HTTP 500"
    assert by_id["learn"]["kind"] == "" and by_id["export"]["kind"] == "export"
    assert by_id["export"]["error"] is None
    assert by_id["doomed"]["kind"] == "" and by_id["doomed"]["status"] == "dead"
    dead = store.dead_job("doomed")
    assert dead is not None
    assert (dead["scope_key"], dead["attempts"], dead["last_error"]) == (
        "carol",
        1,
        "InvalidInput: bad payload",
    )
    assert store.dead_job("learn") is None and store.dead_job("absent") is None
    assert store.retry_dead("doomed") == 1
    assert store.dead_job("doomed") is None
    assert [job.id for job in store.claim("o", 1, 60.0, [])] == ["doomed"]


@pytest.mark.parametrize(
    "cursor", ["abc", "-1", "1.5", "9" * 30, "1-2-3", "1 ", "١٢", "(1-0", "+", "1-", ""]
)
def test_hostile_cursors_are_invalid_input(make_store: MakeStore, cursor: str) -> None:
    store = make_store()
    finish(store, "j", "alice")
    with pytest.raises(InvalidInput, match="cursor"):
        store.results(5, scope_key="alice", before=cursor)


def test_each_backend_refuses_the_others_cursor(make_store: MakeStore) -> None:
    store = make_store()
    finish(store, "j", "alice")
    foreign = "12" if isinstance(store, RedisJobStore) else "12-0"
    with pytest.raises(InvalidInput, match="cursor"):
        store.results(5, scope_key="alice", before=foreign)


def test_a_queue_file_from_before_the_log_gets_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE job_results (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, scope_key TEXT NOT NULL,
            status TEXT NOT NULL, attempts INTEGER NOT NULL, enqueued_at REAL NOT NULL,
            finished_at REAL NOT NULL, result BLOB, error TEXT);
        INSERT INTO job_results (id, scope_key, status, attempts, enqueued_at, finished_at,
            result, error) VALUES ('v1', 'alice', 'applied', 1, 1.0, 2.0,
            '{"version": 1, "status": "applied"}', NULL);
        """
    )
    conn.commit()
    conn.close()
    store = open_job_store(QueueConfig(results_max_age_s=None), path)
    try:
        (old,) = store.results(5, scope_key="alice")
        assert (old["id"], old["kind"], old["result"]) == (
            "v1",
            "",
            {"version": 1, "status": "applied"},
        )
        finish(store, "v2", "alice")
        assert ids(store.results(5, scope_key="alice")) == ["v2", "v1"]
    finally:
        store.close()


# ---- the report's bounds and the API's view of an entry (pure) ------------------------------


def test_the_report_bounds_what_it_logs() -> None:
    from memory_core.learning_report import (
        LOGGED_TEXT_CHARS,
        MAX_LOGGED_DECISIONS,
        MAX_LOGGED_FACTS,
        LearningReport,
    )

    report = LearningReport()
    report.extracted([f"fact {n} " + "x" * 400 for n in range(MAX_LOGGED_FACTS + 5)])
    for n in range(MAX_LOGGED_DECISIONS + 3):
        report.decided("ADD", f"m{n}", text="t" * 400, reason="r" * 400, origin="extraction")
    result = report.to_dict()
    assert result["version"] == 2 and result["facts_extracted"] == MAX_LOGGED_FACTS + 5
    assert len(result["facts"]) == MAX_LOGGED_FACTS
    assert {len(fact) for fact in result["facts"]} == {LOGGED_TEXT_CHARS}
    assert len(result["decisions"]) == MAX_LOGGED_DECISIONS
    assert result["decisions_omitted"] == 3
    first = result["decisions"][0]
    assert first == {
        "event": "ADD",
        "memory_id": "m0",
        "text": "t" * LOGGED_TEXT_CHARS,
        "old_memory": None,
        "reason": "r" * LOGGED_TEXT_CHARS,
        "origin": "extraction",
    }


@pytest.mark.parametrize(
    ("error", "restricted"),
    [
        (None, None),
        ("ExtractionError: no JSON object", "ExtractionError: no JSON object"),
        (
            "ExtractionError: LLM call to http://10.0.0.5:8000/v1 failed",
            "ExtractionError: LLM call to <hidden> failed",
        ),
        (
            "StoreError: lance error at /srv/data/lancedb/memories.lance: busy",
            "StoreError: lance error at <hidden>: busy",
        ),
        ("ratio 3/4 and and/or stay", "ratio 3/4 and and/or stay"),
    ],
)
def test_errors_hide_urls_and_paths_from_restricted_keys(
    error: str | None, restricted: str | None
) -> None:
    from proxy.auth import Caller
    from proxy.learning_api import shown_error

    bound = Caller(name="app", users=("alice",))
    assert shown_error(error, bound) == restricted
    assert shown_error(error, Caller(name="ops", admin=True)) == error


def test_a_version_1_result_reads_as_counts_only() -> None:
    from proxy.auth import OPEN_CALLER
    from proxy.learning_api import log_entry

    row = {
        "id": "j",
        "scope_key": "alice",
        "kind": "",
        "status": "applied",
        "attempts": 1,
        "enqueued_at": 0.0,
        "finished_at": 1.5,
        "result": {"version": 1, "status": "applied", "applied": {"ADD": 1}},
        "error": None,
        "cursor": "1",
    }
    entry = log_entry(row, OPEN_CALLER)
    assert entry["facts"] == [] and entry["decisions"] == [] and entry["kind"] == "learn"
    assert entry["result"] == row["result"]
    assert entry["finished_at"] == "1970-01-01T00:00:01.500000+00:00"
