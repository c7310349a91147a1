"""memory_core: long-term memory for LLM applications on LanceDB (Mem0-compatible API)."""

from .config import EmbedderConfig, LLMConfig, MemoryConfig, RerankerConfig, SearchConfig
from .errors import (
    ConfigError,
    DimensionMismatch,
    EmbedderError,
    ExtractionError,
    InvalidFilter,
    InvalidIdentity,
    InvalidInput,
    MemoryCoreError,
    NotFound,
    RerankError,
    StoreError,
)
from .memory import AsyncMemory
from .retrieval import LiteLLMReranker, Reranker
from .storage import Selection, Store
from .sync import Memory
from .types import Scope

__all__ = [
    "AsyncMemory",
    "ConfigError",
    "DimensionMismatch",
    "EmbedderConfig",
    "EmbedderError",
    "ExtractionError",
    "InvalidFilter",
    "InvalidIdentity",
    "InvalidInput",
    "LLMConfig",
    "LiteLLMReranker",
    "Memory",
    "MemoryConfig",
    "MemoryCoreError",
    "NotFound",
    "RerankError",
    "Reranker",
    "RerankerConfig",
    "Scope",
    "SearchConfig",
    "Selection",
    "Store",
    "StoreError",
]
