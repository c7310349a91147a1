"""Scoring of ``python -m bench learning``: the labelled corpus, fact matching by embedding
similarity, and the numbers of a run (pure functions over the final store and the job log).

A stored memory *matches* a labelled fact when their cosine is >= ``MATCH_THRESHOLD`` and the
memory carries the fact's distinguishing tokens (numbers, codes, names: "tiger7" never matches
"hunter7"), dates left out (they are scored on their own). No LLM judge.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from memory_core.contracts import fact_problem
from memory_core.duplicates import distinguishing_tokens
from memory_core.prompts import EXAMPLE_KEYS

CORPUS = Path(__file__).resolve().parent / "data" / "learning_corpus.json"
# Default embedder: paraphrases of one fact score >= 0.971, different facts that share their
# names/numbers <= 0.965 (tests/data/junk_corpus.json); 0.95 forgives a model's looser wording.
MATCH_THRESHOLD = 0.95
_ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_CONTENT_WORD = re.compile(r"[^\W\d_]{4,}")
MONTHS = (
    "january february march april may june july august september october november december"
).split()

Fact = tuple[str, ...]  # equivalent wordings of one fact


def as_fact(spec: str | Sequence[str]) -> Fact:
    return (spec,) if isinstance(spec, str) else tuple(spec)


@dataclass(frozen=True, slots=True)
class Exchange:
    user: str
    index: int
    kind: str
    when: datetime
    messages: list[dict[str, str]]
    learn: tuple[Fact, ...] = ()
    replaces: Fact | None = None
    forgets: Fact | None = None
    resolved: str | None = None
    lang: str = "en"

    @property
    def job_id(self) -> str:
        return f"{self.user}-{self.index:03d}"

    def labelled_facts(self) -> list[Fact]:
        """Every fact this exchange names (to learn, to replace, to forget)."""
        named = [self.replaces, self.forgets]
        return [*self.learn, *(fact for fact in named if fact is not None)]


def load_corpus(path: Path = CORPUS) -> list[Exchange]:
    """Every exchange of the corpus, users in order, each dated (see the corpus's ``about``)."""
    data = json.loads(path.read_text("utf-8"))
    exchanges: list[Exchange] = []
    for user in data["users"]:
        day = date.fromisoformat(user["start"]) - timedelta(days=1)
        for index, item in enumerate(user["exchanges"]):
            day = date.fromisoformat(item["date"]) if "date" in item else day + timedelta(days=1)
            messages = [{"role": "user", "content": item["user"]}]
            if item.get("assistant"):
                messages.append({"role": "assistant", "content": item["assistant"]})
            exchanges.append(
                Exchange(
                    user=user["user"],
                    index=index,
                    kind=item["kind"],
                    when=datetime(day.year, day.month, day.day, 12, tzinfo=UTC),
                    messages=messages,
                    learn=tuple(as_fact(f) for f in item.get("learn", [])),
                    replaces=as_fact(item["replaces"]) if "replaces" in item else None,
                    forgets=as_fact(item["forgets"]) if "forgets" in item else None,
                    resolved=item.get("resolved"),
                    lang=item.get("lang", "en"),
                )
            )
    return exchanges


def expected_final(exchanges: Iterable[Exchange]) -> list[Fact]:
    """The facts one user's store must hold after all of their exchanges."""
    facts: list[Fact] = []
    for exchange in exchanges:
        gone = {exchange.replaces, exchange.forgets} - {None}
        facts = [fact for fact in facts if fact not in gone]
        facts += [fact for fact in exchange.learn if fact not in facts]
    return facts


def date_forms(iso: str) -> list[str]:
    """How a resolved date may be written: ISO, "9 March 2024", "March 9, 2024", numeric."""
    day = date.fromisoformat(iso)
    month = MONTHS[day.month - 1]
    return [
        iso,
        f"{day.day} {month} {day.year}",
        f"{month} {day.day}, {day.year}",
        f"{month} {day.day} {day.year}",
        f"{day.day:02d}.{day.month:02d}.{day.year}",
        f"{day.day}.{day.month}.{day.year}",
        f"{day.day:02d}/{day.month:02d}/{day.year}",
        f"{day.day}/{day.month}/{day.year}",
    ]


def mentions_date(text: str, iso: str) -> bool:
    folded = " ".join(text.casefold().replace("th,", ",").split())
    return any(form in folded for form in date_forms(iso))


class Matcher:
    """Which stored memory (index) a labelled fact matches, over precomputed vectors."""

    def __init__(
        self, stored: Sequence[str], vectors: np.ndarray[Any, Any], fact_vectors: dict[str, Any]
    ) -> None:
        self.stored = list(stored)
        self._vectors = vectors
        self._tokens = [distinguishing_tokens(text) for text in stored]
        self._fact_vectors = fact_vectors

    def matches(self, fact: Fact) -> list[int]:
        """Indexes of the stored memories matching any wording of ``fact``, best first."""
        found: dict[int, float] = {}
        for wording in fact:
            if not self.stored:
                break
            similarities = self._vectors @ self._fact_vectors[wording]
            needed = distinguishing_tokens(_ISO_DATE.sub(" ", wording))
            for index, similarity in enumerate(similarities):
                if similarity >= MATCH_THRESHOLD and needed <= self._tokens[index]:
                    found[index] = max(found.get(index, -1.0), float(similarity))
        return sorted(found, key=lambda i: -found[i])


def content_words(text: str) -> set[str]:
    return {word.casefold() for word in _CONTENT_WORD.findall(text)}


@dataclass(slots=True)
class Score:
    """The numbers of one run."""

    exchanges: int = 0
    expected: int = 0
    recalled: int = 0
    stored: int = 0
    correct: int = 0
    junk_exchanges: int = 0
    junk_stored: int = 0
    updates: int = 0
    updates_ok: int = 0
    deletes: int = 0
    deletes_ok: int = 0
    dates: int = 0
    dates_ok: int = 0
    placeholders: int = 0
    invented: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    dead_shape: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    llm_calls: int = 0

    def as_dict(self) -> dict[str, Any]:
        def ratio(num: int, den: int) -> float | None:
            return round(num / den, 3) if den else None

        return {
            "exchanges": self.exchanges,
            "fact_precision": ratio(self.correct, self.stored),
            "fact_recall": ratio(self.recalled, self.expected),
            "expected_facts": self.expected,
            "stored_memories": self.stored,
            "junk_exchanges": self.junk_exchanges,
            "junk_stored": self.junk_stored,
            "update_accuracy": ratio(self.updates_ok, self.updates),
            "delete_accuracy": ratio(self.deletes_ok, self.deletes),
            "date_accuracy": ratio(self.dates_ok, self.dates),
            "placeholder_memories": self.placeholders,
            "invented_memories": self.invented,
            "jobs": dict(sorted(self.statuses.items())),
            "dead_from_shape_errors": self.dead_shape,
            "rejected": dict(sorted(self.rejected.items())),
            "llm_calls": self.llm_calls,
        }


def score_user(
    score: Score,
    exchanges: Sequence[Exchange],
    matcher: Matcher,
    outcomes: dict[str, dict[str, Any]],
) -> None:
    """Add one user's final store and job outcomes to ``score``."""
    final = expected_final(exchanges)
    score.exchanges += len(exchanges)
    score.expected += len(final)
    score.stored += len(matcher.stored)
    taken: set[int] = set()
    for fact in final:
        free = [i for i in matcher.matches(fact) if i not in taken]
        if free:
            taken.add(free[0])
            score.recalled += 1
    correct = {i for fact in final for i in matcher.matches(fact)}
    score.correct += len(correct)
    said = set().union(  # what the user said: the assistant's words are no source of facts
        *(content_words(m["content"]) for e in exchanges for m in e.messages if m["role"] == "user")
    )
    labelled = set().union(
        *(content_words(w) for e in exchanges for f in e.learn for w in f), set()
    )
    for index, text in enumerate(matcher.stored):
        if fact_problem(text, EXAMPLE_KEYS) is not None:
            score.placeholders += 1
        elif index not in correct and not content_words(text) & (said | labelled):
            score.invented += 1
    for exchange in exchanges:
        outcome = outcomes.get(exchange.job_id, {})
        result = outcome.get("result") or {}
        score.statuses[str(outcome.get("status", "missing"))] += 1
        score.llm_calls += int(result.get("llm_calls", 0))
        score.rejected.update(result.get("rejected") or {})
        error = str(outcome.get("error") or "")
        if outcome.get("status") == "dead" and "LLM call to" not in error:
            score.dead_shape += 1
        if exchange.kind == "junk":
            score.junk_exchanges += 1
            applied = result.get("applied") or {}
            if any(applied.get(event) for event in ("ADD", "UPDATE", "DELETE")):
                score.junk_stored += 1
        if exchange.kind == "update" and exchange.replaces is not None:
            score.updates += 1
            still_old = matcher.matches(exchange.replaces)
            has_new = all(matcher.matches(fact) for fact in exchange.learn)
            score.updates_ok += int(not still_old and has_new)
        if exchange.kind == "delete" and exchange.forgets is not None:
            score.deletes += 1
            score.deletes_ok += int(not matcher.matches(exchange.forgets))
        if exchange.kind == "date" and exchange.resolved:
            score.dates += 1
            hits = [matcher.stored[i] for f in exchange.learn for i in matcher.matches(f)]
            score.dates_ok += int(any(mentions_date(t, exchange.resolved) for t in hits))


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    return {
        "mean_s": round(statistics.fmean(seconds), 3) if seconds else 0.0,
        "p50_s": round(percentile(seconds, 50), 3),
        "p95_s": round(percentile(seconds, 95), 3),
    }


__all__ = [
    "CORPUS",
    "MATCH_THRESHOLD",
    "Exchange",
    "Matcher",
    "Score",
    "expected_final",
    "latency_summary",
    "load_corpus",
    "mentions_date",
    "score_user",
]
