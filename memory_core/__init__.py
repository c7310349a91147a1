"""memory_core: long-term memory for LLM applications on LanceDB (Mem0-compatible API)."""

from .config import EmbedderConfig, LLMConfig, MemoryConfig
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
    StoreError,
)
from .memory import AsyncMemory, Memory
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
    "Memory",
    "MemoryConfig",
    "MemoryCoreError",
    "NotFound",
    "Scope",
    "StoreError",
]
