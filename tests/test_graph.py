"""Graph memory (docs/graph.md): the graph prompt's answers parsed (table-driven, malformed
ones too), names resolved, relations superseded and kept as history, the walk feeding the
search, deletions cascading, and isolation between users; through ``AsyncMemory`` with the
scripted fake LLM (``tests/fake_graph.py``) and real LanceDB."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from memory_core import AsyncMemory, MemoryConfig
from memory_core.contracts import Rejections
from memory_core.errors import ExtractionError, UnusableAnswer
from memory_core.graph import query_names
from memory_core.graph_prompts import build_graph_messages, parse_graph, relation_name
from memory_core.graph_resolve import name_overlap, parse_same
from memory_core.graph_store import VALID, exact_scope_sql
from memory_core.learning_report import LearningReport
from memory_core.memory_graph import learn_graph
from memory_core.types import Scope
from tests.fake_upstream import FakeUpstream
from tests.servers import ServerThread, fake_model_proxy, learn_state, wait_learned

FACTS = ["User's sister Maria lives in Lisbon", "Maria works at Acme"]


def rel(source: Any, relation: Any, target: Any, fact: Any = 1) -> dict[str, Any]:
    return {"source": source, "relation": relation, "target": target, "fact": fact}


@pytest.mark.parametrize(
    ("relations", "expected", "rejected"),
    [
        ([rel("User", "sister", "Maria")], [("User", "sister", "Maria", 0)], {}),
        ([rel("user", "Lives In", "Lisbon", 2)], [("User", "lives_in", "Lisbon", 1)], {}),
        ([rel("Maria", "works at", "Acme", "2")], [("Maria", "works_at", "Acme", 1)], {}),
        ([rel("Maria", "x", "maria.")], [], {"self_relation": 1}),
        ([rel("Maria", "x", "Acme", 3)], [], {"unknown_fact": 1}),
        ([rel("Maria", "x", "Acme", True)], [], {"unknown_fact": 1}),
        ([rel("Maria", "x", "Acme", 0)], [], {"unknown_fact": 1}),
        ([rel("", "x", "Acme")], [], {"malformed_relation": 1}),
        ([rel("Maria", "!!", "Acme")], [], {"malformed_relation": 1}),
        ([rel(["Maria"], "x", "Acme")], [], {"malformed_relation": 1}),
        (["Maria works at Acme"], [], {"malformed_relation": 1}),
        ([rel("User", "neighbour_of", "Tomasz")], [], {"prompt_example": 1}),
        (
            [rel("User", "sister", "Maria"), rel("user", "SISTER", "maria")],
            [("User", "sister", "Maria", 0)],
            {},
        ),
        (
            [rel("M" * 500, "r" * 500, "Acme")],
            [("M" * 100, "r" * 60, "Acme", 0)],
            {},
        ),
    ],
)
def test_parse_graph(
    relations: list[Any], expected: list[tuple[str, str, str, int]], rejected: dict[str, int]
) -> None:
    counted = Rejections()
    payload = {"entities": [{"name": "Maria", "type": "Person"}], "relations": relations}
    if relations and not expected:
        with pytest.raises(UnusableAnswer):
            parse_graph(payload, FACTS, counted)
        claims = []
    else:
        claims = parse_graph(payload, FACTS, counted)
    assert [(c.source, c.relation, c.target, c.fact) for c in claims] == expected
    assert dict(counted.counts) == rejected
    for claim in claims:
        if claim.source == "Maria":
            assert claim.source_type == "person"


@pytest.mark.parametrize(
    "payload",
    [{}, {"relations": "none"}, {"relations": {"a": 1}}, {"entities": [], "relations": None}],
)
def test_parse_graph_without_a_relations_list_is_unusable(payload: dict[str, Any]) -> None:
    with pytest.raises(UnusableAnswer):
        parse_graph(payload, FACTS)


def test_parse_graph_empty_and_bad_entities() -> None:
    counted = Rejections()
    payload = {"entities": [None, {"name": ""}, "x"], "relations": []}
    assert parse_graph(payload, FACTS, counted) == []
    assert counted.counts["malformed_entity"] == 3


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("Maria", "Maria Silva", True),
        ("maria silva", "Maria  Silva.", True),
        ("J. Smith", "John Smith", True),
        ("Bob", "Robert", False),
        ("Maria Silva", "Maria Costa", False),
        ("", "Maria", False),
    ],
)
def test_name_overlap(a: str, b: str, same: bool) -> None:
    assert name_overlap(a, b) is same


@pytest.mark.parametrize(
    ("payload", "count", "expected"),
    [
        ({"same": [True, False]}, 2, [True, False]),
        ({"same": ["true", 1]}, 2, [False, False]),  # only a real true merges
    ],
)
def test_parse_same(payload: dict[str, Any], count: int, expected: list[bool]) -> None:
    assert parse_same(payload, count) == expected


@pytest.mark.parametrize("payload", [{}, {"same": [True]}, {"same": "yes"}])
def test_parse_same_unusable(payload: dict[str, Any]) -> None:
    with pytest.raises(UnusableAnswer):
        parse_same(payload, 2)


def test_relation_names_and_query_names() -> None:
    assert relation_name("Works  At!") == "works_at"
    assert relation_name(3) is None
    assert {"maria", "maria silva", "where is maria silva"} <= set(
        query_names("Where is Maria Silva?")
    )
    assert build_graph_messages(FACTS)[1]["content"].splitlines()[1:3] == [
        "1. User's sister Maria lives in Lisbon",
        "2. Maria works at Acme",
    ]


def test_query_names_are_bounded() -> None:
    names = query_names("x" * 5000 + " Maria " + "word " * 500)
    assert "maria" in names and all(len(n) <= 4 * 101 for n in names)
    assert len(names) <= 4 * 64


def test_exact_scope_sql_names_every_id() -> None:
    sql = exact_scope_sql(Scope("ana", app_id="a"))
    assert sql == "user_id = 'ana' AND agent_id IS NULL AND run_id IS NULL AND app_id = 'a'"


# ---- through AsyncMemory --------------------------------------------------------------------


@pytest.fixture
async def graphed(
    storage_uri: str, embedder: Any, fake_llm_config: dict[str, Any]
) -> AsyncIterator[AsyncMemory]:
    config = MemoryConfig(storage_uri=storage_uri, llm=fake_llm_config, graph={"enabled": True})
    memory = AsyncMemory(config, embedder=embedder)
    await memory.open()
    yield memory
    await memory.close()


async def relations_of(memory: AsyncMemory, user: str, *, valid: bool = True) -> list[Any]:
    graph = memory.graph
    assert graph is not None
    where = f"user_id = '{user}'" + (f" AND {VALID}" if valid else "")
    return sorted(await graph.store.relations(where), key=lambda r: (r["source"], r["relation"]))


def triples(rows: list[Any]) -> list[tuple[str, str, str]]:
    return [(r["source"], r["relation"], r["target"]) for r in rows]


async def test_learn_resolve_supersede_recall_forget(graphed: AsyncMemory, fake_llm: Any) -> None:
    await graphed.add("My sister Maria lives in Lisbon.", user_id="ana")
    rows = await relations_of(graphed, "ana")
    assert triples(rows) == [("Maria", "lives_in", "Lisbon"), ("User", "sister", "Maria")]
    (memory,) = (await graphed.get_all(user_id="ana"))["results"]
    assert all(r["memory_ids"] == [memory["id"]] for r in rows)
    assert len(fake_llm.requests_of("graph")) == 1

    # "Maria Silva" is Maria: close names whose words overlap; the resolver is asked.
    await graphed.add("Maria Silva works at Acme.", user_id="ana")
    rows = await relations_of(graphed, "ana")
    maria = {r["source_id"] for r in rows if r["source"].startswith("Maria")}
    assert len(maria) == 1, rows
    entities = await graphed.graph.store.entities("user_id = 'ana'")
    assert sorted(e["name"] for e in entities) == ["Acme", "Lisbon", "Maria", "User"]

    # A memory updated: a relation resting only on its old text is superseded.
    await graphed.add("My sister Maria likes jazz.", user_id="ana")
    result = await graphed.add("My sister Maria likes opera.", user_id="ana")
    assert [r["event"] for r in result["results"]] == ["UPDATE"]
    valid = triples(await relations_of(graphed, "ana"))
    assert ("Maria", "likes", "opera") in valid and ("Maria", "likes", "jazz") not in valid

    # The sister moves (a new memory): lives_in is exclusive, so Lisbon is superseded and
    # kept as history.
    await graphed.add("My sister Maria moved to Porto.", user_id="ana")
    valid = triples(await relations_of(graphed, "ana"))
    assert ("Maria", "lives_in", "Porto") in valid and ("Maria", "lives_in", "Lisbon") not in valid
    assert ("User", "sister", "Maria") in valid
    history = await relations_of(graphed, "ana", valid=False)
    old = next(r for r in history if r["target"] == "Lisbon")
    assert old["invalid_at"] is not None and old["valid_from"] <= old["invalid_at"]

    # The walk: "where does my sister live" reaches Porto through Maria, in Mem0's shape,
    # and lifts the Porto memory in the fusion.
    query = "Where does my sister live?"
    found = await graphed.search(query, user_id="ana")
    assert {"source", "relationship", "destination", "id"} <= set(found["relations"][0])
    shapes = {(r["source"], r["relationship"], r["destination"]) for r in found["relations"]}
    assert ("Maria", "lives_in", "Porto") in shapes
    assert ("Maria", "lives_in", "Lisbon") not in shapes  # superseded: never recalled
    plain = await graphed.search(query, user_id="ana", graph=False)
    assert "relations" not in plain

    def rank(results: list[Any]) -> int:
        return next(i for i, m in enumerate(results) if "Porto" in m["memory"])

    assert rank(found["results"]) <= rank(plain["results"])

    # Deleting a memory takes what it alone supported; entities left alone go too.
    work = next(
        m for m in (await graphed.get_all(user_id="ana"))["results"] if "Acme" in m["memory"]
    )
    await graphed.delete(work["id"])
    assert ("Maria", "works_at", "Acme") not in triples(await relations_of(graphed, "ana"))
    names = {e["name"] for e in await graphed.graph.store.entities("user_id = 'ana'")}
    assert "Acme" not in names and "Maria" in names


async def test_users_graphs_are_apart(graphed: AsyncMemory) -> None:
    await graphed.add("My sister Maria lives in Lisbon.", user_id="ana")
    await graphed.add("My sister Maria lives in Oslo.", user_id="ben")
    ben = await graphed.search("Where does Maria live?", user_id="ben")
    assert {r["destination"] for r in ben["relations"]} <= {"Oslo", "Maria"}
    assert all("Lisbon" not in r["memory"] for r in ben["results"])
    await graphed.delete_all(user_id="ben")
    assert await relations_of(graphed, "ben", valid=False) == []
    assert triples(await relations_of(graphed, "ana")) == [
        ("Maria", "lives_in", "Lisbon"),
        ("User", "sister", "Maria"),
    ]


async def test_hostile_names_are_data(graphed: AsyncMemory) -> None:
    await graphed.add(
        "My sister O'Brien lives in Lisbon'); DROP TABLE graph_relations; --.", user_id="eve"
    )
    rows = await relations_of(graphed, "eve")
    hostile = [t for t in triples(rows) if t[0] == "O'Brien" and t[1] == "lives_in"]
    assert hostile and hostile[0][2].startswith("Lisbon'); DROP TABLE graph_relations")
    found = await graphed.search("Where does O'Brien live?", user_id="eve")
    assert found["relations"]
    assert await relations_of(graphed, "eve")  # the table is still there


class FailingLLM:
    """A provider that is down: every call fails the way ``LiteLLMChat`` reports it."""

    model = "down"

    async def complete(self, messages: Any, *, call: Any) -> str:
        raise ExtractionError("LLM call to down failed: 503")


async def test_a_failing_graph_call_keeps_the_facts(graphed: AsyncMemory) -> None:
    """The facts are stored before the graph call, and a queue retry would find the job
    applied: the failure is reported in the job's outcome, never raised."""
    result = await graphed.add("My sister Maria lives in Lisbon.", user_id="gus", infer=False)
    graph = graphed.graph
    assert graph is not None
    report = LearningReport()
    await learn_graph(
        graph,
        Scope("gus"),
        result["results"],
        FailingLLM(),
        when=datetime.now(UTC),
        job_id="j1",
        report=report,
    )
    assert report.graph is not None and "503" in report.graph["error"]
    assert report.to_dict()["graph"] == report.graph
    assert len((await graphed.get_all(user_id="gus"))["results"]) == 1
    assert await relations_of(graphed, "gus") == []


