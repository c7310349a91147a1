"""The two LLM steps of ``add(infer=True)``: parse tolerant JSON, validate, map ids, and
re-ask with feedback when an answer is unusable.

Parsing and id mapping are pure functions; the only I/O is the ``ChatLLM`` given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from .contracts import (
    EVENTS,
    MAX_FACT_CHARS,
    Rejections,
    facts_items,
    normalize_text,
    reason_text,
    update_items,
    validate_facts,
)
from .errors import ExtractionError, TruncatedAnswer, UnusableAnswer
from .llm_client import CallOptions, ChatLLM, LiteLLMChat
from .prompts import EXAMPLE_KEYS
from .types import Event, Message

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
T = TypeVar("T")


def parse_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in ``text``: bare, inside a code fence, or after leading prose.

    Raises ``ExtractionError`` when there is none (including truncated JSON).
    """
    if not isinstance(text, str) or not text.strip():
        raise ExtractionError("the LLM returned an empty answer")
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        start = candidate.find("{")
        while start != -1:
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError:
                start = candidate.find("{", start + 1)
                continue
            if isinstance(value, dict):
                return value
            start = candidate.find("{", start + 1)
    raise ExtractionError(f"no JSON object in the LLM answer: {text[:200]!r}")


def parse_facts(
    payload: Mapping[str, Any],
    rejected: Rejections | None = None,
    examples: frozenset[str] = EXAMPLE_KEYS,
) -> list[str]:
    """``{"facts": [...]}`` → unique, usable, trimmed fact strings in order; the items that
    are not (placeholders, prompt examples, ambiguous objects...) are counted in ``rejected``.
    Raises ``UnusableAnswer`` when there were items and none was usable."""
    items = facts_items(payload)
    counted = rejected if rejected is not None else Rejections()
    before = counted.total()
    facts = validate_facts(items, examples, counted)
    if items and not facts and counted.total() > before:
        reasons = ", ".join(sorted(counted.counts))
        raise UnusableAnswer(f"no usable fact among the {len(items)} given ({reasons})")
    return facts


@dataclass(frozen=True, slots=True)
class Decision:
    """One validated action: ``memory_id`` is a real id for UPDATE/DELETE/NONE, None for ADD;
    ``reason`` the model's explanation, when it gave one (the learning log shows it)."""

    event: Event
    text: str
    memory_id: str | None = None
    reason: str | None = None


def parse_decisions(
    payload: Mapping[str, Any],
    offered: Mapping[str, str],
    rejected: Rejections | None = None,
) -> list[Decision]:
    """``{"memory": [...]}`` → decisions with small ids mapped back to real ids.

    ``offered`` maps the small ids shown to the LLM to real memory ids. Entries that name an id
    that was not offered (for UPDATE/DELETE/NONE), or an unknown event, are dropped and counted
    in ``rejected``; an ADD never reuses an offered id.
    """
    rejected = rejected or Rejections()
    decisions: list[Decision] = []
    touched: set[str] = set()
    added: set[str] = set()
    for entry in update_items(payload):
        if not isinstance(entry, Mapping):
            rejected.add("malformed_entry", entry)
            continue
        event = entry.get("event")
        event = event.strip().upper() if isinstance(event, str) else ""
        text = entry.get("text")
        text = normalize_text(text) if isinstance(text, str) else ""
        small_id = str(entry.get("id", "")).strip()
        if event not in EVENTS:
            rejected.add("unknown_event", entry)
            continue
        if event in ("ADD", "UPDATE") and not text:
            rejected.add("missing_text", entry)
            continue
        if event == "ADD":
            if text.lower() not in added:
                added.add(text.lower())
                decisions.append(Decision("ADD", text, reason=reason_text(entry.get("reason"))))
            continue
        if small_id not in offered:
            rejected.add("unknown_id", entry)
            continue
        real_id = offered[small_id]
        if real_id in touched:  # one decision per memory; the first wins
            rejected.add("repeated_id", entry)
            continue
        touched.add(real_id)
        decisions.append(
            Decision(cast(Event, event), text, real_id, reason_text(entry.get("reason")))
        )
    return decisions


def offer_ids(memory_ids: Sequence[str]) -> dict[str, str]:
    """Small integer ids ("0", "1", ...) for the LLM, mapped to real ids."""
    return {str(index): memory_id for index, memory_id in enumerate(memory_ids)}


FEEDBACK_CHARS = 300


def retry_feedback(answer: str, error: ExtractionError, schema_name: str) -> list[Message]:
    """What a retry adds to the conversation: the bad answer (cut) and what was wrong with it."""
    return [
        {"role": "assistant", "content": answer[:FEEDBACK_CHARS] or "(empty answer)"},
        {
            "role": "user",
            "content": (
                f"That answer could not be used: {str(error)[:FEEDBACK_CHARS]}. "
                f"Answer again with one JSON object only, following the {schema_name} "
                "shape from the instructions, with real facts from the conversation "
                "(no placeholders, no examples)."
            ),
        },
    ]


async def complete_validated(
    llm: ChatLLM,
    messages: list[Message],
    parse: Callable[[dict[str, Any]], T],
    *,
    schema_name: str,
    schema: Mapping[str, Any],
    empty: T,
    attempts: int = 2,
    strict: bool = True,
) -> tuple[T, int]:
    """Ask for JSON that ``parse`` accepts; ``(parsed, calls made)``.

    An unusable answer (no JSON, truncated, wrong shape) is re-asked up to ``attempts`` calls in
    all, each retry telling the model what was wrong and sent as another attempt (another
    temperature and seed). Provider failures are not retried here: the queue retries them
    with backoff. Raises the last ``ExtractionError``, except when every answer only held
    rejected items: then ``empty`` (the rejections were counted).
    """
    conversation = list(messages)
    last_error: ExtractionError | None = None
    for attempt in range(max(1, attempts)):
        call = CallOptions(schema_name, schema, attempt, strict=strict)
        try:
            answer = await llm.complete(conversation, call=call)
        except TruncatedAnswer as exc:
            answer, last_error = exc.answer, exc
        else:
            try:
                return parse(parse_json_object(answer)), attempt + 1
            except ExtractionError as exc:
                last_error = exc
        conversation = list(messages) + retry_feedback(answer, last_error, schema_name)
    assert last_error is not None
    if isinstance(last_error, UnusableAnswer):
        return empty, max(1, attempts)  # every item rejected, every time: nothing learned
    raise last_error


__all__ = [
    "EVENTS",
    "MAX_FACT_CHARS",
    "ChatLLM",
    "Decision",
    "LiteLLMChat",
    "complete_validated",
    "offer_ids",
    "parse_decisions",
    "parse_facts",
    "parse_json_object",
    "retry_feedback",
]
