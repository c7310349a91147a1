"""Ranking for ``search``, pure: each candidate's features, the fusion score over them
(learned linear weights, or weighted reciprocal-rank fusion), a recency boost, and the
optional second-stage reranker (one-method protocol; the LiteLLM one does I/O)."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

from .config import PIPELINE_KNOBS, RerankerConfig, SearchConfig
from .errors import RerankError
from .fusion_weights import FEATURES, FEEDBACK_WEIGHTS, LEARNED_WEIGHTS
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


# ---- features of a candidate, and the linear scorer over them -----------------------------------

_CAPITALISED = re.compile(r"(?<=\s)[A-Z][a-z]+")
_DIGIT = re.compile(r"\d")


@dataclass(slots=True)
class Candidate:
    """A memory found by at least one ranking, with what the scorer weighs."""

    row: dict[str, Any]
    similarity: float
    features: dict[str, float]
    score: float = 0.0


@lru_cache(maxsize=4096)
def text_features(text: str) -> Mapping[str, float]:
    """Shape features of a memory's text (its speaker label, if any, left out). Cached: the
    same memories come back query after query (callers must not mutate the result); 4096
    entries keep the worst case (10,000-character memories) near 40 MB."""
    label = speaker_of(text)
    body = text[len(label) + 1 :].strip() if label else text.strip()
    rest = body.split(" ", 1)[1] if " " in body else ""  # the first word is capitalised anyway
    return {
        "question": float(body.endswith("?")),
        "asks": float("?" in body),
        "length": math.log1p(len(body.split())),
        "names": float(len(_CAPITALISED.findall(" " + rest))),
        "digits": float(_DIGIT.search(body) is not None),
    }


def collect_candidates(
    query: str,
    rankings: Mapping[str, Ranking],
    *,
    text_scores: Mapping[str, float] | None = None,
    k: float,
) -> list[Candidate]:
    """One candidate per memory found by any ranking (``vector``, ``text``, ``date``), in
    first-seen order, with every feature in ``FEATURES``. ``text_scores`` maps memory ids to
    their BM25 score."""
    candidates: dict[str, Candidate] = {}
    for name, ranking in rankings.items():
        key = f"{name}_rank"
        for rank, (row, similarity) in enumerate(ranking):
            found = candidates.get(row["id"])
            if found is None:
                found = candidates[row["id"]] = Candidate(
                    row, similarity, dict.fromkeys(FEATURES, 0.0)
                )
            found.features[key] = 1.0 / (k + rank + 1)
    scores = text_scores or {}
    best = max(scores.values(), default=0.0)
    texts = [c.row.get("memory") or "" for c in candidates.values()]
    labels = [speaker_of(text) for text in texts]
    named = mentioned_speakers(query, labels)
    for (memory_id, candidate), text, label in zip(candidates.items(), texts, labels, strict=True):
        features = candidate.features
        features["similarity"] = candidate.similarity
        if best > 0:
            features["text_score"] = scores.get(memory_id, 0.0) / best
        features["speaker"] = float(label in named)
        features.update(text_features(text))
    return list(candidates.values())


def score_candidates(
    candidates: Sequence[Candidate], weights: Mapping[str, float]
) -> list[Candidate]:
    """Each candidate's ``score`` is the weighted sum of its features; best first (stable)."""
    terms = list(weights.items())
    for candidate in candidates:
        features = candidate.features
        score = 0.0
        for name, weight in terms:  # a plain loop: ~2x faster than sum() over a generator
            score += weight * features.get(name, 0.0)
        candidate.score = score
    return sorted(candidates, key=lambda c: c.score, reverse=True)


def fusion_weights(config: SearchConfig, mode: str | None = None) -> dict[str, float]:
    """The scorer's weights: the fitted ones (``fusion: learned``, hybrid mode) or
    reciprocal-rank fusion's (``rrf``, and the one-ranking modes, which keep their ranking's
    order apart from the speaker and date signals).

    With ``learned``, ``speaker_weight: 0`` still turns the speaker signal off; the ranking
    weights themselves come from the fit (or ``weights``).
    """
    mode = mode or config.mode
    if config.fusion == "learned" and mode == "hybrid":
        weights = dict(config.weights or LEARNED_WEIGHTS)
        if config.speaker_weight <= 0:
            weights.pop("speaker", None)
        return weights
    single = mode != "hybrid"  # one ranking: its weight only scales it against the rest
    return {
        "vector_rank": 1.0 if single else config.vector_weight,
        "text_rank": 1.0 if single else config.text_weight,
        "date_rank": config.date_weight,
        "speaker": config.speaker_weight / (config.rrf_k + 1.0),
    }


@lru_cache(maxsize=4096)
def speaker_of(text: str) -> str | None:
    """The speaker label a memory starts with ("Caroline: I went..." -> "Caroline"), if any."""
    match = SPEAKER_LABEL.match(text)
    return match.group(1) if match else None


def mentioned_speakers(query: str, labels: Sequence[str | None]) -> set[str]:
    """Speaker labels (``speaker_of`` of the candidates' texts) that ``query`` names; empty
    when none is named or when every label is (then naming a speaker tells no memory apart)."""
    distinct = {label for label in labels if label}
    named = {
        label
        for label in distinct
        if re.search(rf"\b{re.escape(label)}\b", query, re.IGNORECASE) is not None
    }
    return set() if named == distinct else named


def is_time_sensitive(query: str) -> bool:
    """True when the query asks about the present or the latest state of something."""
    return TIME_SENSITIVE.search(query) is not None


def apply_recency(
    fused: Sequence[Fused], *, weight: float, half_life_days: float, unit: float
) -> list[Fused]:
    """Add up to ``weight * unit`` to newer memories (``unit``: what a top vector rank is worth
    to the fused score, so weight 1 is one top rank).

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
    scale = weight * unit
    boosted = []
    for (row, similarity, score), moment in zip(fused, moments, strict=True):
        bonus = 0.0
        if moment is not None:
            age_days = (newest - moment).total_seconds() / 86400.0
            bonus = scale * 0.5 ** (age_days / half_life_days)
        boosted.append((row, similarity, score + bonus))
    boosted.sort(key=lambda e: e[2], reverse=True)
    return boosted


def apply_feedback(fused: Sequence[Fused], *, weight: float, unit: float) -> list[Fused]:
    """Move memories with feedback by ``FEEDBACK_WEIGHTS`` top ranks' worth (``unit`` each,
    times ``weight``), best first again; without any feedback the order is unchanged."""
    if weight <= 0 or not any(row.get("feedback") in FEEDBACK_WEIGHTS for row, _s, _f in fused):
        return list(fused)
    moved = [
        (
            row,
            similarity,
            score + weight * unit * FEEDBACK_WEIGHTS.get(row.get("feedback") or "", 0),
        )
        for row, similarity, score in fused
    ]
    moved.sort(key=lambda e: e[2], reverse=True)
    return moved


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
        from .litellm_loader import get_litellm

        litellm = get_litellm()
        kwargs = self._config.model_dump(
            exclude_none=True,
            exclude={"candidates", "temperature", "max_tokens", *PIPELINE_KNOBS},
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
