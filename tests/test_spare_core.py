"""The spare core: one query embedded alone may run on two threads, one process of the
machine at a time (a real ``flock`` across processes), with the same vector bit for bit."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from memory_core.e5_engine import OnnxE5
from memory_core.embedders import LocalEmbedder
from memory_core.spare_core import SpareCore

QUERIES = [
    "What activities does Melanie partake in?",
    "hi",
    "Wie heißt mein Hund? Ich habe es dir letzte Woche gesagt.",
    "where did we go on holiday " * 60,  # past one 510-token window
]


def take_in_another_process(path: Path) -> bool:
    code = (
        "import sys; from pathlib import Path; from memory_core.spare_core import SpareCore;"
        f"print(SpareCore(Path({str(path)!r})).take())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


def test_one_holder_at_a_time_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "spare.lock"
    mine, other = SpareCore(path), SpareCore(path)
    assert mine.take()
    assert not other.take()  # another open file: as another process would be
    assert not take_in_another_process(path)
    mine.give_back()
    assert take_in_another_process(path)
    assert other.take()
    other.close()
    assert mine.take()
    mine.close()


@pytest.mark.parametrize("kind", ["missing directory", "symlink"])
def test_a_lock_file_that_cannot_be_opened_means_one_thread_not_an_error(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "missing" / "spare.lock"
    if kind == "symlink":
        target = tmp_path / "elsewhere"
        target.write_text("not ours")
        path = tmp_path / "spare.lock"
        path.symlink_to(target)
    core = SpareCore(path)
    assert not core.take()
    assert not core.take()
    core.give_back()
    core.close()
    if kind == "symlink":
        assert (tmp_path / "elsewhere").read_text() == "not ours"


@pytest.fixture(scope="module")
def wide_engine() -> OnnxE5:
    return OnnxE5(wide_threads=2)


def test_the_wide_session_makes_the_same_vectors_bit_for_bit(wide_engine: OnnxE5) -> None:
    assert wide_engine.has_wide and not OnnxE5().has_wide
    for is_query in (True, False):
        narrow = wide_engine.encode(QUERIES, is_query)
        wide = wide_engine.encode(QUERIES, is_query, wide=True)
        assert np.array_equal(narrow, wide)


class CountedSpareCore(SpareCore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.taken = 0

    def take(self) -> bool:
        taken = super().take()
        self.taken += taken
        return taken


@pytest.fixture
def counted(tmp_path: Path) -> Iterator[tuple[LocalEmbedder, CountedSpareCore]]:
    spare = CountedSpareCore(tmp_path / "spare.lock")
    embedder = LocalEmbedder(spare_core=spare)
    yield embedder, spare
    embedder.close()


async def test_a_query_alone_takes_the_spare_core_and_queued_ones_do_not(
    counted: tuple[LocalEmbedder, CountedSpareCore], tmp_path: Path
) -> None:
    embedder, spare = counted
    alone = [await embedder.embed([q], purpose="query") for q in QUERIES]
    assert spare.taken == len(QUERIES)
    spare.taken = 0
    together = await asyncio.gather(*(embedder.embed([q], purpose="query") for q in QUERIES))
    assert spare.taken <= 1  # the first, before the others queued behind it
    for one, queued in zip(alone, together, strict=True):
        assert np.array_equal(one, queued)
    # Held by another process: one thread, the same vector.
    other = SpareCore(tmp_path / "spare.lock")
    assert other.take()
    spare.taken = 0
    held = await embedder.embed([QUERIES[0]], purpose="query")
    assert spare.taken == 0 and np.array_equal(held, alone[0])
    other.close()


async def test_no_spare_core_while_passages_are_embedded(
    counted: tuple[LocalEmbedder, CountedSpareCore],
) -> None:
    embedder, spare = counted
    with embedder._locks["passage"]:  # what a passage batch on its thread holds
        vector = await embedder.embed([QUERIES[0]], purpose="query")
    assert spare.taken == 0
    assert np.array_equal(vector, await embedder.embed([QUERIES[0]], purpose="query"))
    assert spare.taken == 1


def test_a_configured_thread_count_is_kept_as_is() -> None:
    embedder = LocalEmbedder(num_threads=1)
    try:
        assert embedder._spare is None and embedder._onnx is not None
        assert not embedder._onnx.has_wide
    finally:
        embedder.close()
