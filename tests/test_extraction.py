"""memory_core.extraction: tolerant JSON parsing, fact/decision validation, id mapping."""

from __future__ import annotations

from typing import Any

import pytest

from memory_core.config import LLMConfig
from memory_core.contracts import FACTS_SCHEMA, MAX_REASON_CHARS
from memory_core.errors import ExtractionError
from memory_core.extraction import (
    MAX_FACT_CHARS,
    Decision,
    LiteLLMChat,
    complete_validated,
    offer_ids,
    parse_decisions,
    parse_facts,
    parse_json_object,
)
from memory_core.llm_client import CallOptions

# ---- parse_json_object ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"facts": ["a"]}', {"facts": ["a"]}),
        ('  \n{"facts": []}\n  ', {"facts": []}),
        ('```json\n{"facts": ["a"]}\n```', {"facts": ["a"]}),
        ('```JSON\n{"facts": ["a"]}\n```', {"facts": ["a"]}),
        ('```\n{"facts": ["a"]}\n```', {"facts": ["a"]}),
        ('```json{"facts": ["a"]}```', {"facts": ["a"]}),
        ('Here you go:\n```json\n{"facts": ["a"]}\n```\nHope this helps!', {"facts": ["a"]}),
        ('Sure! The answer is {"facts": ["a"]} as requested.', {"facts": ["a"]}),
        ('prose with a brace { that is not json, then {"facts": ["b"]}', {"facts": ["b"]}),
        (
            '{"memory": [{"id": "0", "event": "NONE", "meta": {"x": [1, {"y": 2}]}}]}',
            {"memory": [{"id": "0", "event": "NONE", "meta": {"x": [1, {"y": 2}]}}]},
        ),
        ('{"facts": ["has } and { inside a string"]}', {"facts": ["has } and { inside a string"]}),
        ('{"a": 1} {"b": 2}', {"a": 1}),  # the first object wins
        ('[{"a": 1}]', {"a": 1}),  # a top-level array is skipped for the object inside
        ('{"facts": ["ünïcødé 🐱", "שלום"]}', {"facts": ["ünïcødé 🐱", "שלום"]}),
        ('```json\n{"broken": \n```\n{"facts": ["fallback"]}', {"facts": ["fallback"]}),
        ("{}", {}),
    ],
)
def test_parse_json_object(text: str, expected: dict[str, Any]) -> None:
    assert parse_json_object(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\t ",
        "no json here",
        '{"facts": ["a", "b"',  # truncated
        '```json\n{"facts": ["a"\n```',  # truncated inside a fence
        '{"facts": ["a"], ',
        "[1, 2, 3]",
        '"just a string"',
        "42",
        "null",
        "{'facts': ['single quotes']}",
        "{facts: []}",
        None,
        123,
    ],
)
def test_parse_json_object_rejects(text: Any) -> None:
    with pytest.raises(ExtractionError):
        parse_json_object(text)


# ---- parse_facts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"facts": []}, []),
        ({"facts": ["User is vegetarian"]}, ["User is vegetarian"]),
        (
            {"facts": ["User is vegetarian", "User is vegetarian", "user IS VEGETARIAN"]},
            ["User is vegetarian"],
        ),
        ({"facts": ["  User   likes\n tea  ", "User likes tea"]}, ["User likes tea"]),
        ({"facts": ["a", 1, None, {"x": 1}, ["b"], True, "c"]}, ["a", "c"]),
        ({"facts": ["", "   ", "\n", "real"]}, ["real"]),
        ({"facts": ["B", "A", "B"]}, ["B", "A"]),  # order kept
        ({"facts": ["x" * (MAX_FACT_CHARS + 500)]}, ["x" * MAX_FACT_CHARS]),
        ({"facts": ["Café", "café"]}, ["Café"]),
        ({"facts": ["User 🐱"], "extra": "ignored"}, ["User 🐱"]),
    ],
)
def test_parse_facts(payload: dict[str, Any], expected: list[str]) -> None:
    assert parse_facts(payload) == expected


@pytest.mark.parametrize(
    "payload",
    [{}, {"facts": "User is vegetarian"}, {"facts": None}, {"facts": {"0": "x"}}, {"fact": []}],
)
def test_parse_facts_requires_a_list(payload: dict[str, Any]) -> None:
    with pytest.raises(ExtractionError, match="facts"):
        parse_facts(payload)


# ---- offer_ids / parse_decisions -----------------------------------------------------------

REAL = ["9f1c7c2e-0000-4000-8000-000000000001", "9f1c7c2e-0000-4000-8000-000000000002"]


def test_offer_ids_are_small_integers() -> None:
    offered = offer_ids(REAL)
    assert offered == {"0": REAL[0], "1": REAL[1]}
    assert offer_ids([]) == {}
    many = offer_ids([f"id-{n}" for n in range(12)])
    assert list(many) == [str(n) for n in range(12)]
    assert all(len(small) <= 2 for small in many)


