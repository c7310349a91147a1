"""Ranking for ``search``: weighted reciprocal-rank fusion, a recency boost, and the optional
second-stage reranker (one-method protocol). Pure functions except the LiteLLM reranker."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from .config import RerankerConfig
from .errors import MemoryCoreError
from .types import MemoryItem

log = logging.getLogger("memory_core.retrieval")

Ranking = Sequence[tuple[dict[str, Any], float]]
Fused = tuple[dict[str, Any], float, float]

# Words that make a question about the present state of things, where newer memories should
# win over older ones ("where does she live now?", "what is his latest project?").
TIME_SENSITIVE = re.compile(
    r"\b(?:now|nowadays|currently|current|latest|newest|recent|recently|lately|these days|"
    r"at the moment|still|anymore|any more|today|this (?:week|month|year)|most recent|"
    r"right now|up to date|last time)\b",
    re.IGNORECASE,
)


# A memory stored verbatim from a multi-party transcript starts with who said it ("Caroline: ...").
SPEAKER_LABEL = re.compile(r"^([^\W\d_][\w.'-]*(?: [^\W\d_][\w.'-]*){0,2}):\s")


def fuse_rankings(
    rankings: Sequence[Ranking], *, k: float = 60.0, weights: Sequence[float] | None = None
) -> list[Fused]:
    """Weighted reciprocal-rank fusion: ``(row, similarity, fused)`` ordered by fused score.

    A row at 0-based ``rank`` in ranking ``i`` adds ``weights[i] / (k + rank + 1)``; rows are
    identified by ``id``; ties keep first-seen order (the first ranking's order).
    """
    fused: dict[str, list[Any]] = {}
    for index, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else float(weights[index])
        for rank, (row, similarity) in enumerate(ranking):
            entry = fused.setdefault(row["id"], [row, similarity, 0.0])
            entry[2] += weight / (k + rank + 1)
    ordered = sorted(fused.values(), key=lambda e: e[2], reverse=True)
    return [(row, similarity, score) for row, similarity, score in ordered]


def speaker_of(text: str) -> str | None:
    """The speaker label a memory starts with ("Caroline: I went..." -> "Caroline"), if any."""
    match = SPEAKER_LABEL.match(text)
    return match.group(1) if match else None


def apply_speaker_boost(
    fused: Sequence[Fused], query: str, *, weight: float, k: float
) -> list[Fused]:
    """Favour what the speaker a question names said: memories labelled with a speaker the
    query mentions gain ``weight / (k + 1)`` (a top rank's worth at weight 1).

    Only for memories stored with a speaker label (verbatim transcripts); no effect when no
    label, or every label among the candidates, is mentioned.
    """
    if weight <= 0 or not fused:
        return list(fused)
    labels = [speaker_of(row.get("memory") or "") for row, _s, _f in fused]
    distinct = {label for label in labels if label}
    mentioned = {
        label
        for label in distinct
        if re.search(rf"\b{re.escape(label)}\b", query, re.IGNORECASE) is not None
    }
    if not mentioned or mentioned == distinct:
        return list(fused)
    bonus = weight / (k + 1.0)
    boosted = [
        (row, similarity, score + (bonus if label in mentioned else 0.0))
        for (row, similarity, score), label in zip(fused, labels, strict=True)
    ]
    boosted.sort(key=lambda e: e[2], reverse=True)
    return boosted


def is_time_sensitive(query: str) -> bool:
    """True when the query asks about the present or the latest state of something."""
    return TIME_SENSITIVE.search(query) is not None


def apply_recency(
    fused: Sequence[Fused], *, weight: float, half_life_days: float, k: float
) -> list[Fused]:
    """Add up to ``weight / (k + 1)`` (a top rank's worth at weight 1) to newer memories.

    Age is measured from the newest candidate (not from now), halving every
    ``half_life_days``; so a store of old memories still has a "recent" end.
    """
    if weight <= 0 or not fused:
        return list(fused)
    moments = [_parse(row.get("created_at")) for row, _s, _f in fused]
    known = [m for m in moments if m is not None]
    if not known:
        return list(fused)
    newest = max(known)
    scale = weight / (k + 1.0)
    boosted = []
    for (row, similarity, score), moment in zip(fused, moments, strict=True):
        bonus = 0.0
        if moment is not None:
            age_days = (newest - moment).total_seconds() / 86400.0
            bonus = scale * 0.5 ** (age_days / half_life_days)
        boosted.append((row, similarity, score + bonus))
    boosted.sort(key=lambda e: e[2], reverse=True)
    return boosted


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


@runtime_checkable
class Reranker(Protocol):
    """Second-stage ranking: the same items, most relevant to ``query`` first (may drop some)."""

    async def rerank(self, query: str, items: list[MemoryItem]) -> list[MemoryItem]: ...


class LiteLLMReranker:
    """Any provider's rerank model through ``litellm.arerank`` (Cohere, Jina, Voyage, ...)."""

    def __init__(self, config: RerankerConfig) -> None:
        self._config = config

    async def rerank(self, query: str, items: list[MemoryItem]) -> list[MemoryItem]:
        if len(items) < 2:
            return list(items)
        from ._litellm import get_litellm

        litellm = get_litellm()
        kwargs = self._config.model_dump(
            exclude_none=True, exclude={"candidates", "json_mode", "temperature"}
        )
        try:
            response = await litellm.arerank(
                query=query,
                documents=[item["memory"] for item in items],
                top_n=len(items),
                **kwargs,
            )
        except Exception as exc:  # provider errors come in many types; one typed error out
            raise RerankError(f"rerank call to {self._config.model} failed: {exc}") from exc
        results = getattr(response, "results", None)
        if results is None and isinstance(response, dict):
            results = response.get("results")
        order: list[int] = []
        for result in results or []:
            index = result["index"] if isinstance(result, dict) else result.index
            if isinstance(index, int) and 0 <= index < len(items) and index not in order:
                order.append(index)
        # Items the provider left out keep their fused order, after the reranked ones.
        order += [i for i in range(len(items)) if i not in order]
        return [items[i] for i in order]


class RerankError(MemoryCoreError):
    """The rerank provider failed; search falls back to the fused order."""
