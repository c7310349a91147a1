"""What one ``add(infer=True)`` did, so that "nothing was learned" is always explainable.

``LearningReport.to_dict()`` is the stored result of a learning job, its entry in the learning
log (``GET /v1/learning``, ``memproxy queue log``, the job store's ``result``); its shape is
documented in docs/learning.md. The facts and decisions it keeps are bounded: texts cut at
``LOGGED_TEXT_CHARS``, at most ``MAX_LOGGED_FACTS`` facts and ``MAX_LOGGED_DECISIONS``
decisions (the counts stay exact).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .contracts import EVENTS, Rejections

if TYPE_CHECKING:
    from .extraction import Decision

# 2: ``facts`` and ``decisions`` (version 1 results, counts only, stay readable).
RESULT_VERSION = 2
LOGGED_TEXT_CHARS = 300
MAX_LOGGED_FACTS = 30
MAX_LOGGED_DECISIONS = 50
# Who made a logged decision: the update answer; the extraction alone (nothing similar was
# stored, so every new fact is an ADD); the exact-text guard (a fact stored word for word);
# the near-duplicate guard (``duplicates.fold_target``).
ORIGINS = ("update_answer", "extraction", "known", "near_duplicate")


def _cut(text: str | None) -> str | None:
    return None if text is None else text[:LOGGED_TEXT_CHARS]


@dataclass(slots=True)
class LearningReport:
    """Counts of one learned exchange. ``skipped`` says why no LLM was asked at all."""

    facts_extracted: int = 0  # usable facts in the extraction answer
    facts_known: int = 0  # of those, already stored word for word
    facts_unanswered: int = 0  # new facts the update answer gave no decision for
    near_duplicates: int = 0  # ADDs folded into a stored memory by the duplicate guard
    llm_calls: int = 0
    applied: Counter[str] = field(default_factory=Counter)  # ADD / UPDATE / DELETE / NONE
    rejected: Rejections = field(default_factory=Rejections)
    skipped: str | None = None
    graph: dict[str, Any] | None = None  # graph memory's outcome (``GraphReport``), if on
    facts: list[str] = field(default_factory=list)  # the usable facts, cut (see the module)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    decisions_omitted: int = 0  # decisions past ``MAX_LOGGED_DECISIONS``

    def extracted(self, facts: list[str]) -> None:
        """The usable facts of the extraction answer."""
        self.facts_extracted = len(facts)
        self.facts = [text[:LOGGED_TEXT_CHARS] for text in facts[:MAX_LOGGED_FACTS]]

    def decided(
        self,
        event: str,
        memory_id: str | None,
        *,
        text: str | None,
        old_memory: str | None = None,
        reason: str | None = None,
        origin: str = "update_answer",
    ) -> None:
        """Log one decision: the memory it touched (None for a fact not stored), the text it
        stored (or the fact it was about), the text before, and why."""
        if len(self.decisions) >= MAX_LOGGED_DECISIONS:
            self.decisions_omitted += 1
            return
        self.decisions.append(
            {
                "event": event,
                "memory_id": memory_id,
                "text": _cut(text),
                "old_memory": _cut(old_memory),
                "reason": _cut(reason),
                "origin": origin,
            }
        )

    @property
    def status(self) -> str:
        """``applied`` when the store changed, else ``nothing_learned``."""
        changed = sum(self.applied[event] for event in ("ADD", "UPDATE", "DELETE"))
        return "applied" if changed else "nothing_learned"

    def known(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """NONE for facts the scope already holds word for word (``rows``: those memories)."""
        for row in rows:
            self.decided("NONE", row["id"], text=row["memory"], origin="known")

    def log_applied(
        self,
        results: Sequence[Mapping[str, Any]],
        decisions: Sequence[Decision],
        existing: Mapping[str, Mapping[str, Any]],
        *,
        origin: str,
        folded: Collection[str] = (),
    ) -> None:
        """Log what ``MemoryWriter._apply`` did: each change in ``results`` (an ``AddResult``)
        with the reason of its decision, then the NONE decisions (``existing``: the memories
        offered; ``folded``: texts the near-duplicate guard turned into UPDATEs)."""
        reasons = {(d.event, d.memory_id or d.text): d.reason for d in decisions}
        for result in results:
            event, memory_id, text = result["event"], result["id"], result["memory"]
            if event == "ADD":
                reason = reasons.get(("ADD", text))
                self.decided("ADD", memory_id, text=text, reason=reason, origin=origin)
            elif event == "UPDATE":
                self.decided(
                    "UPDATE",
                    memory_id,
                    text=text,
                    old_memory=result.get("previous_memory"),
                    reason=reasons.get(("UPDATE", memory_id)),
                    origin="near_duplicate" if text in folded else origin,
                )
            else:
                reason = reasons.get((event, memory_id))
                self.decided(event, memory_id, text=None, old_memory=text, reason=reason)
        for decision in decisions:
            if decision.event == "NONE":
                row = existing.get(decision.memory_id or "")
                stored = row["memory"] if row is not None else None
                self.decided(
                    "NONE",
                    decision.memory_id,
                    text=decision.text or stored,
                    old_memory=stored,
                    reason=decision.reason,
                    origin=origin,
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": RESULT_VERSION,
            "status": self.status,
            "facts_extracted": self.facts_extracted,
            "facts_known": self.facts_known,
            "facts_unanswered": self.facts_unanswered,
            "near_duplicates": self.near_duplicates,
            "applied": {event: self.applied[event] for event in EVENTS},
            "rejected": dict(sorted(self.rejected.counts.items())),
            "rejected_examples": list(self.rejected.examples),
            "llm_calls": self.llm_calls,
            "skipped": self.skipped,
            "graph": self.graph,
            "facts": list(self.facts),
            "decisions": [dict(decision) for decision in self.decisions],
            "decisions_omitted": self.decisions_omitted,
        }


def summary(result: dict[str, Any]) -> str:
    """One line for the CLI: ``applied ADD=1 UPDATE=0 ... rejected placeholder=1``."""
    applied = " ".join(f"{k}={v}" for k, v in (result.get("applied") or {}).items())
    line = f"{result.get('status')} facts={result.get('facts_extracted', 0)} {applied}"
    rejected = result.get("rejected") or {}
    if rejected:
        line += " rejected " + " ".join(f"{k}={v}" for k, v in rejected.items())
    if result.get("skipped"):
        line += f" skipped={result['skipped']}"
    return line


__all__ = [
    "LOGGED_TEXT_CHARS",
    "MAX_LOGGED_DECISIONS",
    "MAX_LOGGED_FACTS",
    "ORIGINS",
    "RESULT_VERSION",
    "LearningReport",
    "summary",
]
