"""The two LLM steps of ``add(infer=True)``: parse tolerant JSON, validate, map ids.

Parsing and id mapping are pure functions; ``Extractor`` is the only I/O (one LLM client).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .config import LLMConfig
from .errors import ExtractionError
from .types import Event

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
EVENTS: tuple[Event, ...] = ("ADD", "UPDATE", "DELETE", "NONE")
MAX_FACT_CHARS = 2000


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


def parse_facts(payload: Mapping[str, Any]) -> list[str]:
    """``{"facts": [...]}`` → unique, non-empty, trimmed fact strings in order."""
    facts = payload.get("facts")
    if not isinstance(facts, list):
        raise ExtractionError('the extraction answer has no "facts" list')
    seen: set[str] = set()
    result = []
    for fact in facts:
        if not isinstance(fact, str):
            continue
        text = " ".join(fact.split())[:MAX_FACT_CHARS]
        if text and text.lower() not in seen:
            seen.add(text.lower())
            result.append(text)
    return result


@dataclass(frozen=True, slots=True)
class Decision:
    """One validated action: ``memory_id`` is a real id for UPDATE/DELETE/NONE, None for ADD."""

    event: Event
    text: str
    memory_id: str | None = None


def parse_decisions(payload: Mapping[str, Any], offered: Mapping[str, str]) -> list[Decision]:
    """``{"memory": [...]}`` → decisions with small ids mapped back to real ids.

    ``offered`` maps the small ids shown to the LLM to real memory ids. Entries that name an id
    that was not offered (for UPDATE/DELETE/NONE), or an unknown event, are dropped; an
    ADD never reuses an offered id.
    """
    entries = payload.get("memory")
    if not isinstance(entries, list):
        raise ExtractionError('the update answer has no "memory" list')
    decisions: list[Decision] = []
    touched: set[str] = set()
    added: set[str] = set()
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        event = entry.get("event")
        event = event.strip().upper() if isinstance(event, str) else ""
        text = entry.get("text")
        text = " ".join(text.split())[:MAX_FACT_CHARS] if isinstance(text, str) else ""
        small_id = str(entry.get("id", "")).strip()
        if event == "ADD":
            if text and text.lower() not in added:
                added.add(text.lower())
                decisions.append(Decision("ADD", text))
            continue
        if event not in EVENTS or small_id not in offered:
            continue
        real_id = offered[small_id]
        if real_id in touched:
            continue  # one decision per memory; the first wins
        if event == "UPDATE" and not text:
            continue
        touched.add(real_id)
        decisions.append(Decision(event, text, real_id))
    return decisions


def offer_ids(memory_ids: Sequence[str]) -> dict[str, str]:
    """Small integer ids ("0", "1", ...) for the LLM, mapped to real ids."""
    return {str(index): memory_id for index, memory_id in enumerate(memory_ids)}


class ChatLLM(Protocol):
    """One method: send chat messages, get the assistant's text back."""

    async def complete(self, messages: list[dict[str, Any]], *, json_mode: bool) -> str: ...


class LiteLLMChat:
    """``litellm.acompletion`` with the configured params (any provider)."""

    def __init__(self, config: LLMConfig) -> None:
        self._config = config

    async def complete(self, messages: list[dict[str, Any]], *, json_mode: bool) -> str:
        from .litellm_loader import get_litellm

        litellm = get_litellm()
        kwargs = self._config.litellm_kwargs()
        if "num_retries" not in kwargs and "max_retries" not in kwargs:
            # The durable queue retries with backoff; hidden client retries would multiply it.
            kwargs["num_retries"] = kwargs["max_retries"] = 0
        if json_mode and self._config.json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        try:
            response = await litellm.acompletion(messages=messages, **kwargs)
        except Exception as exc:  # provider errors come in many types; one typed error out
            raise ExtractionError(f"LLM call to {self._config.model} failed: {exc}") from exc
        content = response.choices[0].message.content
        return content if isinstance(content, str) else ""


async def complete_json(llm: ChatLLM, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Ask for JSON; on unparseable output retry once, then raise ``ExtractionError``."""
    last_error: ExtractionError | None = None
    for _attempt in range(2):
        text = await llm.complete(messages, json_mode=True)
        try:
            return parse_json_object(text)
        except ExtractionError as exc:
            last_error = exc
    assert last_error is not None
    raise last_error
