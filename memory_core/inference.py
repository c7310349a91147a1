"""``add(infer=True)`` up to the decisions: extract facts, find what the scope already holds,
ask for ADD / UPDATE / DELETE / NONE, and keep only decisions grounded in the new facts.

Everything dropped on the way is counted in the ``LearningReport``; the writer applies what is
left (``MemoryWriter._apply``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .contracts import FACTS_SCHEMA, UPDATE_SCHEMA, Rejections, comparable
from .duplicates import distinguishing_tokens
from .extraction import Decision, complete_validated, offer_ids, parse_decisions, parse_facts
from .learning_report import LearningReport
from .llm_client import MIN_EXCHANGE_CHARS, ChatLLM, prompt_budget
from .messages import cap_exchange, cap_text
from .prompts import (
    FACT_EXTRACTION_PROMPT,
    build_fact_extraction_messages,
    build_update_messages,
    learnable_messages,
)
from .storage import Row, Selection
from .timestamps import now_stamp
from .types import Message

if TYPE_CHECKING:
    from .writer import MemoryWriter, WriteContext

Vector = np.ndarray[Any, Any]
_WORDS = re.compile(r"\w+")


@dataclass(slots=True)
class Inferred:
    """Decisions to apply, the memories they name, and the vectors already computed."""

    decisions: list[Decision]
    existing: dict[str, Row]
    vectors: dict[str, Vector]


def _words(text: str) -> set[str]:
    return set(_WORDS.findall(text.casefold()))


def ungrounded(
    decision: Decision,
    facts: Sequence[str],
    similarity: float,
    threshold: float,
    old: str | None,
) -> bool:
    """True when an ADD/UPDATE text is none of the new facts: not one of them word for word,
    not a paraphrase (cosine >= ``threshold`` to one, with no number, code or name they do not
    have), and, for an UPDATE, not a merge of the facts with the memory it updates."""
    known = {comparable(fact) for fact in facts}
    if comparable(decision.text) in known:
        return False
    sources = [*facts, *([old] if old else [])]
    allowed_tokens = frozenset().union(*(distinguishing_tokens(t) for t in sources))
    if not distinguishing_tokens(decision.text) <= allowed_tokens:
        return True
    if similarity >= threshold:
        return False
    if decision.event == "UPDATE":
        return not _words(decision.text) <= set().union(*(_words(t) for t in sources))
    return True


async def keep_grounded(
    decisions: Sequence[Decision],
    facts: Sequence[str],
    fact_vectors: Vector,
    existing: Mapping[str, Row],
    embed: Callable[[Sequence[str]], Awaitable[Vector]],
    threshold: float,
    rejected: Rejections,
) -> tuple[list[Decision], dict[str, Vector]]:
    """The decisions whose ADD/UPDATE text is grounded in ``facts`` (the rest counted as
    ``invented_text``), and the vectors computed for their texts."""
    known = {comparable(fact) for fact in facts}
    check = [
        d.text
        for d in decisions
        if d.event in ("ADD", "UPDATE") and comparable(d.text) not in known
    ]
    check = list(dict.fromkeys(check))
    vectors = dict(zip(check, await embed(check), strict=True)) if check else {}
    kept: list[Decision] = []
    for decision in decisions:
        if decision.event in ("ADD", "UPDATE") and decision.text in vectors:
            similarity = float(np.max(fact_vectors @ vectors[decision.text]))
            old = existing[decision.memory_id]["memory"] if decision.memory_id else None
            if ungrounded(decision, facts, similarity, threshold, old):
                rejected.add("invented_text", decision.text)
                continue
        kept.append(decision)
    return kept, vectors


async def infer(
    writer: MemoryWriter,
    write: WriteContext,
    chat: list[Message],
    llm: ChatLLM,
    report: LearningReport,
) -> Inferred | None:
    """Facts from ``chat`` and the decisions about them; None when there is nothing new."""
    cfg = writer.config
    attempts = cfg.llm.attempts if cfg.llm is not None else 2
    # Recalled blocks and task prompts go first, then the budget: one request never puts
    # more than it into the extraction prompt.
    user_chars = cfg.limits.max_exchange_user_chars
    reply_chars = cfg.limits.max_exchange_reply_chars
    context = write.context
    budget = prompt_budget(llm)
    if budget is not None:  # the model's context: the instructions, then half for the user
        instructions = len(cfg.fact_extraction_prompt or FACT_EXTRACTION_PROMPT)
        room = max(MIN_EXCHANGE_CHARS, budget - instructions)
        user_chars, reply_chars = min(user_chars, room // 2), min(reply_chars, room // 4)
        context = cap_text(context, room // 4) if context else context
    chat = cap_exchange(
        learnable_messages(chat), max_user_chars=user_chars, max_reply_chars=reply_chars
    )
    if not chat:  # only recalled memories, task prompts or nothing from the user
        report.skipped = "no_user_text"
        return None
    extraction = build_fact_extraction_messages(
        chat,
        today=write.when.date().isoformat(),
        include=cfg.include,
        exclude=cfg.exclude,
        categories=cfg.categories,
        custom_prompt=cfg.fact_extraction_prompt,
        context=context,
    )
    no_facts: list[str] = []
    facts, calls = await complete_validated(
        llm,
        extraction,
        lambda payload: parse_facts(payload, report.rejected),
        schema_name="facts",
        schema=FACTS_SCHEMA,
        empty=no_facts,
        attempts=attempts,
    )
    report.llm_calls += calls
    report.extracted(facts)
    new_facts, known = await writer.split_known(write.scope, facts, job_id=write.job_id)
    report.facts_known = len(facts) - len(new_facts)
    report.applied["NONE"] += report.facts_known
    report.known(known)
    if not new_facts:
        return None
    vectors = await writer.embed(new_facts)
    scope_only = Selection(write.scope, unexpired_at=now_stamp())  # expired: not offered
    neighbours = await asyncio.gather(
        *(writer.store.vector_search(v, scope_only, limit=cfg.similar_memories) for v in vectors)
    )
    existing: dict[str, Row] = {}
    for hits in neighbours:
        for row, _similarity in hits:
            existing.setdefault(row["id"], row)
    known_vectors = dict(zip(new_facts, vectors, strict=True))
    if not existing:  # nothing similar stored yet: every fact is new, no second LLM call
        return Inferred([Decision("ADD", fact) for fact in new_facts], existing, known_vectors)
    offered = offer_ids(list(existing))
    update = build_update_messages(
        new_facts,
        [(small, existing[real]["memory"]) for small, real in offered.items()],
        custom_prompt=cfg.update_memory_prompt,
    )
    no_decisions: list[Decision] = []
    decisions, calls = await complete_validated(
        llm,
        update,
        lambda payload: parse_decisions(payload, offered, report.rejected),
        schema_name="memory",
        schema=UPDATE_SCHEMA,
        empty=no_decisions,
        attempts=attempts,
    )
    report.llm_calls += calls
    decisions, text_vectors = await keep_grounded(
        decisions,
        new_facts,
        vectors,
        existing,
        writer.embed,
        cfg.fact_match_threshold,
        report.rejected,
    )
    report.facts_unanswered = max(0, len(new_facts) - len(decisions))
    return Inferred(decisions, existing, {**known_vectors, **text_vectors})


__all__ = ["Inferred", "infer", "keep_grounded", "ungrounded"]
