"""Validated configuration of the memory library (also the proxy's ``memory:`` section)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError
from .fusion_weights import FEATURES

ENV_PREFIX = "os.environ/"


def resolve_env_refs(value: Any, *, strict: bool = True) -> Any:
    """Replace every ``"os.environ/NAME"`` string (LiteLLM's convention) with that variable.

    An unset variable is an error when ``strict``; otherwise it becomes None (e.g. a provider
    key the client may send itself).
    """
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX) :]
        if name not in os.environ:
            if strict:
                raise ConfigError(f"environment variable {name} is referenced but not set")
            return None
        return os.environ[name]
    if isinstance(value, dict):
        return {key: resolve_env_refs(item, strict=strict) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_env_refs(item, strict=strict) for item in value]
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` (env references are resolved later, per model)."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    return raw


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbedderConfig(_Strict):
    """Which embedder turns text into vectors."""

    provider: Literal["local", "litellm"] = "local"
    model: str | None = None
    api_base: str | None = None
    api_key: str | None = None
    dimensions: int | None = Field(default=None, gt=0)
    num_threads: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=64, gt=0)
    extra: dict[str, Any] = Field(default_factory=dict)


class LLMConfig(BaseModel):
    """LiteLLM parameters for the extraction/update calls; extra keys go to litellm as is."""

    model_config = ConfigDict(extra="allow")

    model: str
    api_base: str | None = None
    api_key: str | None = None
    temperature: float = 0.0
    timeout: float = Field(default=60.0, gt=0)
    json_mode: bool = True

    def litellm_kwargs(self) -> dict[str, Any]:
        kwargs = self.model_dump(exclude_none=True, exclude={"json_mode"})
        return kwargs


class RerankerConfig(LLMConfig):
    """A second-stage rerank model through ``litellm.arerank`` (Cohere, Jina, Voyage...)."""

    candidates: int = Field(default=50, ge=1, le=1000)


class SearchConfig(_Strict):
    """How ``search`` ranks a scope's memories (defaults measured on LoCoMo, see BENCHMARKS.md).

    Up to three rankings, each ``candidates`` deep: the exact vector search, the BM25
    full-text search (``hybrid``/``text``), and, when the query names a date ("on 8 May,
    2023", "in June 2023") and ``date_weight`` > 0, the vector search (full-text in ``text``
    mode) restricted to memories created within ``date_slack_days`` of it. ``fusion`` scores
    their union (rank features are ``1 / (rrf_k + rank + 1)`` in both modes; the shipped
    learned weights were fitted at ``rrf_k`` 10):

    - ``learned`` (default, hybrid mode): a weighted sum of rank, similarity, BM25 and
      text-shape features (``memory_core/data/fusion_weights.json``), fitted on the LoCoMo
      tune split; ``weights`` overrides. The one-ranking modes keep their ranking's order.
    - ``rrf``: weighted reciprocal-rank fusion, ``sum(weight / (rrf_k + rank + 1))`` with
      ``vector_weight``, ``text_weight`` and ``date_weight``.

    ``speaker_weight`` favours memories stored with a speaker label ("Caroline: ...",
    verbatim transcripts) whose speaker the query names (0 turns it off). ``recency_weight``
    > 0 adds up to that many top ranks' worth to the newest memories (halving every
    ``recency_half_life_days`` before the newest candidate), only for time-sensitive queries
    ("latest", "now", "currently"...) unless ``recency_always``. A ``reranker`` reorders the
    fused top ``reranker.candidates``.
    """

    mode: Literal["hybrid", "vector", "text"] = "hybrid"
    rrf_k: float = Field(default=10.0, gt=0)
    vector_weight: float = Field(default=1.0, ge=0)
    text_weight: float = Field(default=1.0, ge=0)
    candidates: int = Field(default=40, ge=1, le=1000)
    recency_weight: float = Field(default=0.0, ge=0)
    recency_half_life_days: float = Field(default=30.0, gt=0)
    recency_always: bool = False
    speaker_weight: float = Field(default=1.0, ge=0)
    fusion: Literal["learned", "rrf"] = "learned"
    weights: dict[str, float] | None = None
    date_weight: float = Field(default=2.0, ge=0)
    date_slack_days: int = Field(default=1, ge=0, le=366)
    reranker: RerankerConfig | None = None

    @field_validator("weights")
    @classmethod
    def _known_features(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        unknown = sorted(set(value or {}) - set(FEATURES))
        if unknown:
            raise ValueError(f"unknown fusion features {unknown}; known: {', '.join(FEATURES)}")
        return value


class QueueConfig(_Strict):
    """The durable learning queue (``memory_core.queue``; the proxy's ``memory.queue``)."""

    concurrency: int = Field(default=4, ge=1, le=256)
    max_attempts: int = Field(default=10, ge=1)
    backoff_base_s: float = Field(default=2.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)
    lease_s: float = Field(default=60.0, gt=0)
    poll_s: float = Field(default=0.5, gt=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)


class MemoryLimits(_Strict):
    """Bounds on what one caller can make the library do (docs/security.md)."""

    # Mem0-style filters: nesting of AND/OR/NOT, and conditions in all.
    max_filter_depth: int = Field(default=8, ge=1, le=32)
    max_filter_conditions: int = Field(default=100, ge=1, le=1000)
    # What one exchange can put into the learning queue and the extraction prompt: the user
    # turns share the first budget, each other turn (the reply) gets the second.
    max_exchange_user_chars: int = Field(default=8000, ge=100)
    max_exchange_reply_chars: int = Field(default=4000, ge=100)


class ScopeCacheConfig(_Strict):
    """The per-process cache of hot scopes (``scope_cache.py``): their vectors and full-text
    postings in memory, LanceDB the source of truth. ``max_bytes`` bounds it (least recently
    used first out); a scope of more than ``max_scope_rows`` memories is searched in LanceDB."""

    enabled: bool = True
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    max_scope_rows: int = Field(default=20_000, ge=1, le=1_000_000)
    query_vectors: int = Field(default=2048, ge=0, le=1_000_000)  # repeated query texts


class MemoryConfig(_Strict):
    """Everything ``AsyncMemory`` needs. Only ``storage_uri`` matters for ``infer=False``."""

    storage_uri: str = "./data"
    storage_options: dict[str, str] = Field(default_factory=dict)
    read_consistency_interval_s: float | None = Field(default=None, ge=0)
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    llm: LLMConfig | None = None
    fact_extraction_prompt: str | None = None
    update_memory_prompt: str | None = None
    include: str | None = None
    exclude: str | None = None
    categories: list[str] = Field(default_factory=list)
    similar_memories: int = Field(default=6, ge=1, le=50)
    hybrid_search: bool = True  # False: vector search only, whatever ``search.mode`` says
    search: SearchConfig = Field(default_factory=SearchConfig)
    # add(infer=True): an ADD whose text has cosine >= this with a memory of the same scope
    # (and the same numbers) becomes NONE, or an UPDATE of that memory when it only adds words;
    # None turns it off. 0.97 separates tests/data/junk_corpus.json's labelled pairs for the
    # default embedder (paraphrases >= 0.971, different facts <= 0.966); retune for another.
    duplicate_threshold: float | None = Field(default=0.97, gt=0, le=1)
    optimize_every: int = Field(default=100, ge=1)
    cleanup_retention_s: float = Field(default=3600.0, ge=0)
    limits: MemoryLimits = Field(default_factory=MemoryLimits)
    cache: ScopeCacheConfig = Field(default_factory=ScopeCacheConfig)

    @classmethod
    def parse(cls, source: MemoryConfig | Mapping[str, Any] | str | Path | None) -> MemoryConfig:
        """Build a config from a model, a mapping, or a YAML path (a top-level ``memory:`` is
        used)."""
        if isinstance(source, MemoryConfig):
            return source
        if source is None:
            data: dict[str, Any] = {}
        elif isinstance(source, Mapping):
            data = dict(source)
        else:
            data = load_yaml(source)
            if "memory" in data and isinstance(data["memory"], dict):
                data = data["memory"]
        try:
            return cls.model_validate(resolve_env_refs(data))
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc)) from exc


def format_validation_error(exc: ValidationError) -> str:
    """One readable line per problem: ``field.path: message``."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "(root)"
        lines.append(f"{where}: {err['msg']}")
    return "invalid config: " + "; ".join(lines)
