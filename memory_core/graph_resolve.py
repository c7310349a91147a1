"""Entity resolution's pure parts: when two names may be one entity, and the LLM question
for the pairs embeddings cannot settle ("Maria" and "Maria Silva"; "Bob" and "Robert")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import UnusableAnswer
from .graph_prompts import name_key
from .types import Message

SAME_PROMPT = """You are memproxy's entity resolver. For each numbered pair of names taken \
from one user's memories, say whether both names mean the same entity (the same person, place \
or thing). Answer with one JSON object only: {"same": [<true or false per pair, in order>]}"""

SAME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"same": {"type": "array", "items": {"type": "boolean"}}},
    "required": ["same"],
    "additionalProperties": False,
}


def name_overlap(a: str, b: str) -> bool:
    """One name's words are all in the other's ("Maria" / "Maria Silva"), or both start
    alike and one is an initial ("J. Smith" / "John Smith")."""
    words_a, words_b = name_key(a).split(), name_key(b).split()
    if not words_a or not words_b:
        return False
    shorter, longer = sorted((words_a, words_b), key=len)
    if set(shorter) <= set(longer):
        return True
    if len(shorter) == len(longer) and shorter[-1] == longer[-1]:
        return all(x[0] == y[0] for x, y in zip(shorter, longer, strict=True))
    return False


def build_same_messages(pairs: Sequence[tuple[str, str]]) -> list[Message]:
    listed = "\n".join(f"{i}. {a!r} / {b!r}" for i, (a, b) in enumerate(pairs, start=1))
    return [
        {"role": "system", "content": SAME_PROMPT},
        {"role": "user", "content": f"<pairs>\n{listed}\n</pairs>"},
    ]


def parse_same(payload: Mapping[str, Any], count: int) -> list[bool]:
    """``{"same": [bool, ...]}`` with one verdict per pair; anything else is unusable (and
    re-asked), and a pair without a clear ``true`` stays two entities."""
    verdicts = payload.get("same")
    if not isinstance(verdicts, list) or len(verdicts) != count:
        raise UnusableAnswer(f'the resolver answer needs a "same" list of {count} booleans')
    return [verdict is True for verdict in verdicts]


__all__ = ["SAME_PROMPT", "SAME_SCHEMA", "build_same_messages", "name_overlap", "parse_same"]
