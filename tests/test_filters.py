"""memory_core.filters: the one place caller values become LanceDB SQL."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from memory_core import AsyncMemory, MemoryConfig
from memory_core.errors import (
    InvalidFilter,
    InvalidIdentity,
    MemoryCoreError,
    StoreError,
)
from memory_core.filters import (
    MAX_IN_VALUES,
    MAX_VALUE_CHARS,
    compile_filters,
    ids_sql,
    scope_sql,
    sql_literal,
)
from memory_core.records import content_hash
from memory_core.timestamps import normalize_timestamp
from memory_core.types import Scope

U1 = Scope(user_id="u1")
BASE = "user_id = 'u1'"

HOSTILE_STRINGS = [
    "O'Brien",
    "' OR 1=1 --",
    "x' OR user_id = 'u2' --",
    "OR 1=1",
    "'; DROP TABLE memories; --",
    "''",
    "'",
    "back\\slash",
    "\\' OR 1=1 --",
    "trailing\\",
    "%",
    "_",
    "a_b%c",
    '"double" quotes',
    "🐱 cat emoji 👩‍👩‍👧",
    "שלום עולם",  # RTL
    "\u202eevil\u202c",  # RTL override
    "e\u0301 combining",
    "tab\tnew\nline\r",
    "",
    "a" * MAX_VALUE_CHARS,
]


def unquote(literal: str) -> str:
    """Invert sql_literal for strings, failing on any quote that is not doubled."""
    assert literal.startswith("'") and literal.endswith("'") and len(literal) >= 2
    inner = literal[1:-1]
    assert "'" not in inner.replace("''", ""), f"unescaped quote in {literal!r}"
    return inner.replace("''", "'")


# ---- sql_literal ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("O'Brien", "'O''Brien'"),
        ("' OR 1=1 --", "''' OR 1=1 --'"),
        ("OR 1=1", "'OR 1=1'"),
        ("back\\slash", "'back\\slash'"),
        ("", "''"),
        ("🐱", "'🐱'"),
        ("שלום", "'שלום'"),
        ("e\u0301", "'e\u0301'"),
        (True, "TRUE"),
        (False, "FALSE"),
        (0, "0"),
        (-42, "-42"),
        (1.5, "1.5"),
        (-0.25, "-0.25"),
    ],
)
def test_sql_literal_renders(value: Any, expected: str) -> None:
    assert sql_literal(value) == expected


@pytest.mark.parametrize("value", HOSTILE_STRINGS)
def test_sql_literal_strings_round_trip_with_every_quote_doubled(value: str) -> None:
    assert unquote(sql_literal(value)) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("nul\x00byte", "NUL"),
        ("\x00", "NUL"),
        ("a" * (MAX_VALUE_CHARS + 1), "longer than"),
        ("x" * 10_240, "longer than"),  # 10 kB
        (math.nan, "finite"),
        (math.inf, "finite"),
        (-math.inf, "finite"),
        (None, "unsupported"),
        ([1, 2], "unsupported"),
        ({"a": 1}, "unsupported"),
        (b"bytes", "unsupported"),
        ((1,), "unsupported"),
    ],
)
def test_sql_literal_rejects_cleanly(value: Any, message: str) -> None:
    with pytest.raises(InvalidFilter, match=message):
        sql_literal(value)


# ---- ids and scope -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        (Scope(user_id="u1"), "user_id = 'u1'"),
        (Scope(agent_id="a-1"), "agent_id = 'a-1'"),
        (Scope(run_id="r.1"), "run_id = 'r.1'"),
        (
            Scope(user_id="u1", agent_id="a", run_id="r"),
            "user_id = 'u1' AND agent_id = 'a' AND run_id = 'r'",
        ),
        (Scope(user_id="alice@example.com"), "user_id = 'alice@example.com'"),
        (Scope(user_id="a.b_c:d+e-f@g"), "user_id = 'a.b_c:d+e-f@g'"),
        (Scope(user_id="x" * 128), "user_id = '" + "x" * 128 + "'"),
        (Scope(), ""),
    ],
)
def test_scope_sql(scope: Scope, expected: str) -> None:
    assert scope_sql(scope) == expected


BAD_IDS = [
    "",
    "u 1",
    "u'1",
    "' OR 1=1 --",
    "u1;--",
    "u1\x00",
    "x" * 129,
    "é",
    "🐱",
    "../etc",
    "a/b",
    "a\\b",
    "a%b",
    "a*b",
    "u1\n",
    "(u1)",
]


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize("field", ["user_id", "agent_id", "run_id"])
def test_scope_rejects_malformed_ids(field: str, bad: str) -> None:
    with pytest.raises(InvalidIdentity, match=field):
        Scope(**{field: bad})


@pytest.mark.parametrize("bad", [5, 1.0, b"u1", ["u1"], True])
def test_scope_rejects_non_string_ids(bad: Any) -> None:
    with pytest.raises(InvalidIdentity):
        Scope(user_id=bad)


@pytest.mark.parametrize("bad", ["' OR 1=1 --", "u 1", "x" * 200])
def test_scope_sql_validates_again(bad: str) -> None:
    """Even a Scope whose validation was bypassed cannot smuggle SQL through scope_sql."""
    scope = Scope(user_id="u1")
    object.__setattr__(scope, "user_id", bad)
    with pytest.raises(InvalidIdentity):
        scope_sql(scope)


def test_scope_require() -> None:
    with pytest.raises(InvalidIdentity, match="at least one"):
        Scope().require()
    assert Scope(run_id="r").require() == Scope(run_id="r")


def test_ids_sql() -> None:
    assert ids_sql("id", ["a", "b'c"]) == "id IN ('a', 'b''c')"
    assert ids_sql("memory_id", ["x"]) == "memory_id IN ('x')"
    assert ids_sql("id", []) == "FALSE"
    with pytest.raises(InvalidFilter, match="unknown column"):
        ids_sql("memory; DROP", ["a"])
    with pytest.raises(InvalidFilter):
        ids_sql("id", ["a\x00"])


# ---- compile_filters: shape ----------------------------------------------------------------


@pytest.mark.parametrize("filters", [None, {}])
def test_no_filters_is_just_the_scope(filters: Any) -> None:
    compiled = compile_filters(U1, filters)
    assert compiled.sql == BASE
    assert compiled.predicate is None
    assert compiled.matches({"metadata": {}})


@pytest.mark.parametrize("filters", ["user_id = 'u2'", [("id", "x")], 5])
def test_filters_must_be_an_object(filters: Any) -> None:
    with pytest.raises(InvalidFilter):
        compile_filters(U1, filters)


def sql_of(filters: dict[str, Any], scope: Scope = U1) -> str:
    compiled = compile_filters(scope, filters)
    assert compiled.predicate is None, "column filters must compile to SQL only"
    return compiled.sql


@pytest.mark.parametrize(
    ("filters", "fragment"),
    [
        ({"id": "abc"}, "id = 'abc'"),
        ({"id": {"eq": "abc"}}, "id = 'abc'"),
        ({"hash": {"ne": "h"}}, "hash != 'h'"),
        ({"hash": {"gt": "h"}}, "hash > 'h'"),
        ({"hash": {"gte": "h"}}, "hash >= 'h'"),
        ({"hash": {"lt": "h"}}, "hash < 'h'"),
        ({"hash": {"lte": "h"}}, "hash <= 'h'"),
        ({"id": {"in": ["a", "b"]}}, "id IN ('a', 'b')"),
        ({"id": {"nin": ["a", "b"]}}, "id NOT IN ('a', 'b')"),
        ({"id": {"in": []}}, "FALSE"),
        ({"id": {"nin": []}}, "TRUE"),
        ({"id": {"contains": "ab"}}, "id LIKE '%ab%' ESCAPE '\\'"),
        ({"id": {"icontains": "AB"}}, "lower(id) LIKE lower('%AB%') ESCAPE '\\'"),
        # LIKE metacharacters are escaped, quotes doubled, backslashes escaped for LIKE
        ({"id": {"contains": "a_b%c"}}, "id LIKE '%a\\_b\\%c%' ESCAPE '\\'"),
        ({"id": {"contains": "O'Brien"}}, "id LIKE '%O''Brien%' ESCAPE '\\'"),
        ({"id": {"contains": "a\\b"}}, "id LIKE '%a\\\\b%' ESCAPE '\\'"),
        ({"id": "' OR 1=1 --"}, "id = ''' OR 1=1 --'"),
        ({"user_id": "u1"}, "user_id = 'u1'"),
        ({"agent_id": {"in": ["a1", "a2"]}}, "agent_id IN ('a1', 'a2')"),
        ({"run_id": {"ne": "r1"}}, "run_id != 'r1'"),
        ({"user_id": {"contains": "' OR"}}, "user_id LIKE '%'' OR%' ESCAPE '\\'"),
        (
            {"created_at": {"gte": "2024-01-02"}},
            "created_at >= '2024-01-02T00:00:00.000000+00:00'",
        ),
        (
            {"updated_at": {"lt": "2024-01-02T03:04:05Z"}},
            "updated_at < '2024-01-02T03:04:05.000000+00:00'",
        ),
        ({"created_at": 0}, "created_at = '1970-01-01T00:00:00.000000+00:00'"),
        (
            {"created_at": {"in": ["2024-01-02", 86400]}},
            "created_at IN ('2024-01-02T00:00:00.000000+00:00', "
            "'1970-01-02T00:00:00.000000+00:00')",
        ),
        ({"created_at": {"contains": "2024-01"}}, "created_at LIKE '%2024-01%' ESCAPE '\\'"),
    ],
)
def test_column_operators(filters: dict[str, Any], fragment: str) -> None:
    sql = sql_of(filters)
    assert sql.startswith(f"({BASE}) AND (")
    assert fragment in sql
    # nothing but the scope, the fragment and grouping parentheses
    assert sql.replace(f"({BASE}) AND ", "", 1).strip("()") == fragment.strip("()")


@pytest.mark.parametrize(
    "filters",
    [
        {"user_id": "u2"},
        {"OR": [{"user_id": "u2"}, {"id": "x"}]},
        {"NOT": {"user_id": "u1"}},
        {"id": {"ne": "x"}},
        {"created_at": {"gte": 0}},
    ],
)
def test_scope_is_always_anded_in(filters: dict[str, Any]) -> None:
    sql = sql_of(filters)
    assert sql.startswith(f"({BASE}) AND (")
    # the scope clause stands alone at the top level: a filter cannot OR around it
    assert sql.count("(") == sql.count(")")


def test_multiple_fields_and_operators_are_anded() -> None:
    sql = sql_of({"id": {"gte": "a", "lt": "m"}, "hash": "h"})
    assert sql == f"({BASE}) AND (((id >= 'a') AND (id < 'm')) AND (hash = 'h'))"


def flat(sql: str) -> str:
    return sql.replace("(", "").replace(")", "")


def group_after(sql: str, opener: str) -> str:
    """The balanced parenthesised group that starts at the end of ``opener``."""
    start = sql.index(opener) + len(opener) - 1
    depth = 0
    for index in range(start, len(sql)):
        depth += {"(": 1, ")": -1}.get(sql[index], 0)
        if depth == 0:
            return sql[start : index + 1]
    raise AssertionError(f"unbalanced: {sql}")


def test_logic_operators_compile_to_sql() -> None:
    assert flat(sql_of({"AND": [{"id": "a"}, {"hash": "b"}]})) == (
        "user_id = 'u1' AND id = 'a' AND hash = 'b'"
    )
    or_sql = sql_of({"OR": [{"id": "a"}, {"hash": "b"}]})
    assert flat(or_sql) == "user_id = 'u1' AND id = 'a' OR hash = 'b'"
    # the OR is grouped on its own, so it cannot escape the scope
    assert group_after(or_sql, f"({BASE}) AND (") == or_sql[len(f"({BASE}) AND ") :]
    assert "OR" in group_after(or_sql, f"({BASE}) AND (")
    assert flat(sql_of({"NOT": {"id": "a"}})) == "user_id = 'u1' AND NOT id = 'a'"
    not_sql = sql_of({"NOT": [{"id": "a"}, {"hash": "b"}]})
    negated = group_after(not_sql, "NOT (")
    assert "id = 'a'" in negated and "hash = 'b'" in negated and " AND " in negated
    nested = sql_of({"OR": [{"AND": [{"id": "a"}, {"hash": "b"}]}, {"NOT": {"id": "c"}}]})
    assert flat(nested) == "user_id = 'u1' AND id = 'a' AND hash = 'b' OR NOT id = 'c'"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-02", "2024-01-02T00:00:00.000000+00:00"),
        ("2024-01-02T03:04:05", "2024-01-02T03:04:05.000000+00:00"),
        ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05.000000+00:00"),
        ("2024-01-02T03:04:05.123456+00:00", "2024-01-02T03:04:05.123456+00:00"),
        ("2024-01-02T03:04:05+02:00", "2024-01-02T01:04:05.000000+00:00"),
        ("2024-01-01T23:30:00-01:00", "2024-01-02T00:30:00.000000+00:00"),
        (0, "1970-01-01T00:00:00.000000+00:00"),
        (1.5, "1970-01-01T00:00:01.500000+00:00"),
        (1_700_000_000, "2023-11-14T22:13:20.000000+00:00"),
    ],
)
def test_normalize_timestamp(value: Any, expected: str) -> None:
    assert normalize_timestamp(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "2024-13-01",
        "",
        "' OR 1=1",
        "x" * 10_240,
        "9999-12-31T23:59:59-01:00",  # past datetime.max once converted to UTC
        True,
        None,
        [1],
        1e300,
        -1e20,
        math.nan,
        math.inf,
        10**30,
    ],
)
def test_normalize_timestamp_rejects(value: Any) -> None:
    with pytest.raises(InvalidFilter):
        normalize_timestamp(value)


@pytest.mark.parametrize(
    ("filters", "error"),
    [
        ({"id": {"like": "x"}}, InvalidFilter),
        ({"id": {"$eq": "x"}}, InvalidFilter),
        ({"tag": {"regex": ".*"}}, InvalidFilter),
        ({"tag": {"EQ": 1}}, InvalidFilter),
        ({"memory": "x"}, InvalidFilter),
        ({"vector": [0.1]}, InvalidFilter),
        ({"metadata": {"eq": "x"}}, InvalidFilter),
        ({"categories": "x"}, InvalidFilter),
        ({"metadata.": "x"}, InvalidFilter),
        ({"metadata.memory": "x"}, InvalidFilter),
        ({"": "x"}, InvalidFilter),
        ({1: "x"}, InvalidFilter),
        ({"tag": {}}, InvalidFilter),
        ({"id": 5}, InvalidFilter),
        ({"id": True}, InvalidFilter),
        ({"hash": 1.5}, InvalidFilter),
        ({"hash": {"in": [1, "a"]}}, InvalidFilter),
        ({"id": None}, InvalidFilter),
        ({"id": ["a", "b"]}, InvalidFilter),
        ({"id": {"in": "a"}}, InvalidFilter),
        ({"id": {"in": ["x"] * (MAX_IN_VALUES + 1)}}, InvalidFilter),
        ({"id": {"contains": 5}}, InvalidFilter),
        ({"id": "a\x00"}, InvalidFilter),
        ({"id": "x" * 10_240}, InvalidFilter),
        ({"id": {"contains": "x" * 10_240}}, InvalidFilter),
        ({"user_id": 5}, InvalidFilter),
        ({"user_id": None}, InvalidFilter),
        ({"user_id": "u1' OR '1'='1"}, InvalidIdentity),
        ({"user_id": "x" * 10_240}, InvalidIdentity),
        ({"agent_id": {"in": ["a", "b c"]}}, InvalidIdentity),
        ({"run_id": {"ne": ""}}, InvalidIdentity),
        ({"created_at": "yesterday"}, InvalidFilter),
        ({"created_at": {"gt": None}}, InvalidFilter),
        ({"AND": []}, InvalidFilter),
        ({"OR": []}, InvalidFilter),
        ({"OR": {"id": "a"}}, InvalidFilter),
        ({"AND": ["id = 'a'"]}, InvalidFilter),
        ({"OR": [{"id": "a"}, 5]}, InvalidFilter),
        ({"NOT": "id = 'a'"}, InvalidFilter),
        ({"NOT": [1]}, InvalidFilter),
        ({"OR": [{"id": "a"}, {"tag": "x"}]}, InvalidFilter),  # SQL and metadata mixed
        ({"NOT": {"id": "a", "tag": "x"}}, InvalidFilter),
        ({"tag": [1, 2]}, InvalidFilter),
        ({"tag": None}, InvalidFilter),
        ({"tag": {"eq": {"nested": 1}}}, InvalidFilter),
        ({"tag": math.nan}, InvalidFilter),
        ({"tag": "x" * 10_240}, InvalidFilter),
        ({"tag": "a\x00"}, InvalidFilter),
        ({"tag": {"contains": 5}}, InvalidFilter),
        ({"tag": {"icontains": None}}, InvalidFilter),
        ({"tag": {"in": "abc"}}, InvalidFilter),
        ({"tag": {"nin": list(range(MAX_IN_VALUES + 1))}}, InvalidFilter),
    ],
)
def test_invalid_filters_are_rejected(filters: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        compile_filters(U1, filters)


# ---- metadata predicates ------------------------------------------------------------------


def row(**metadata: Any) -> dict[str, Any]:
    return {"id": "m", "user_id": "u1", "metadata": metadata}


@pytest.mark.parametrize(
    ("filters", "metadata", "expected"),
    [
        ({"tag": "x"}, {"tag": "x"}, True),
        ({"tag": "x"}, {"tag": "y"}, False),
        ({"tag": "x"}, {}, False),
        ({"metadata.tag": "x"}, {"tag": "x"}, True),
        ({"tag": {"eq": 3}}, {"tag": 3}, True),
        ({"tag": {"eq": 3}}, {"tag": "3"}, False),
        ({"tag": {"ne": "x"}}, {"tag": "y"}, True),
        ({"tag": {"ne": "x"}}, {"tag": "x"}, False),
        ({"tag": {"ne": "x"}}, {}, True),
        ({"n": {"gt": 2}}, {"n": 3}, True),
        ({"n": {"gt": 3}}, {"n": 3}, False),
        ({"n": {"gte": 3}}, {"n": 3}, True),
        ({"n": {"lt": 3}}, {"n": 2.5}, True),
        ({"n": {"lt": 3}}, {"n": 3}, False),
        ({"n": {"lte": 3}}, {"n": 3}, True),
        ({"n": {"gt": 2}}, {"n": "10"}, False),  # incomparable types never match
        ({"n": {"gt": 2}}, {"n": None}, False),
        ({"n": {"gt": 2}}, {}, False),
        ({"n": {"gte": 1, "lte": 5}}, {"n": 5}, True),
        ({"n": {"gte": 1, "lte": 5}}, {"n": 6}, False),
        ({"s": {"gt": "b"}}, {"s": "c"}, True),
        ({"tag": {"in": ["a", "b"]}}, {"tag": "b"}, True),
        ({"tag": {"in": ["a", "b"]}}, {"tag": "c"}, False),
        ({"tag": {"in": ["a", "b"]}}, {}, False),
        ({"tag": {"in": []}}, {"tag": "a"}, False),
        ({"tag": {"nin": ["a", "b"]}}, {"tag": "c"}, True),
        ({"tag": {"nin": ["a", "b"]}}, {"tag": "a"}, False),
        ({"tag": {"nin": ["a"]}}, {}, True),
        ({"note": {"contains": "Brien"}}, {"note": "O'Brien"}, True),
        ({"note": {"contains": "brien"}}, {"note": "O'Brien"}, False),
        ({"note": {"icontains": "BRIEN"}}, {"note": "O'Brien"}, True),
        ({"note": {"contains": "%"}}, {"note": "abc"}, False),  # no LIKE semantics here
        ({"note": {"contains": "1"}}, {"note": 123}, False),
        ({"note": {"icontains": "x"}}, {"note": ["x"]}, False),
        ({"note": "' OR 1=1 --"}, {"note": "' OR 1=1 --"}, True),
        ({"note": "' OR 1=1 --"}, {"note": "anything"}, False),
        ({"note": "🐱"}, {"note": "🐱"}, True),
        ({"note": "e\u0301"}, {"note": "é"}, False),  # no unicode normalisation
        ({"a": 1, "b": 2}, {"a": 1, "b": 2}, True),
        ({"a": 1, "b": 2}, {"a": 1, "b": 3}, False),
        ({"AND": [{"a": 1}, {"b": 2}]}, {"a": 1, "b": 2}, True),
        ({"AND": [{"a": 1}, {"b": 2}]}, {"a": 1}, False),
        ({"OR": [{"a": 1}, {"b": 2}]}, {"b": 2}, True),
        ({"OR": [{"a": 1}, {"b": 2}]}, {"a": 2, "b": 1}, False),
        ({"NOT": {"a": 1}}, {"a": 1}, False),
        ({"NOT": {"a": 1}}, {"a": 2}, True),
        ({"NOT": [{"a": 1}, {"b": 2}]}, {"a": 1, "b": 3}, True),
        ({"NOT": {"OR": [{"a": 1}, {"b": 2}]}}, {"b": 2}, False),
    ],
)
def test_metadata_predicates(
    filters: dict[str, Any], metadata: dict[str, Any], expected: bool
) -> None:
    compiled = compile_filters(U1, filters)
    assert compiled.sql in (BASE, f"({BASE})"), "metadata filters must not add SQL"
    assert compiled.predicate is not None
    assert compiled.matches(row(**metadata)) is expected


def test_metadata_predicate_handles_missing_metadata_column() -> None:
    compiled = compile_filters(U1, {"tag": {"ne": "x"}})
    assert compiled.matches({"id": "m"}) is True
    assert compiled.matches({"id": "m", "metadata": None}) is True
    assert compile_filters(U1, {"tag": "x"}).matches({"metadata": None}) is False


def test_mixed_sql_and_metadata_under_and() -> None:
    compiled = compile_filters(U1, {"id": "abc", "tag": "x"})
    assert compiled.sql == f"({BASE}) AND ((id = 'abc'))"
    assert compiled.matches(row(tag="x"))
    assert not compiled.matches(row(tag="y"))


# ---- hostile values against a real LanceDB store -----------------------------------------

SECRET = "u2 secret: the vault code is 1234"


def hostile_filters() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for value in HOSTILE_STRINGS + ["x" * 10_240, "nul\x00", "u2", "u1' OR user_id = 'u2"]:
        cases += [
            {"id": value},
            {"hash": {"ne": value}},
            {"id": {"in": [value, "' OR 1=1 --"]}},
            {"hash": {"nin": [value]}},
            {"id": {"contains": value}},
            {"hash": {"icontains": value}},
            {"user_id": value},
            {"user_id": {"contains": value}},
            {"agent_id": {"icontains": value}},
            {"created_at": {"gte": value}},
            {"created_at": {"contains": value}},
            {"note": value},
            {"note": {"contains": value}},
            {"OR": [{"id": value}, {"user_id": "u2"}]},
            {"NOT": {"id": value}},
            {"OR": [{"note": value}, {"NOT": {"note": value}}]},
        ]
    return cases


SCOPE_TRICKS: list[dict[str, Any]] = [
    {"user_id": "u2"},
    {"user_id": {"in": ["u1", "u2"]}},
    {"user_id": {"ne": "u1"}},
    {"NOT": {"user_id": "u1"}},
    {"OR": [{"user_id": "u2"}, {"user_id": "u1"}]},
    {"OR": [{"user_id": {"contains": "u"}}, {"id": {"ne": ""}}]},
    {"id": {"nin": []}},
    {"id": 1},
    {"id": True},
    {"hash": {"in": [1.5]}},
    {"created_at": {"gt": 1e300}},
]


async def test_hostile_filters_against_real_lancedb(tmp_path: Any, embedder: Any) -> None:
    memory = AsyncMemory(MemoryConfig(storage_uri=str(tmp_path / "db")), embedder=embedder)
    try:
        texts = ["I like O'Brien's pub", "path is C:\\temp\\x", "50% off a_b deals", "🐱 שלום"]
        added = await memory.add(texts, user_id="u1", infer=False, metadata={"note": "' OR 1=1 --"})
        assert len(added["results"]) == 4
        await memory.add(SECRET, user_id="u2", infer=False, metadata={"note": "u1"})
        # ids of u2 that pass the id pattern must not leak either
        await memory.add("agent row", user_id="u2", agent_id="a_b", infer=False)

        async def attempt(call: str, filters: dict[str, Any]) -> int:
            try:
                if call == "get_all":
                    result = await memory.get_all(user_id="u1", filters=filters)
                else:
                    result = await memory.search(
                        "' OR 1=1 -- vault code", user_id="u1", filters=filters
                    )
            except (InvalidFilter, InvalidIdentity):
                return 1
            except StoreError as exc:  # pragma: no cover - the assertion message matters
                pytest.fail(f"{filters!r} reached LanceDB as a bad query: {exc}")
            for item in result["results"]:
                assert item["user_id"] == "u1", (filters, item)
                assert item["memory"] != SECRET
            return 0

        cases = hostile_filters()
        outcomes = await asyncio.gather(
            *(attempt("get_all", f) for f in cases + SCOPE_TRICKS),
            *(attempt("search", f) for f in cases[::8] + SCOPE_TRICKS),
        )
        clean_errors = sum(outcomes)
        assert clean_errors > 0  # the 10 kB / NUL / bad id cases are refused up front

        # values are matched literally, not interpreted
        hits = await memory.get_all(user_id="u1", filters={"note": "' OR 1=1 --"})
        assert len(hits["results"]) == 4
        hits = await memory.get_all(user_id="u2", filters={"note": "' OR 1=1 --"})
        assert hits["results"] == []
        digest = content_hash("path is C:\\temp\\x")
        hits = await memory.get_all(user_id="u1", filters={"hash": digest})
        assert [h["memory"] for h in hits["results"]] == ["path is C:\\temp\\x"]
        hits = await memory.get_all(user_id="u1", filters={"hash": {"in": [digest, "' OR 1=1"]}})
        assert len(hits["results"]) == 1
        hits = await memory.get_all(user_id="u1", filters={"NOT": {"hash": digest}})
        assert len(hits["results"]) == 3
    finally:
        await memory.close()


async def test_like_metacharacters_are_literal_in_lancedb(tmp_path: Any, embedder: Any) -> None:
    memory = AsyncMemory(MemoryConfig(storage_uri=str(tmp_path / "db")), embedder=embedder)
    try:
        for agent in ("a_b", "axb", "A_B.c"):
            await memory.add(f"row of {agent}", user_id="u1", agent_id=agent, infer=False)

        async def agents(filters: dict[str, Any]) -> set[str]:
            result = await memory.get_all(user_id="u1", filters=filters)
            return {item["agent_id"] for item in result["results"]}

        assert await agents({"agent_id": {"contains": "a_b"}}) == {"a_b"}
        assert await agents({"agent_id": {"icontains": "a_b"}}) == {"a_b", "A_B.c"}
        assert await agents({"agent_id": {"contains": "%"}}) == set()
        assert await agents({"agent_id": {"contains": "_"}}) == {"a_b", "A_B.c"}
        assert await agents({"agent_id": {"contains": "\\"}}) == set()
        assert await agents({"agent_id": {"contains": ""}}) == {"a_b", "axb", "A_B.c"}
        assert await agents({"agent_id": {"in": ["axb", "a_b"]}}) == {"axb", "a_b"}
        assert await agents({"agent_id": {"nin": ["axb"]}}) == {"a_b", "A_B.c"}
        assert await agents({"OR": [{"agent_id": "axb"}, {"agent_id": "a_b"}]}) == {"axb", "a_b"}
        assert await agents({"NOT": {"agent_id": "axb"}}) == {"a_b", "A_B.c"}
    finally:
        await memory.close()


def test_error_types_are_memory_core_errors() -> None:
    assert issubclass(InvalidFilter, MemoryCoreError)
    assert issubclass(InvalidIdentity, MemoryCoreError)
    assert not issubclass(InvalidFilter, StoreError)
