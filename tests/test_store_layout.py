"""Store maintenance moves a scattered user's rows together (``store_layout``): which users it
picks, that the rows end up next to each other in real LanceDB files, and that nothing a reader
sees changes, also with another connection updating and deleting the same rows meanwhile."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from memory_core import AsyncMemory, MemoryConfig
from memory_core.storage import Selection
from memory_core.store import LanceStore
from memory_core.store_layout import (
    MAX_USER_ROWS,
    NEAR_ROWS,
    ROWS_PER_RUN,
    SCATTERED_RUNS,
    cluster_users,
    scattered_users,
)
from memory_core.types import Scope
from tests.conftest import HashEmbedder
from tests.test_row_records import BASE, DIM, assert_records_match_columns

FRAGMENT = 1 << 32  # a row address's fragment id is its high 32 bits


def spread(runs: int, *, start: int = 0, gap: int = NEAR_ROWS + 1) -> list[int]:
    """Row addresses forming exactly ``runs`` runs of two near rows each."""
    return [start + r * (gap + 2) + k for r in range(runs) for k in (0, 1)]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], []),
        ([(None, a) for a in spread(50)], []),  # rows of no user are never moved
        ([("a", a) for a in range(1000)], []),  # one run, however long
        ([("a", a) for a in spread(SCATTERED_RUNS)], []),  # at the threshold: left
        ([("a", a) for a in spread(SCATTERED_RUNS + 1)], ["a"]),
        # rows NEAR_ROWS apart are one run; one more and they are not
        ([("a", a * NEAR_ROWS) for a in range(20)], []),
        ([("a", a * (NEAR_ROWS + 1)) for a in range(SCATTERED_RUNS + 1)], ["a"]),
        # the same offsets in another fragment are far away
        ([("a", f * FRAGMENT + o) for f in range(SCATTERED_RUNS + 1) for o in (0, 1)], ["a"]),
        # a larger user needs a run per ROWS_PER_RUN rows: the rewrite costs its rows
        ([("a", a) for a in spread(40)] + [("a", 10**6 + a) for a in range(40 * ROWS_PER_RUN)], []),
        (
            [("a", a) for a in spread(42)] + [("a", 10**6 + a) for a in range(40 * ROWS_PER_RUN)],
            ["a"],
        ),
        # ...and one past MAX_USER_ROWS is never rewritten
        (
            [("a", a) for a in spread(MAX_USER_ROWS // 2)]
            + [("b", a) for a in spread(MAX_USER_ROWS // 2, start=10**9)]
            + [("b", 2 * 10**9)],
            ["a"],
        ),
        # other users' rows do not join or split a user's runs; most runs first, then by name
        (
            [("b", a) for a in spread(12)]
            + [("c", a) for a in spread(10, start=10_000)]
            + [("a", a) for a in spread(10, start=20_000)]
            + [("d", a) for a in range(30_000, 30_200)]
            + [(None, a) for a in spread(40, start=40_000)],
            ["b", "a", "c"],
        ),
    ],
)
def test_scattered_users(rows: list[tuple[str | None, int]], expected: list[str]) -> None:
    order = np.random.default_rng(7).permutation(len(rows))  # a scan's order is any order
    users = pa.array([rows[i][0] for i in order], type=pa.string())
    addresses = np.array([rows[i][1] for i in order], dtype=np.uint64)
    assert scattered_users(users, addresses) == expected


async def interleaved_store(uri: str, users: int, per_user: int) -> LanceStore:
    """A store whose users' rows alternate, one insert (one commit) per row round: with more
    than ``NEAR_ROWS`` users each is scattered even once compacted into one file."""
    store = LanceStore(uri, DIM, optimize_every=10**9)
    await store.open()
    for i in range(per_user):
        await store.insert(
            [
                {**BASE, "id": f"u{u}-m{i}", "user_id": f"u{u}", "memory": f"fact {i} of {u}"}
                for u in range(users)
            ]
        )
    return store


async def layout(store: LanceStore) -> dict[str, list[int]]:
    table: Any = store._table()
    await table.checkout_latest()
    found = (await table.query().select(["user_id", "_rowaddr"]).to_arrow()).to_pylist()
    addresses: dict[str, list[int]] = {}
    for row in found:
        addresses.setdefault(row["user_id"], []).append(row["_rowaddr"])
    return {user: sorted(found) for user, found in addresses.items()}


async def every_row(store: LanceStore) -> list[dict[str, Any]]:
    table: Any = store._table()
    await table.checkout_latest()
    rows = (await table.query().to_arrow()).to_pylist()
    return sorted(rows, key=lambda r: r["id"])


def contiguous(addresses: list[int]) -> bool:
    return addresses == list(range(addresses[0], addresses[0] + len(addresses)))


async def test_maintenance_moves_each_scattered_user_together_and_changes_no_value(
    tmp_path: Path,
) -> None:
    users = [f"u{u}" for u in range(NEAR_ROWS + 8)]
    store = await interleaved_store(str(tmp_path / "db"), users=len(users), per_user=10)
    before = await every_row(store)
    scattered = await layout(store)
    assert not any(contiguous(a) for a in scattered.values())
    assert store.maintenance_runs["ran"] == 0

    await store.optimize()

    after_layout = await layout(store)
    assert sorted(after_layout) == sorted(users)
    assert all(contiguous(a) and len(a) == 10 for a in after_layout.values()), after_layout
    # ... and compacted again: no small fragment outside the indexes for every query to scan.
    table: Any = store._table()
    assert (await table.stats())["fragment_stats"]["num_fragments"] == 1
    for index in await table.list_indices():
        assert (await table.index_stats(index.name)).num_unindexed_rows == 0, index.name
    assert await every_row(store) == before  # every column of every row, revision included
    for user in users[:3]:
        await assert_records_match_columns(store, user, 10)
    assert store.maintenance_runs == {"ran": 1, "skipped": 0, "failed": 0}
    # Nothing is left to move: the next turn commits no rewrite.
    version = await store._table().version()
    assert await cluster_users(store._table(), store._uncounted, budget_s=60) == 0
    assert await store._table().version() == version
    hits = await store.vector_search(
        np.asarray(BASE["vector"], dtype=np.float32), Selection(Scope("u1")), limit=100
    )
    assert sorted(row["id"] for row, _ in hits) == sorted(f"u1-m{i}" for i in range(10))
    await store.close()


async def test_a_failing_compaction_after_the_moves_fails_the_turn_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = [f"u{u}" for u in range(NEAR_ROWS + 8)]
    store = await interleaved_store(str(tmp_path / "db"), users=len(users), per_user=10)
    before = await every_row(store)
    table: Any = store._table()
    optimize = table.optimize
    calls = 0

    async def second_call_fails(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # the compaction after the moves
            raise RuntimeError("disk full")
        return await optimize(**kwargs)

    monkeypatch.setattr(table, "optimize", second_call_fails)
    await store.optimize()
    assert calls == 2
    assert store.maintenance_runs == {"ran": 0, "skipped": 0, "failed": 1}
    assert all(contiguous(a) for a in (await layout(store)).values())
    assert await every_row(store) == before
    monkeypatch.undo()
    await store.optimize()  # the next turn folds the moved fragments in
    assert (await table.stats())["fragment_stats"]["num_fragments"] == 1
    assert store.maintenance_runs == {"ran": 1, "skipped": 0, "failed": 1}
    assert await every_row(store) == before
    await store.close()


async def test_a_budget_of_zero_moves_nothing(tmp_path: Path) -> None:
    store = await interleaved_store(str(tmp_path / "db"), users=2, per_user=20)
    table: Any = store._table()
    version = await table.version()
    assert await cluster_users(table, store._uncounted, budget_s=0) == 0
    assert await table.version() == version
    await store.close()


async def test_the_move_does_not_count_as_writes_towards_the_next_maintenance(
    tmp_path: Path,
) -> None:
    store = await interleaved_store(str(tmp_path / "db"), users=4, per_user=12)
    store._optimize_every = 5
    store._writes_since_optimize = 0
    assert await cluster_users(store._table(), store._uncounted, budget_s=60) == 4
    assert store._writes_since_optimize == 0
    assert store._maintenance is None
    await store.close()


@pytest.mark.parametrize("interval", [None, 0.0])
async def test_updates_and_deletes_racing_the_move_from_another_connection_all_hold(
    tmp_path: Path, interval: float | None
) -> None:
    uri = str(tmp_path / "db")
    mover = await interleaved_store(uri, users=2, per_user=SCATTERED_RUNS * 3)
    writer = LanceStore(uri, DIM, read_consistency_interval_s=interval)
    await writer.open()
    expected = {r["id"]: r for r in await every_row(mover)}
    rounds = 4
    for i in range(rounds):
        # Scatter the users again, so every round's move really rewrites their rows (written by
        # the mover: with no consistency interval it sees only its own commits).
        fresh = [
            {**BASE, "id": f"u{u}-new{i}-{k}", "user_id": f"u{u}", "memory": f"new {i} {k}"}
            for k in range(SCATTERED_RUNS + 1)
            for u in range(2)
        ]
        for row in fresh:
            await mover.insert([row])
        updated, deleted = f"u0-m{i}", f"u1-m{i}"
        moved, *_ = await asyncio.gather(
            cluster_users(mover._table(), mover._uncounted, budget_s=60),
            writer.update(updated, {"memory": f"changed in round {i}", "feedback": "POSITIVE"}),
            writer.delete(Selection.of_ids([deleted])),
        )
        assert moved >= 1
        now = {r["id"]: r for r in await every_row(mover)}
        assert now[updated]["memory"] == f"changed in round {i}"
        assert now[updated]["feedback"] == "POSITIVE"
        assert deleted not in now
        expected.pop(deleted)
        expected.update({r["id"]: now[r["id"]] for r in fresh})
        expected[updated] = now[updated]
        assert now == expected  # no row lost, none duplicated or brought back, none changed
        for user, count in (("u0", 24 + 9 * (i + 1)), ("u1", 24 + 9 * (i + 1) - (i + 1))):
            await assert_records_match_columns(mover, user, count)
    await writer.close()
    await mover.close()


@pytest.mark.parametrize(("budget_s", "moved"), [(None, True), (0.0, False)])
async def test_the_memory_config_sets_the_budget_of_its_store_maintenance(
    tmp_path: Path, budget_s: float | None, moved: bool
) -> None:
    settings: dict[str, Any] = {"storage_uri": str(tmp_path / "db"), "optimize_every": 10**6}
    if budget_s is not None:
        settings["cluster_budget_s"] = budget_s
    memory = AsyncMemory(MemoryConfig(**settings), embedder=HashEmbedder())
    for i in range(SCATTERED_RUNS + 2):  # alice's and bob's rows with others' in between
        for user in ("alice", "bob"):
            await memory.add(f"{user} fact number {i}", user_id=user, infer=False)
            others = [f"filler {i} {k}" for k in range(NEAR_ROWS + 1)]
            await memory.add(others, user_id=f"{user}-{i}", infer=False)
    store: Any = memory.store
    lance: LanceStore = store.inner
    await lance.optimize()
    addresses = await layout(lance)
    assert contiguous(addresses["alice"]) is moved
    assert contiguous(addresses["bob"]) is moved
    found = await memory.get_all(user_id="alice", limit=100)
    assert len(found["results"]) == SCATTERED_RUNS + 2
    await memory.close()


async def test_one_user_writing_alone_is_never_rewritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Each insert is a fragment of its own until the compaction joins them: counted after it,
    # the user's rows are one run, and the turn commits no rewrite of them.
    store = await interleaved_store(str(tmp_path / "db"), users=1, per_user=3 * SCATTERED_RUNS)
    with caplog.at_level("INFO", logger="memory_core.store_layout"):
        await store.optimize()
    assert not [r for r in caplog.records if r.name == "memory_core.store_layout"]
    assert len(await layout(store)) == 1
    assert store.maintenance_runs["ran"] == 1
    await store.close()
