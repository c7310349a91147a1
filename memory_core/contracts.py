"""The two JSON contracts with the extraction LLM: their JSON Schemas (sent as
``response_format`` where the provider enforces them), their pydantic shapes (checked whatever
the mode), and the rules a single fact must pass before it can become a memory.

Every item dropped is counted under a reason (``REASONS``), so "nothing was learned" is
always explainable.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError

from .errors import ExtractionError

MAX_FACT_CHARS = 2000
MAX_REASON_CHARS = 300  # the update answer's optional "reason", as the learning log keeps it
EVENTS = ("ADD", "UPDATE", "DELETE", "NONE")

FACTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"facts": {"type": "array", "items": {"type": "string"}}},
    "required": ["facts"],
    "additionalProperties": False,
}
UPDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "memory": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "text": {"type": "string"},
                    "event": {"type": "string", "enum": list(EVENTS)},
                    # Why (optional: null or absent is fine; strict mode lists every property).
                    "reason": {"type": ["string", "null"]},
                },
                "required": ["id", "text", "event", "reason"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["memory"],
    "additionalProperties": False,
}

# Why an item of an answer was not used (the keys of a job's ``rejected`` counts).
REASONS = {
    "empty": "an empty fact or text",
    "no_letters": "a fact without a single letter (punctuation, digits, '...')",
    "placeholder": "a placeholder such as 'fact 1', '<fact>', 'string' or 'etc.'",
    "prompt_example": "a fact copied from the prompt's worked examples",
    "transcript_line": "a line copied from the conversation ('user: ...', 'assistant: ...')",
    "question": "a question, which states no fact",
    "object_fact": "an object whose text is ambiguous (no single fact/text field)",
    "not_text": "a number, boolean, null or list where a fact string belongs",
    "malformed_entry": "an update entry that is not an object",
    "unknown_event": "an update entry whose event is not ADD, UPDATE, DELETE or NONE",
    "unknown_id": "an UPDATE/DELETE/NONE naming an id that was not offered",
    "repeated_id": "a second decision for a memory already decided in this answer",
    "missing_text": "an ADD or UPDATE without text",
    "invented_text": "an ADD/UPDATE whose text is none of the new facts (nor a paraphrase)",
}

_PLACEHOLDER = re.compile(
    r"(?:fact|string|text|example|sample|memory|placeholder|value|item)(?:\s*(?:#\s*)?\d+)?"
    r"|(?:your|a|the|new|example)\s+(?:fact|text|memory)(?:\s+here)?"
    r"|n/?a|none|null|nil|undefined|todo|tbd|etc\.?|lorem ipsum.*"
    r"|(?:the\s+)?(?:user|assistant|human|ai)"
    r"|<[^<>]*>|\[[^\[\]]*\]|\{[^{}]*\}",
    re.IGNORECASE,
)
_TRANSCRIPT_LINE = re.compile(r"(?:user|assistant|system|human|ai)\s*:", re.IGNORECASE)
# Keys whose string value is, unambiguously, an object's fact ({"fact": "...", "tags": [...]}).
TEXT_KEYS = frozenset({"fact", "text", "content", "memory", "statement", "sentence"})


@dataclass(slots=True)
class Rejections:
    """Counted reasons why items of answers were not used, with a few examples of each."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, str]] = field(default_factory=list)
    max_examples: int = 10

    def add(self, reason: str, item: Any) -> None:
        self.counts[reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append({"reason": reason, "item": repr(item)[:200]})

    def total(self) -> int:
        return sum(self.counts.values())


def normalize_text(text: str) -> str:
    """One line, single spaces, at most ``MAX_FACT_CHARS``."""
    return " ".join(text.split())[:MAX_FACT_CHARS]


def reason_text(value: Any) -> str | None:
    """An update entry's ``reason``: one line of at most ``MAX_REASON_CHARS``, else None."""
    if not isinstance(value, str):
        return None
    return " ".join(value.split())[:MAX_REASON_CHARS] or None


def comparable(text: str) -> str:
    """Casefolded words only: how prompt examples and facts are compared."""
    return " ".join(re.findall(r"\w+", text.casefold()))


def fact_problem(text: str, examples: frozenset[str]) -> str | None:
    """Why ``text`` (normalised) may not be a memory, or None when it may."""
    if not text:
        return "empty"
    if not any(char.isalpha() for char in text):
        return "no_letters"
    if _PLACEHOLDER.fullmatch(text.strip(" .!?;:\"'`")):
        return "placeholder"
    if comparable(text) in examples:
        return "prompt_example"
    if _TRANSCRIPT_LINE.match(text):
        return "transcript_line"
    if text.rstrip().endswith("?"):
        return "question"
    return None


def fact_as_text(item: Any) -> tuple[str | None, str | None]:
    """``(text, None)`` for a string or an object with exactly one text field,
    ``(None, reason)`` for anything else."""
    if isinstance(item, str):
        return item, None
    if isinstance(item, Mapping):
        texts = [
            value
            for key, value in item.items()
            if str(key).casefold() in TEXT_KEYS and isinstance(value, str) and value.strip()
        ]
        return (texts[0], None) if len(texts) == 1 else (None, "object_fact")
    return None, "not_text"


def validate_facts(
    items: Iterable[Any], examples: frozenset[str], rejected: Rejections
) -> list[str]:
    """Unique, usable fact strings in order; everything else counted in ``rejected``."""
    seen: set[str] = set()
    facts: list[str] = []
    for item in items:
        raw, reason = fact_as_text(item)
        text = normalize_text(raw) if raw is not None else ""
        reason = reason or fact_problem(text, examples)
        if reason is not None:
            rejected.add(reason, item)
            continue
        if text.casefold() not in seen:
            seen.add(text.casefold())
            facts.append(text)
    return facts


class _FactsAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    facts: list[JsonValue]


class _UpdateAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    memory: list[JsonValue]


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "(root)"
    return f"{where}: {error['msg']}"


def _answer_list(
    shape: type[BaseModel], payload: Mapping[str, Any], key: str, problem: str
) -> list[Any]:
    try:
        return list(getattr(shape.model_validate(payload), key))
    except ValidationError as exc:
        raise ExtractionError(f"{problem} ({_first_error(exc)})") from exc


def facts_items(payload: Mapping[str, Any]) -> list[Any]:
    """The ``facts`` list of an extraction answer (pydantic-checked), else ``ExtractionError``."""
    problem = 'the extraction answer has no "facts" list of strings'
    return _answer_list(_FactsAnswer, payload, "facts", problem)


def update_items(payload: Mapping[str, Any]) -> list[Any]:
    """The ``memory`` list of an update answer (pydantic-checked), else ``ExtractionError``."""
    problem = 'the update answer has no "memory" list of decisions'
    return _answer_list(_UpdateAnswer, payload, "memory", problem)


__all__ = [
    "EVENTS",
    "FACTS_SCHEMA",
    "MAX_FACT_CHARS",
    "MAX_REASON_CHARS",
    "REASONS",
    "UPDATE_SCHEMA",
    "Rejections",
    "comparable",
    "fact_as_text",
    "fact_problem",
    "facts_items",
    "normalize_text",
    "reason_text",
    "update_items",
    "validate_facts",
]
