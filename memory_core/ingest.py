"""Adds that carry images or documents: documents become passages (stored verbatim with their
file name, page and offsets, or learned from), images become first-person statements by the
vision model, learned through the normal pipeline with ``metadata.source = "image"``.
Images themselves are never stored."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .config import MemoryConfig
from .documents import Passage, passages_of
from .errors import InvalidInput
from .extraction import ChatLLM, complete_validated
from .learning_report import LearningReport
from .media import MediaRef, data_url, image_type, load
from .messages import message_text
from .types import AddResult, Message
from .vision import STATEMENTS_SCHEMA, build_vision_messages, parse_statements
from .writer import MemoryWriter, WriteContext

log = logging.getLogger("memory_core.ingest")
PARSE_TIMEOUT_S = 60.0  # a hostile PDF may be slow to parse; the request is not held longer


async def document_passages(ref: MediaRef, config: MemoryConfig) -> list[Passage]:
    cfg = config.multimodal
    data, media_type = await load(ref, cfg)
    parse = asyncio.to_thread(
        passages_of,
        data,
        ref.media_type or media_type,
        ref.filename,
        max_pages=cfg.max_pages,
        max_passages=cfg.max_passages,
        passage_chars=cfg.passage_chars,
    )
    try:
        return await asyncio.wait_for(parse, PARSE_TIMEOUT_S)
    except TimeoutError as exc:
        raise InvalidInput(f"{ref.where}: the document took too long to read") from exc


def _user_text(chat: Sequence[Message]) -> str:
    return "\n".join(message_text(m) for m in chat if m.get("role") == "user").strip()


def chunks(passages: Sequence[Passage], budget: int) -> list[list[Passage]]:
    """Consecutive passages grouped within one extraction prompt's user budget."""
    groups: list[list[Passage]] = [[]]
    size = 0
    for passage in passages:
        if groups[-1] and size + len(passage.text) > budget:
            groups.append([])
            size = 0
        groups[-1].append(passage)
        size += len(passage.text)
    return [g for g in groups if g]


class MediaIngest:
    """The media part of one ``add``: after the text of the messages was handled."""

    def __init__(self, writer: MemoryWriter, config: MemoryConfig) -> None:
        self._writer = writer
        self._config = config

    async def add(
        self,
        write: WriteContext,
        chat: Sequence[Message],
        refs: Sequence[MediaRef],
        *,
        llm: ChatLLM | None,
        vision: ChatLLM | None,
        report: LearningReport | None = None,
    ) -> list[AddResult]:
        # Every document parsed and every image loaded before the first write: a bad one is
        # refused with nothing stored.
        documents = [
            await document_passages(ref, self._config) for ref in refs if ref.kind == "document"
        ]
        images = [
            await self._load_image(write, ref, n)
            for n, ref in enumerate(r for r in refs if r.kind == "image")
        ]
        results: list[AddResult] = []
        for number, passages in enumerate(documents):
            results += await self._add_document(write, passages, llm, number, report)
        for number, image in enumerate(images):
            if image is not None and llm is not None and vision is not None:
                results += await self._add_image(write, chat, image, llm, vision, number, report)
        return results

    async def _load_image(self, write: WriteContext, ref: MediaRef, number: int) -> str | None:
        """The image as a data: URL of its real type; None when a learning job skips it."""
        try:
            data, declared = await load(ref, self._config.multimodal)
            return data_url(data, image_type(data, ref.media_type or declared))
        except InvalidInput as exc:
            if write.job_id is None:
                raise  # a direct add says what is wrong with its image
            # A learning job still learns the exchange's words when one image is unusable.
            log.warning("job %s: image %d skipped: %s", write.job_id, number, exc)
            return None

    async def _add_document(
        self,
        write: WriteContext,
        passages: list[Passage],
        llm: ChatLLM | None,
        number: int,
        report: LearningReport | None,
    ) -> list[AddResult]:
        if llm is None:
            texts = [p.text for p in passages]
            return await self._writer.add_each(write, texts, [p.metadata() for p in passages])
        results: list[AddResult] = []
        budget = self._config.limits.max_exchange_user_chars
        for part, group in enumerate(chunks(passages, budget)):
            first = group[0]
            meta: dict[str, Any] = {**write.metadata, "source": "document"}
            if first.filename:
                meta["filename"] = first.filename
            pages = sorted({p.page for p in group if p.page is not None})
            if pages:
                meta["page"] = pages[0]
            job = f"{write.job_id}:doc{number}:{part}" if write.job_id else None
            text = "\n\n".join(p.text for p in group)
            chunk_write = replace(write, metadata=meta, job_id=job)
            results += await self._writer.add(
                chunk_write, [{"role": "user", "content": text}], llm=llm, report=report
            )
        return results

    async def _add_image(
        self,
        write: WriteContext,
        chat: Sequence[Message],
        image: str,
        llm: ChatLLM,
        vision: ChatLLM,
        number: int,
        report: LearningReport | None,
    ) -> list[AddResult]:
        said = _user_text(chat)
        nothing: list[str] = []
        statements, _calls = await complete_validated(
            vision,
            build_vision_messages(image, said),
            parse_statements,
            schema_name="image_statements",
            schema=STATEMENTS_SCHEMA,
            empty=nothing,
        )
        if not statements:
            return []
        meta = {**write.metadata, "source": "image"}
        job = f"{write.job_id}:image{number}" if write.job_id else None
        image_write = replace(write, metadata=meta, job_id=job, context=said or write.context)
        message: Message = {"role": "user", "content": " ".join(statements)}
        return await self._writer.add(image_write, [message], llm=llm, report=report)


__all__ = ["MediaIngest", "chunks", "document_passages"]