OFFERED = offer_ids(REAL)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([], []),
        (
            [{"id": "0", "text": "User lives in Rome", "event": "UPDATE"}],
            [Decision("UPDATE", "User lives in Rome", REAL[0])],
        ),
        ([{"id": "1", "text": "x", "event": "DELETE"}], [Decision("DELETE", "x", REAL[1])]),
        ([{"id": "1", "event": "DELETE"}], [Decision("DELETE", "", REAL[1])]),
        ([{"id": "0", "text": "same", "event": "NONE"}], [Decision("NONE", "same", REAL[0])]),
        # ids may come back as numbers or padded
        ([{"id": 1, "text": "t", "event": "update"}], [Decision("UPDATE", "t", REAL[1])]),
        ([{"id": " 0 ", "text": "t", "event": "Update"}], [Decision("UPDATE", "t", REAL[0])]),
        # ids that were not offered are ignored (never touch an arbitrary row)
        ([{"id": "7", "text": "t", "event": "UPDATE"}], []),
        ([{"id": REAL[0], "text": "t", "event": "DELETE"}], []),
        ([{"id": "-1", "event": "DELETE"}], []),
        ([{"text": "t", "event": "UPDATE"}], []),
        # ADD never reuses an offered id
        (
            [{"id": "0", "text": "User has a cat", "event": "ADD"}],
            [Decision("ADD", "User has a cat")],
        ),
        (
            [{"id": "new-1", "text": "User has a cat", "event": "ADD"}],
            [Decision("ADD", "User has a cat")],
        ),
        # ADD with empty text is dropped, duplicate ADDs collapse
        ([{"id": "new", "text": "", "event": "ADD"}], []),
        ([{"id": "new", "text": "   ", "event": "ADD"}], []),
        ([{"id": "new", "event": "ADD"}], []),
        ([{"id": "new", "text": 5, "event": "ADD"}], []),
        (
            [
                {"id": "a", "text": "User has a cat", "event": "ADD"},
                {"id": "b", "text": "user has a  CAT", "event": "ADD"},
            ],
            [Decision("ADD", "User has a cat")],
        ),
        # UPDATE needs text
        ([{"id": "0", "text": "", "event": "UPDATE"}], []),
        ([{"id": "0", "event": "UPDATE"}], []),
        # one decision per memory: the first wins
        (
            [
                {"id": "0", "text": "first", "event": "UPDATE"},
                {"id": "0", "event": "DELETE"},
                {"id": "0", "text": "third", "event": "UPDATE"},
            ],
            [Decision("UPDATE", "first", REAL[0])],
        ),
        (
            [{"id": "0", "event": "NONE"}, {"id": "0", "text": "late", "event": "UPDATE"}],
            [Decision("NONE", "", REAL[0])],
        ),
        # an invalid first entry does not block a valid later one for the same id
        (
            [{"id": "0", "text": "", "event": "UPDATE"}, {"id": "0", "event": "DELETE"}],
            [Decision("DELETE", "", REAL[0])],
        ),
        # unknown events and junk entries are dropped
        ([{"id": "0", "text": "t", "event": "MERGE"}], []),
        ([{"id": "0", "text": "t"}], []),
        ([{"id": "0", "text": "t", "event": None}], []),  # null is not "NONE"
        ([{"id": "0", "text": "t", "event": 1}], []),
        (
            [{"id": "0", "event": None}, {"id": "0", "text": "t", "event": "UPDATE"}],
            [Decision("UPDATE", "t", REAL[0])],
        ),
        ([{"id": "0", "text": "t", "event": " update "}], [Decision("UPDATE", "t", REAL[0])]),
        (["ADD", 5, None, ["0", "t", "UPDATE"]], []),
        # mixed answer
        (
            [
                {"id": "0", "text": "User lives in Rome", "event": "UPDATE", "old_memory": "P"},
                {"id": "1", "event": "DELETE"},
                {"id": "new-1", "text": "User is vegetarian", "event": "ADD"},
                {"id": "9", "text": "bogus", "event": "UPDATE"},
            ],
            [
                Decision("UPDATE", "User lives in Rome", REAL[0]),
                Decision("DELETE", "", REAL[1]),
                Decision("ADD", "User is vegetarian"),
            ],
        ),
        (
            [{"id": "0", "text": "  spaced \n text ", "event": "UPDATE"}],
            [Decision("UPDATE", "spaced text", REAL[0])],
        ),
        (
            [{"id": "n", "text": "y" * (MAX_FACT_CHARS + 1), "event": "ADD"}],
            [Decision("ADD", "y" * MAX_FACT_CHARS)],
        ),
        # The optional reason: kept as one line, cut; null, absent or not a string is None.
        (
            [
                {"id": "0", "text": "User lives in Rome", "event": "UPDATE", "reason": " moved\n"},
                {"id": "1", "text": "", "event": "NONE", "reason": None},
                {"id": "n", "text": "User is vegetarian", "event": "ADD", "reason": ["x"]},
            ],
            [
                Decision("UPDATE", "User lives in Rome", REAL[0], "moved"),
                Decision("NONE", "", REAL[1]),
                Decision("ADD", "User is vegetarian"),
            ],
        ),
        (
            [{"id": "1", "event": "DELETE", "reason": "r" * (MAX_REASON_CHARS + 50)}],
            [Decision("DELETE", "", REAL[1], "r" * MAX_REASON_CHARS)],
        ),
        (
            [{"id": "1", "event": "DELETE", "reason": "  \t "}],
            [Decision("DELETE", "", REAL[1])],
        ),
    ],
)
def test_parse_decisions(entries: list[Any], expected: list[Decision]) -> None:
    assert parse_decisions({"memory": entries}, OFFERED) == expected


