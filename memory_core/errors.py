"""The memory library's exception hierarchy.

Every error raised on purpose by ``memory_core`` derives from ``MemoryCoreError``;
callers (the proxy's one HTTP edge, the queue workers) map them by type.
"""

from __future__ import annotations


class MemoryCoreError(Exception):
    """Base class of every error ``memory_core`` raises on purpose."""


class ConfigError(MemoryCoreError):
    """The configuration is invalid or inconsistent."""


class InvalidIdentity(MemoryCoreError):
    """A user/agent/run id is missing or malformed."""


class InvalidFilter(MemoryCoreError):
    """A search/list filter uses an unknown field or operator, or a bad value."""


class InvalidInput(MemoryCoreError):
    """Messages, metadata or text given to the library are malformed; ``param`` names the
    offending member when known (``messages[2].content[0].text``)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class NotFound(MemoryCoreError):
    """No memory with that id (or not visible in this scope)."""


class StoreError(MemoryCoreError):
    """The vector store failed (I/O, corrupted table, unreachable object store)."""


class DimensionMismatch(StoreError):
    """The embedder's vector size differs from the one stored with the table."""


class QueueStoreError(MemoryCoreError):
    """The learning queue's backend (SQLite file, Redis) failed or is unreachable."""


class EmbedderError(MemoryCoreError):
    """The embedder failed to produce vectors."""


class ExtractionError(MemoryCoreError):
    """The LLM call for fact extraction or update failed or returned unusable JSON."""


class TruncatedAnswer(ExtractionError):
    """The LLM's answer was cut at ``max_tokens``: worth re-asking, unlike a provider error.
    ``answer`` is the text it gave until the cut."""

    def __init__(self, message: str, *, answer: str = "") -> None:
        super().__init__(message)
        self.answer = answer


class UnusableAnswer(ExtractionError):
    """Every item of an answer was rejected (placeholders, examples...): worth re-asking; when
    the last attempt is no better, nothing is learned (the rejections say why)."""


class RerankError(MemoryCoreError):
    """The rerank provider failed; search falls back to the fused order."""


class ImmutableMemory(MemoryCoreError):
    """A change to an immutable memory's text that did not also lift its immutability."""
