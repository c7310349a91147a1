"""Dates named in a query ("on 8 May, 2023") and the day-window ranking they add to search."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from memory_core import AsyncMemory, MemoryConfig
from memory_core.dates import DayRange, created_within, named_days


def day(text: str) -> DayRange:
    moment = date.fromisoformat(text)
    return DayRange(moment, moment)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("What movie did Joanna watch on 1 May, 2022?", [day("2022-05-01")]),
        ("What did Gina find on October 13, 2023?", [day("2023-10-13")]),
        ("plans for the 8th of May 2023", [day("2023-05-08")]),
        ("what happened on May 8th, 2023", [day("2023-05-08")]),
        ("meeting on Dec. 5, 2021", [day("2021-12-05")]),
        ("notes from 2023-05-08", [day("2023-05-08")]),
        ("the call at 2023-05-08T10:00Z", [day("2023-05-08")]),
        ("What did I do in June 2023?", [DayRange(date(2023, 6, 1), date(2023, 6, 30))]),
        ("in February, 2024", [DayRange(date(2024, 2, 1), date(2024, 2, 29))]),
        ("in December 2023", [DayRange(date(2023, 12, 1), date(2023, 12, 31))]),
        (
            "from 3 March 2023 to 2023-04-01",
            [day("2023-03-03"), day("2023-04-01")],
        ),
        (
            "on 8 May 2023, i.e. in May 2023",
            [day("2023-05-08"), DayRange(date(2023, 5, 1), date(2023, 5, 31))],
        ),
        ("on 1 May, 2022 and again on 1 May, 2022", [day("2022-05-01")]),
        # Not a date with a year, impossible, or out of range: nothing.
        ("What did I do on May 8?", []),
        ("on 31 February 2023", []),
        ("2023-13-01", []),
        ("in May 0001", []),
        ("on 1 January 1000", []),  # a window reaching year 999 would be an invalid filter
        ("may I ask about 2023?", []),
        ("", []),
    ],
)
def test_named_days(query: str, expected: list[DayRange]) -> None:
    assert named_days(query) == expected


def test_created_within_builds_one_or_many_windows() -> None:
    one = created_within([day("2023-05-08")], slack_days=1)
    assert one == {
        "created_at": {
            "gte": "2023-05-07T00:00:00.000000+00:00",
            "lt": "2023-05-10T00:00:00.000000+00:00",
        }
    }
    exact = created_within([day("2023-05-08")])
    assert exact["created_at"]["lt"] == "2023-05-09T00:00:00.000000+00:00"
    two = created_within([day("2023-05-08"), DayRange(date(2023, 6, 1), date(2023, 6, 30))])
    assert [c["created_at"]["gte"][:10] for c in two["OR"]] == ["2023-05-08", "2023-06-01"]


DIARY = [
    ("User watched The Lord of the Rings movie with friends", "2023-05-01T20:00:00Z"),
    ("User watched a documentary about whales", "2023-06-10T20:00:00Z"),
    ("User went hiking in the mountains and saw a waterfall", "2023-07-15T10:00:00Z"),
    ("User baked bread for the first time", "2023-08-02T18:00:00Z"),
]


async def diary(path: Path, embedder: Any, **search: Any) -> AsyncMemory:
    memory = AsyncMemory(MemoryConfig(storage_uri=str(path), search=search), embedder=embedder)
    for text, when in DIARY:
        await memory.add(text, user_id="u", infer=False, timestamp=when, metadata={"kind": "diary"})
    await memory.add("User likes films", user_id="other", infer=False, timestamp="2023-07-15")
    return memory


def position(found: dict[str, list[Any]], prefix: str) -> int:
    return next(i for i, m in enumerate(found["results"]) if m["memory"].startswith(prefix))


@pytest.mark.parametrize("fusion", ["rrf", "learned"])
async def test_a_named_date_ranks_what_was_said_that_day(
    fusion: str, tmp_path: Path, embedder: Any
) -> None:
    dated = await diary(tmp_path / "a", embedder, fusion=fusion)
    undated = await diary(tmp_path / "b", embedder, fusion=fusion, date_weight=0)
    try:
        query = "What movie did I watch on 15 July, 2023?"
        with_date = await dated.search(query, user_id="u")
        without = await undated.search(query, user_id="u")
        # Without the date ranking the words win; with it, what was said that day moves up
        # (to the top with plain reciprocal-rank fusion at date_weight 2).
        assert position(without, "User watched The Lord") == 0
        assert position(with_date, "User went hiking") < position(without, "User went hiking")
        if fusion == "rrf":
            assert position(with_date, "User went hiking") == 0
        # The day window never widens the scope or the caller's filters.
        only_other = await dated.search(query, user_id="other")
        assert [m["memory"] for m in only_other["results"]] == ["User likes films"]
        filtered = await dated.search(query, user_id="u", filters={"kind": "note"})
        assert filtered["results"] == []
        month = await dated.search("What did I do in August 2023?", user_id="u", limit=1)
        assert month["results"][0]["memory"] == "User baked bread for the first time"
    finally:
        await dated.close()
        await undated.close()
