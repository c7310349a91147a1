"""Learning that survives real models: the seven failures seen with small local models, each
replayed by the fake upstream answering as those models did (over HTTP, through LiteLLM), and
the pipeline's answer to it: bounded calls, varied retries with feedback, validated facts,
grounded update texts, structured outputs by capability, the system-role fallback, and prompts
whose worked examples never become memories."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from memory_core import AsyncMemory, LLMConfig, MemoryConfig
from memory_core.contracts import FACTS_SCHEMA, UPDATE_SCHEMA
from memory_core.errors import ExtractionError
from memory_core.learning_report import LearningReport
from memory_core.llm_client import (
    CallOptions,
    LiteLLMChat,
    ShiftedAttempts,
    resolve_capabilities,
    without_system_role,
)
from memory_core.prompts import EXAMPLE_FACTS
from tests.fake_upstream import FakeUpstream

SEED = "I have a dog named Biscuit."  # stored first (the fake's own answer) where a case needs it
BISCUIT = "User has a dog named Biscuit"
RUNAWAY = '{"facts": [' + ", ".join(['"User has a dog named Biscuit"'] * 600)  # never closes


@dataclass(frozen=True)
class Case:
    """One exchange against a fake that answers like a small model did."""

    name: str
    script: list[str]  # raw answers for the next extraction/update calls
    stored: list[str]  # what the user's store holds afterwards
    rejected: dict[str, int] = field(default_factory=dict)
    seed_first: bool = False
    llm: dict[str, Any] = field(default_factory=dict)
    says: str = "I live in Paris and my dog is called Biscuit."
    calls: int | None = None  # extraction + update calls of the exchange


def ok(*facts: str) -> str:
    return json.dumps({"facts": list(facts)})


CASES = [
    # 1. no max_tokens: a grammar-bound model ran to the context limit; now the answer is cut
    # at max_tokens (finish_reason "length") and re-asked, being told why.
    Case(
        "runaway-answer-is-cut-and-re-asked",
        [RUNAWAY, ok("User lives in Paris")],
        ["User lives in Paris"],
        calls=2,
    ),
    # the misleading error of the real run: a truncated answer re-asked until the attempts end
    Case("truncated-json-every-time", ['{"facts": ["User lives in Paris", "User'] * 3, [], calls=3),
    # 3. objects as facts: turned into text when unambiguous, else counted, never silent
    Case(
        "objects-as-facts",
        [
            json.dumps(
                {
                    "facts": [
                        {"name": "Biscuit", "species": "dog"},
                        {"fact": "User lives in Paris", "category": "home"},
                    ]
                }
            )
        ],
        ["User lives in Paris"],
        {"object_fact": 1},
    ),
    Case(
        "numbers-and-lists-as-facts",
        [json.dumps({"facts": [42, None, True, ["a"], "User lives in Paris"]})],
        ["User lives in Paris"],
        {"not_text": 4},
    ),
    # 4. the prompt's shape example taken literally: "..." is re-asked, never stored
    Case(
        "dots-then-real-facts",
        ['{"facts": ["...", "..."]}', ok("User lives in Paris")],
        ["User lives in Paris"],
        {"no_letters": 2},
        calls=2,
    ),
    Case(
        "placeholders-every-time",
        ['{"facts": ["fact 1", "<fact>", "string"]}'] * 3,
        [],
        {"placeholder": 9},
        calls=3,
    ),
    Case(
        "prompt-example-leaks",
        [ok(EXAMPLE_FACTS[0], "User lives in Paris", EXAMPLE_FACTS[2])],
        ["User lives in Paris"],
        {"prompt_example": 2},
    ),
    # what SmolLM2-135M answered in the smoke run (BENCHMARKS.md "Learning")
    Case(
        "transcript-lines-bare-user-and-questions",
        [ok("user: I'm 34", "user", "How about a stir-fry?", "User is 34 years old")],
        ["User is 34 years old"],
        {"placeholder": 1, "question": 1, "transcript_line": 1},
    ),
    # 5. the update step inventing a text that is none of the new facts
    Case(
        "invented-update-text",
        [
            ok("User lives in Paris"),
            json.dumps(
                {
                    "memory": [
                        {
                            "id": "new",
                            "event": "ADD",
                            "text": "You have a new fact. You should not forget it.",
                        }
                    ]
                }
            ),
        ],
        [BISCUIT],
        {"invented_text": 1},
        seed_first=True,
    ),
    Case(
        "invented-number-in-update",
        [
            ok("User's locker code is A7"),
            json.dumps(
                {"memory": [{"id": "0", "event": "UPDATE", "text": "User's locker code is B9"}]}
            ),
        ],
        [BISCUIT],
        {"invented_text": 1},
        seed_first=True,
    ),
    Case(
        "paraphrased-update-text-is-kept",
        [
            ok("User lives in Paris"),
            json.dumps(
                {
                    "memory": [
                        {"id": "new", "event": "ADD", "text": "User is living in Paris"},
                        {"id": "7", "event": "DELETE", "text": ""},
                    ]
                }
            ),
        ],
        [BISCUIT, "User is living in Paris"],
        {"unknown_id": 1},
        seed_first=True,
    ),
    Case(
        "merged-update-text-is-kept",
        [
            ok("User's dog Biscuit is three years old"),
            json.dumps(
                {
                    "memory": [
                        {
                            "id": "0",
                            "event": "UPDATE",
                            "text": "User has a dog named Biscuit who is three years old",
                        }
                    ]
                }
            ),
        ],
        ["User has a dog named Biscuit who is three years old"],
        seed_first=True,
    ),
    # 6. the schema check runs whatever the mode: a string where the list belongs is re-asked
    Case(
        "wrong-shape-without-json-mode",
        ['{"facts": "User lives in Paris"}', ok("User lives in Paris")],
        ["User lives in Paris"],
        llm={"structured_output": "none"},
        calls=2,
    ),
]


def expected_reasons(case: Case) -> dict[str, int]:
    return dict(sorted(case.rejected.items()))


async def learn(fake: FakeUpstream, config: MemoryConfig, embedder: Any, case: Case) -> Any:
    memory = AsyncMemory(config, embedder=embedder)
    await memory.open()
    try:
        if case.seed_first:
            await memory.add(SEED, user_id="u")
        fake.reset()
        fake.behave_like_a_small_model(case.script)
        report = LearningReport()
        error: ExtractionError | None = None
        try:
            await memory.add(case.says, user_id="u", report=report)
        except ExtractionError as exc:
            error = exc
        stored = sorted(m["memory"] for m in (await memory.get_all(user_id="u"))["results"])
        return report, stored, error
    finally:
        await memory.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_small_model_answers(
    case: Case, fake_llm: FakeUpstream, storage_uri: str, embedder: Any
) -> None:
    llm = {"model": "openai/fake-model", "api_base": fake_llm.url, "api_key": "sk-fake"}
    config = MemoryConfig(storage_uri=storage_uri, llm={**llm, "max_tokens": 256, **case.llm})
    report, stored, error = await learn(fake_llm, config, embedder, case)

    assert stored == sorted(case.stored)
    assert report.to_dict()["rejected"] == expected_reasons(case)
    memory_calls = fake_llm.requests_of("extract") + fake_llm.requests_of("update")
    if case.calls is not None:
        assert len(memory_calls) == case.calls
    assert fake_llm.state.controls()["memory_script"] == 0  # every scripted answer was asked for
    for request in memory_calls:  # 1. every call is bounded
        assert request.body["max_tokens"] == 256
    # 2. no two calls of one step are the same request
    samples = [(r.kind, r.body["temperature"], r.body["seed"]) for r in memory_calls]
    assert len(set(samples)) == len(samples)
    if case.name == "truncated-json-every-time":
        assert error is not None and "the extraction answer" not in str(error)
    elif error is not None:
        raise error
    for example in EXAMPLE_FACTS:
        assert example not in stored


async def test_retry_tells_the_model_what_was_wrong(
    fake_llm: FakeUpstream, storage_uri: str, embedder: Any, fake_llm_config: dict[str, Any]
) -> None:
    config = MemoryConfig(storage_uri=storage_uri, llm={**fake_llm_config, "max_tokens": 64})
    case = Case("feedback", [RUNAWAY, '{"facts": ["..."]}', ok("User lives in Paris")], [])
    report, stored, _ = await learn(fake_llm, config, embedder, case)
    assert stored == ["User lives in Paris"]
    first, second, third = fake_llm.requests_of("extract")
    assert first.body["temperature"] == 0.0 and first.body["seed"] == 0
    assert (second.body["temperature"], second.body["seed"]) == (0.3, 1)
    assert (third.body["temperature"], third.body["seed"]) == (0.6, 2)
    assert "cut at max_tokens=64" in second.messages[-1]["content"]
    assert "no usable fact" in third.messages[-1]["content"]
    assert third.messages[-2]["content"] == '{"facts": ["..."]}'
    assert report.llm_calls == 3 and report.to_dict()["rejected"] == {"no_letters": 1}


# ---- 6. structured outputs by capability -----------------------------------------------------


@pytest.mark.parametrize(
    ("llm", "expected"),
    [
        ({}, {"type": "json_object"}),  # auto, a model LiteLLM has no card for
        ({"structured_output": "json_object"}, {"type": "json_object"}),
        (
            {"structured_output": "json_schema"},
            {
                "type": "json_schema",
                "json_schema": {"name": "facts", "schema": FACTS_SCHEMA, "strict": False},
            },
        ),
        (
            {"structured_output": "json_object_schema"},
            {"type": "json_object", "schema": FACTS_SCHEMA},
        ),
        ({"structured_output": "none"}, None),
        ({"json_mode": False}, None),  # the old switch
    ],
    ids=["auto", "json_object", "json_schema", "json_object_schema", "none", "legacy-off"],
)
async def test_response_format_sent(
    llm: dict[str, Any],
    expected: dict[str, Any] | None,
    fake_llm: FakeUpstream,
    storage_uri: str,
    embedder: Any,
    fake_llm_config: dict[str, Any],
) -> None:
    config = MemoryConfig(storage_uri=storage_uri, llm={**fake_llm_config, **llm})
    memory = AsyncMemory(config, embedder=embedder)
    try:
        await memory.add("I live in Paris.", user_id="u")
        assert [m["memory"] for m in (await memory.get_all(user_id="u"))["results"]] == [
            "User lives in Paris"
        ]
    finally:
        await memory.close()
    (request,) = fake_llm.requests_of("extract")
    assert request.body.get("response_format") == expected


@pytest.mark.parametrize(
    ("model", "mode", "strict", "system_role"),
    [
        ("gpt-4o-mini", "json_schema", True, True),  # LiteLLM's card: response schemas
        ("openai/gpt-4o-mini", "json_schema", True, True),
        ("gemini/gemma-3-27b-it", "json_schema", True, False),  # the card: no system role
        ("openai/fake-model", "json_object", False, True),  # no card: JSON mode, system role
        ("hosted_vllm/qwen", "json_object", False, True),
    ],
)
def test_capabilities_from_litellm_cards(
    model: str, mode: str, strict: bool, system_role: bool
) -> None:
    chat = LiteLLMChat(LLMConfig(model=model))
    assert chat.capabilities == resolve_capabilities(LLMConfig(model=model), chat_info(chat))
    assert (chat.capabilities.structured_output, chat.capabilities.strict_schema) == (mode, strict)
    assert chat.capabilities.system_role is system_role
    params = chat.request_params(
        [{"role": "user", "content": "x"}], CallOptions("memory", UPDATE_SCHEMA)
    )
    if mode == "json_schema":
        assert params["response_format"]["json_schema"] == {
            "name": "memory",
            "schema": UPDATE_SCHEMA,
            "strict": True,
        }
    assert params["max_tokens"] == 1024 and params["timeout"] == 60.0


def chat_info(chat: LiteLLMChat) -> dict[str, Any]:
    from memory_core.llm_client import _model_info

    return dict(_model_info(chat._config.model))


def test_strict_schemas_follow_openais_rules() -> None:
    """Strict mode wants every property required and no additional properties, at every level."""

    def check(schema: dict[str, Any]) -> None:
        if schema.get("type") == "object":
            assert schema["additionalProperties"] is False
            assert set(schema["required"]) == set(schema["properties"])
            for child in schema["properties"].values():
                check(child)
        if schema.get("type") == "array":
            check(schema["items"])

    check(FACTS_SCHEMA)
    check(UPDATE_SCHEMA)


# ---- 2. queue retries continue the attempts ---------------------------------------------------


async def test_shifted_attempts_never_repeat_a_call() -> None:
    seen: list[int] = []

    class Recording:
        async def complete(self, messages: list[dict[str, Any]], *, call: CallOptions) -> str:
            seen.append(call.attempt)
            return "{}"

    for queue_try in range(3):
        llm = ShiftedAttempts(Recording(), queue_try * 10)
        for attempt in range(3):
            await llm.complete([], call=CallOptions("facts", FACTS_SCHEMA, attempt))
    assert seen == [0, 1, 2, 10, 11, 12, 20, 21, 22]
    chat = LiteLLMChat(LLMConfig(model="openai/m", temperature=0.2, seed=7))
    samples = {
        (p["temperature"], p["seed"])
        for p in (chat.request_params([], CallOptions("facts", FACTS_SCHEMA, a)) for a in seen)
    }
    assert len(samples) == len(seen)


# ---- 7. chat templates without a system role ---------------------------------------------------


@pytest.mark.parametrize(
    ("system_role", "learned"),
    [(True, False), (False, True)],
    ids=["instructions-dropped-by-the-template", "instructions-in-the-first-user-message"],
)
async def test_template_without_system_role(
    system_role: bool,
    learned: bool,
    fake_llm: FakeUpstream,
    storage_uri: str,
    embedder: Any,
    fake_llm_config: dict[str, Any],
) -> None:
    fake_llm.behave_like_a_small_model(no_system_role=True)
    llm = {**fake_llm_config, "system_role": system_role}
    memory = AsyncMemory(MemoryConfig(storage_uri=storage_uri, llm=llm), embedder=embedder)
    report = LearningReport()
    try:
        if learned:
            await memory.add("I live in Paris.", user_id="u", report=report)
        else:
            with pytest.raises(ExtractionError, match="no JSON object"):
                await memory.add("I live in Paris.", user_id="u", report=report)
        stored = [m["memory"] for m in (await memory.get_all(user_id="u"))["results"]]
    finally:
        await memory.close()
    assert stored == (["User lives in Paris"] if learned else [])
    first = fake_llm.requests_of("extract")[0].messages
    assert [m["role"] for m in first] == (["user"] if not system_role else ["system", "user"])
    assert first[0]["content"].startswith("You are memproxy's fact extractor.")


def test_without_system_role_folds_every_instruction() -> None:
    messages = [
        {"role": "system", "content": "A"},
        {"role": "developer", "content": "B"},
        {"role": "user", "content": "data"},
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": "again"},
    ]
    assert without_system_role(messages) == [
        {"role": "user", "content": "A\n\nB\n\ndata"},
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": "again"},
    ]
    assert without_system_role([{"role": "system", "content": "A"}]) == [
        {"role": "user", "content": "A"}
    ]
    assert without_system_role([{"role": "user", "content": "u"}]) == [
        {"role": "user", "content": "u"}
    ]


# ---- the grounding threshold, measured ----------------------------------------------------------

PARAPHRASES = [
    ("User lives in Paris", "User is living in Paris"),
    ("User works at Acme", "User is employed at Acme"),
    ("User's sister lives in Lisbon", "User has a sister who lives in Lisbon"),
    ("User has a dog named Biscuit", "User's dog is called Biscuit"),
    ("Der Benutzer wohnt in Berlin", "Der Benutzer lebt in Berlin"),
]
INVENTED = [
    ("User has a dog named Biscuit", "You have a new fact. You should not forget it."),
    ("User lives in Paris", "The user has shared some information."),
    ("User is vegetarian", "New memory added"),
    ("User lives in Porto", "Remember this fact about the user"),
    ("User works at Acme", "User likes pizza"),
]


async def test_fact_match_threshold_separates_paraphrases_from_inventions(embedder: Any) -> None:
    threshold = MemoryConfig().fact_match_threshold

    async def similarity(a: str, b: str) -> float:
        vectors = await embedder.embed([a, b], purpose="passage")
        return float(np.dot(vectors[0], vectors[1]))

    for fact, text in PARAPHRASES:
        assert await similarity(fact, text) >= threshold, (fact, text)
    for fact, text in INVENTED:
        assert await similarity(fact, text) < threshold - 0.05, (fact, text)


# ---- near-duplicates judged on content ---------------------------------------------------------

GUARD_CASES = [
    # (stored, the model's ADD, what the guard makes of it) — the pairs: cosine
    # 0.971-0.989 to the stored memory, yet different facts
    ("User's API token is n40e75c10", "User's API token is s40e75c10", "added"),
    ("User's wifi password is hunter7", "User's wifi password is tiger7", "added"),
    ("User's locker code is A7", "User's locker code is B7", "added"),
    ("User's gate code is 4417", "User's gate code is 4471", "added"),
    # labelled paraphrases: folded into the stored memory (NONE), or an UPDATE that adds words
    ("User has a dog named Max", "User has a dog called Max", "none"),
    ("User's favourite colour is blue", "User's favorite color is blue", "none"),
    ("User loves hiking", "User really loves hiking", "refined"),
]


@pytest.mark.parametrize(("stored", "new", "outcome"), GUARD_CASES, ids=[c[1] for c in GUARD_CASES])
async def test_duplicate_guard_keeps_distinct_identifiers(
    stored: str,
    new: str,
    outcome: str,
    fake_llm: FakeUpstream,
    storage_uri: str,
    embedder: Any,
    fake_llm_config: dict[str, Any],
) -> None:
    memory = AsyncMemory(
        MemoryConfig(storage_uri=storage_uri, llm=fake_llm_config), embedder=embedder
    )
    try:
        await memory.add([{"role": "user", "content": stored}], user_id="u", infer=False)
        add = {"memory": [{"id": "new", "text": new, "event": "ADD"}]}
        fake_llm.behave_like_a_small_model([ok(new), json.dumps(add)])
        report = LearningReport()
        await memory.add("noted", user_id="u", report=report)
        texts = sorted(m["memory"] for m in (await memory.get_all(user_id="u"))["results"])
    finally:
        await memory.close()
    expected = {"added": sorted([stored, new]), "none": [stored], "refined": [new]}[outcome]
    assert texts == expected
    assert report.near_duplicates == (0 if outcome == "added" else 1)


# ---- the prompt sized to the model's context ---------------------------------------------------


def test_prompt_budget_from_the_card_or_the_config() -> None:
    assert LiteLLMChat(LLMConfig(model="gpt-4o-mini")).prompt_chars == (128_000 - 1024 - 64) * 3
    small = LLMConfig(model="openai/fake-model", context_window=2048, max_tokens=512)
    assert LiteLLMChat(small).prompt_chars == (2048 - 512 - 64) * 3
    assert LiteLLMChat(LLMConfig(model="openai/fake-model")).prompt_chars is None  # no card
    assert ShiftedAttempts(LiteLLMChat(small), 10).prompt_chars == (2048 - 512 - 64) * 3


async def test_exchange_is_cut_to_the_context_window(storage_uri: str, embedder: Any) -> None:
    class SmallModel:
        prompt_chars = 4000
        prompts: list[str] = []

        async def complete(self, messages: list[dict[str, Any]], *, call: CallOptions) -> str:
            self.prompts.append("".join(m["content"] for m in messages))
            return ok("User lives in Paris")

    model = SmallModel()
    memory = AsyncMemory(MemoryConfig(storage_uri=storage_uri), embedder=embedder, llm=model)
    try:
        long_story = "I live in Paris. " + "And then something else happened. " * 500
        await memory.add(long_story, user_id="u", context="earlier words " * 1000)
    finally:
        await memory.close()
    (prompt,) = model.prompts
    assert len(prompt) <= model.prompt_chars + 200  # markers and the date line
    assert "I live in Paris" in prompt  # a turn is cut at its end