def test_parse_decisions_with_nothing_offered_keeps_only_adds() -> None:
    entries = [
        {"id": "0", "text": "User likes tea", "event": "UPDATE"},
        {"id": "0", "event": "DELETE"},
        {"id": "1", "text": "User likes tea", "event": "ADD"},
    ]
    assert parse_decisions({"memory": entries}, {}) == [Decision("ADD", "User likes tea")]


@pytest.mark.parametrize("payload", [{}, {"memory": None}, {"memory": {"0": "x"}}, {"facts": []}])
def test_parse_decisions_requires_a_list(payload: dict[str, Any]) -> None:
    with pytest.raises(ExtractionError, match="memory"):
        parse_decisions(payload, OFFERED)


# ---- complete_validated --------------------------------------------------------------------


class ScriptedLLM:
    """A ChatLLM that returns canned answers in order and records every call."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[list[dict[str, Any]], CallOptions]] = []

    async def complete(self, messages: list[dict[str, Any]], *, call: CallOptions) -> str:
        self.calls.append((messages, call))
        if not self.answers:
            raise AssertionError("LLM called more often than scripted")
        return self.answers.pop(0)


MESSAGES = [{"role": "user", "content": "hi"}]


async def ask(llm: Any, attempts: int = 2) -> Any:
    return await complete_validated(
        llm,
        MESSAGES,
        parse_facts,
        schema_name="facts",
        schema=FACTS_SCHEMA,
        empty=[],
        attempts=attempts,
    )


async def test_complete_validated_first_answer_ok() -> None:
    llm = ScriptedLLM('{"facts": ["User likes tea"]}', '{"facts": ["never used"]}')
    assert await ask(llm) == (["User likes tea"], 1)
    assert len(llm.calls) == 1
    assert llm.calls[0] == (MESSAGES, CallOptions("facts", FACTS_SCHEMA, 0))


@pytest.mark.parametrize("bad", ["not json", "", '{"facts": [', "[1]", '{"facts": "x"}'])
async def test_complete_validated_retries_with_feedback(bad: str) -> None:
    llm = ScriptedLLM(bad, '```json\n{"facts": ["User likes tea"]}\n```')
    assert await ask(llm) == (["User likes tea"], 2)
    retry_messages, retry_call = llm.calls[1]
    assert retry_call.attempt == 1  # another temperature and seed
    assert retry_messages[: len(MESSAGES)] == MESSAGES
    assert retry_messages[-2] == {"role": "assistant", "content": bad or "(empty answer)"}
    assert "could not be used" in retry_messages[-1]["content"]


async def test_complete_validated_gives_up_after_its_attempts() -> None:
    llm = ScriptedLLM("nope", "still nope", '{"facts": ["third"]}')
    with pytest.raises(ExtractionError, match="still nope"):
        await ask(llm)
    assert len(llm.calls) == 2


async def test_complete_validated_does_not_retry_llm_errors() -> None:
    class Failing:
        calls = 0

        async def complete(self, messages: list[dict[str, Any]], *, call: CallOptions) -> str:
            Failing.calls += 1
            raise ExtractionError("provider down")

    with pytest.raises(ExtractionError, match="provider down"):
        await ask(Failing(), attempts=3)
    assert Failing.calls == 1


async def test_litellm_chat_wraps_provider_errors() -> None:
    """An unreachable provider surfaces as ExtractionError, not a raw litellm exception."""
    chat = LiteLLMChat(
        LLMConfig(
            model="openai/fake-model",
            api_base="http://127.0.0.1:9/v1",
            api_key="sk-fake",
            timeout=5,
            max_retries=0,
        )
    )
    with pytest.raises(ExtractionError, match="fake-model"):
        await chat.complete(MESSAGES, call=CallOptions("facts", FACTS_SCHEMA))


def test_llm_config_kwargs() -> None:
    config = LLMConfig(model="openai/m", api_base="http://x/v1", api_key="k", top_p=0.5)
    kwargs = config.litellm_kwargs()
    assert kwargs == {
        "model": "openai/m",
        "api_base": "http://x/v1",
        "api_key": "k",
        "temperature": 0.0,
        "timeout": 60.0,
        "max_tokens": 1024,
        "top_p": 0.5,
    }
    assert LLMConfig.model_validate({"model": "m", "json_mode": False}).structured_output == "none"