# ---- through the proxy's recall -------------------------------------------------------------


def test_chat_recall_adds_relation_lines(tmp_path: Path) -> None:
    """With graph memory on, the chat's block carries a few relations after the memories."""
    with (
        FakeUpstream() as fake,
        ServerThread(fake_model_proxy(fake.url, str(tmp_path), graph={"enabled": True})) as server,
    ):
        client = openai.OpenAI(base_url=server.url, api_key="sk-x", max_retries=0, timeout=20)
        before = learn_state(server)
        client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": "My sister Maria lives in Lisbon."}],
            extra_body={"user_id": "hal"},
        )
        wait_learned(server, before)
        reply = client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": "Where does my sister live?"}],
            extra_body={"user_id": "hal"},
        )
        block = (reply.choices[0].message.content or "").split("| MEMORIES: ")[-1]
        assert "Maria -[lives_in]-> Lisbon" in block, block
        assert "User's sister Maria lives in Lisbon" in block


# ---- export / import ------------------------------------------------------------------------


async def test_export_and_import_carry_the_graph(
    graphed: AsyncMemory, embedder: Any, fake_llm_config: dict[str, Any], tmp_path: Path
) -> None:
    from proxy.memory_transfer import export_lines, import_lines

    await graphed.add("My sister Maria lives in Lisbon.", user_id="ivy")
    await graphed.add("My sister Maria moved to Porto.", user_id="ivy")
    count, chunks = await export_lines(graphed, Scope("ivy"))
    lines = [line async for chunk in chunks for line in chunk.splitlines()]
    assert count == len(lines)
    records = [orjson.loads(line) for line in lines]
    relations = [r for r in records if r.get("type") == "relation"]
    assert {(r["source"], r["relation"], r["target"]) for r in relations} >= {
        ("Maria", "lives_in", "Lisbon"),
        ("Maria", "lives_in", "Porto"),
    }
    assert any(r["invalid_at"] for r in relations)  # history travels too

    config = MemoryConfig(
        storage_uri=str(tmp_path / "copy"), llm=fake_llm_config, graph={"enabled": True}
    )
    copy = AsyncMemory(config, embedder=embedder)
    await copy.open()
    try:

        async def replay() -> Any:
            for line in lines:
                yield line

        report = await import_lines(copy, replay(), lambda record: None)
        assert report.errors == [] and report.relations == len(relations)
        assert report.imported == len(records) - len(relations)
        again = await import_lines(copy, replay(), lambda record: None)
        assert again.relations == 0 and again.relations_skipped == len(relations)
        found = await copy.search("Where does my sister live?", user_id="ivy")
        shapes = {(r["source"], r["relationship"], r["destination"]) for r in found["relations"]}
        assert ("Maria", "lives_in", "Porto") in shapes
        assert ("Maria", "lives_in", "Lisbon") not in shapes
    finally:
        await copy.close()


