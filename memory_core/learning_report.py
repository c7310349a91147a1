"""What one ``add(infer=True)`` did, so that "nothing was learned" is always explainable.

``LearningReport.to_dict()`` is the stored result of a learning job (``memproxy queue recent``,
the job store's ``result`` column); its shape is documented in docs/learning.md.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .contracts import EVENTS, Rejections

RESULT_VERSION = 1


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

    @property
    def status(self) -> str:
        """``applied`` when the store changed, else ``nothing_learned``."""
        changed = sum(self.applied[event] for event in ("ADD", "UPDATE", "DELETE"))
        return "applied" if changed else "nothing_learned"

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


__all__ = ["RESULT_VERSION", "LearningReport", "summary"]
