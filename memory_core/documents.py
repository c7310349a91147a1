"""Documents turned into passages: PDF (its text layer, via pypdf), plain text, Markdown and
MDX. Pure functions but for the PDF parse; every document is hostile input, so each failure is
an ``InvalidInput`` (a 400 at the proxy's edge), never a crash."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInput

TEXT_SUFFIXES = (".txt", ".md", ".mdx", ".markdown", ".text")
TEXT_TYPES = ("text/plain", "text/markdown", "text/mdx", "text/x-markdown")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")
_SENTENCE_END = re.compile(r"[.!?。！？]\s")


@dataclass(frozen=True, slots=True)
class Passage:
    """One stored unit of a document: its text and where it came from."""

    text: str
    filename: str | None
    page: int | None  # 1-based page of a PDF; None for text
    index: int  # 0-based position among the document's passages
    start: int  # character offsets in the page's (or the text's) extracted text
    end: int

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"source": "document", "passage": self.index}
        meta["start"], meta["end"] = self.start, self.end
        if self.filename:
            meta["filename"] = self.filename
        if self.page is not None:
            meta["page"] = self.page
        return meta


def document_kind(data: bytes, media_type: str, filename: str | None) -> str:
    """``pdf`` or ``text``; ``InvalidInput`` for any other kind of document."""
    name = (filename or "").lower()
    if media_type == "application/pdf" or name.endswith(".pdf") or data.startswith(b"%PDF-"):
        return "pdf"
    if media_type in TEXT_TYPES or media_type.startswith("text/") or name.endswith(TEXT_SUFFIXES):
        return "text"
    raise InvalidInput(
        f"unsupported document type {media_type or name or 'unknown'!r}: send PDF, TXT, MD or MDX"
    )


def decode_text(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the document is not UTF-8 text (byte {exc.start})") from exc
    if "\x00" in text:
        raise InvalidInput("the document is not text (it holds NUL characters)")
    return text.replace("\r\n", "\n")


def pdf_pages(data: bytes, *, max_pages: int) -> list[str]:
    """The text layer of each page (an image-only page gives "")."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise InvalidInput("the PDF is encrypted")
        count = len(reader.pages)
        if count > max_pages:
            raise InvalidInput(f"the PDF has {count} pages; the limit is {max_pages}")
        return [page.extract_text() or "" for page in reader.pages]
    except InvalidInput:
        raise
    except Exception as exc:  # pypdf raises many types on a corrupt file: all are bad input
        raise InvalidInput(f"the PDF cannot be read: {type(exc).__name__}") from exc


def split_passages(text: str, max_chars: int) -> list[tuple[int, int]]:
    """(start, end) offsets of passages of at most ``max_chars``: whole paragraphs packed
    together, a longer paragraph cut after a sentence (else a space, else anywhere)."""
    spans: list[tuple[int, int]] = []
    position = 0
    for match in [*_PARAGRAPH_BREAK.finditer(text), None]:
        end = match.start() if match else len(text)
        spans.extend(_cut(text, position, end, max_chars))
        position = match.end() if match else len(text)
    packed: list[tuple[int, int]] = []
    for start, end in spans:
        if packed and end - packed[-1][0] <= max_chars:
            packed[-1] = (packed[-1][0], end)
        else:
            packed.append((start, end))
    return packed


def _cut(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    pieces: list[tuple[int, int]] = []
    while end - start > max_chars:
        window = text[start : start + max_chars]
        sentences = [m.end() for m in _SENTENCE_END.finditer(window)]
        cut = sentences[-1] if sentences else window.rfind(" ") + 1 or max_chars
        pieces.append((start, start + len(window[:cut].rstrip())))
        start += cut
        while start < end and text[start].isspace():
            start += 1
    if end > start:
        pieces.append((start, end))
    return pieces


def passages_of(
    data: bytes,
    media_type: str,
    filename: str | None,
    *,
    max_pages: int,
    max_passages: int,
    passage_chars: int,
) -> list[Passage]:
    """A document's passages, in order, with their page and offsets."""
    kind = document_kind(data, media_type, filename)
    pages: list[tuple[int | None, str]]
    if kind == "pdf":
        pages = [(n, t) for n, t in enumerate(pdf_pages(data, max_pages=max_pages), start=1)]
    else:
        pages = [(None, decode_text(data))]
    passages: list[Passage] = []
    for page, text in pages:
        for start, end in split_passages(text, passage_chars):
            if len(passages) >= max_passages:
                raise InvalidInput(
                    f"the document splits into more than {max_passages} passages "
                    "(memory.multimodal.max_passages)"
                )
            passages.append(Passage(text[start:end], filename, page, len(passages), start, end))
    if not passages:
        raise InvalidInput("the document has no text (an image-only PDF needs OCR first)")
    return passages


__all__ = ["Passage", "document_kind", "passages_of", "pdf_pages", "split_passages"]