@pytest.mark.parametrize(
    "line",
    [
        {
            "type": "relation",
            "id": "r1",
            "source": "",
            "relation": "x",
            "target": "B",
            "valid_from": "2026-01-01",
            "user_id": "ivy",
        },
        {
            "type": "relation",
            "id": "r2",
            "source": "A",
            "relation": "!!",
            "target": "B",
            "valid_from": "2026-01-01",
            "user_id": "ivy",
        },
        {
            "type": "relation",
            "id": "r3",
            "source": "A",
            "relation": "x",
            "target": "B",
            "valid_from": "not a date",
            "user_id": "ivy",
        },
        {
            "type": "relation",
            "id": "r 4",
            "source": "A",
            "relation": "x",
            "target": "B",
            "valid_from": "2026-01-01",
            "user_id": "ivy",
        },
        {
            "type": "relation",
            "id": "r5",
            "source": "A",
            "relation": "x",
            "target": "B",
            "valid_from": "2026-01-01",
            "user_id": "ivy",
            "memory_ids": ["a b"],
        },
    ],
)
async def test_bad_relation_lines_are_refused_by_line(
    graphed: AsyncMemory, line: dict[str, Any]
) -> None:
    from proxy.memory_transfer import import_lines

    async def one() -> Any:
        yield orjson.dumps(line)

    report = await import_lines(graphed, one(), lambda record: None)
    assert report.relations == 0 and [e["line"] for e in report.errors] == [1]
