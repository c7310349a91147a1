"""Images and documents inside chat messages: found, bounded, decoded or fetched.

Part shapes read (each API's own): OpenAI ``image_url`` and ``file`` (``file_data`` as base64
or a data: URL), Responses ``input_image`` / ``input_file``, Anthropic ``image`` / ``document``
blocks (``source`` base64 or url), and ``document_url`` / Mem0's ``pdf_url`` / ``mdx_url``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .config import MultimodalConfig
from .errors import InvalidInput
from .url_fetch import check_url, fetch_url

Kind = Literal["image", "document"]
URL_DOCUMENT_TYPES = ("document_url", "pdf_url", "mdx_url", "txt_url")


@dataclass(frozen=True, slots=True)
class MediaRef:
    """One image or document a message carries: inline bytes, or a URL still to fetch."""

    kind: Kind
    where: str  # e.g. messages[1].content[2], for error messages
    data: bytes | None = None
    url: str | None = None
    media_type: str = ""
    filename: str | None = None


def _decode(encoded: str, limit: int, where: str) -> bytes:
    if len(encoded) > (limit * 4) // 3 + 4:
        raise InvalidInput(f"{where} is larger than {limit} bytes", param=where)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{where} is not valid base64", param=where) from exc


def parse_data_url(url: str, limit: int, where: str) -> tuple[bytes, str]:
    """(bytes, media type) of a ``data:<type>;base64,<data>`` URL."""
    head, sep, encoded = url.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        raise InvalidInput(f"{where} must be a base64 data: URL", param=where)
    return _decode(encoded, limit, where), head[5:-7].lower()


def _ref(kind: Kind, where: str, value: str, cfg: MultimodalConfig, **extra: Any) -> MediaRef:
    limit = cfg.max_image_bytes if kind == "image" else cfg.max_document_bytes
    if value.startswith("data:"):
        data, media_type = parse_data_url(value, limit, where)
        return MediaRef(kind, where, data=data, media_type=media_type, **extra)
    if value.startswith(("http://", "https://")):
        return MediaRef(kind, where, url=value, **extra)
    if kind == "document":  # OpenAI's file_data may be bare base64
        return MediaRef(kind, where, data=_decode(value, limit, where), **extra)
    raise InvalidInput(f"{where} must be a data: URL or an http(s) URL", param=where)


def part_media(part: Mapping[str, Any], where: str, cfg: MultimodalConfig) -> MediaRef | None:
    """The image or document in one content part; None for text and other parts."""
    kind = part.get("type")
    if kind in ("image_url", "input_image"):
        value = part.get("image_url")
        url = value.get("url") if isinstance(value, Mapping) else value
        if not isinstance(url, str):
            raise InvalidInput(f"{where}.image_url must hold a url", param=where)
        return _ref("image", where, url, cfg)
    if kind in ("file", "input_file"):
        file = part.get("file") if kind == "file" else part
        if not isinstance(file, Mapping):
            raise InvalidInput(f"{where}.file must be an object", param=where)
        filename = file.get("filename")
        data = file.get("file_data") or file.get("file_url")
        if not isinstance(data, str) or (filename is not None and not isinstance(filename, str)):
            raise InvalidInput(
                f"{where} needs file_data (base64 or a data: URL) and a string filename",
                param=where,
            )
        return _ref("document", where, data, cfg, filename=(filename or "")[:255] or None)
    if kind in URL_DOCUMENT_TYPES:
        value = part.get(kind)
        url = value.get("url") if isinstance(value, Mapping) else value
        if not isinstance(url, str):
            raise InvalidInput(f"{where}.{kind} must hold a url", param=where)
        return _ref("document", where, url, cfg, filename=url.rsplit("/", 1)[-1][:255] or None)
    if kind in ("image", "document") and isinstance(part.get("source"), Mapping):
        return _anthropic_block(part, where, cfg)
    return None


def _anthropic_block(part: Mapping[str, Any], where: str, cfg: MultimodalConfig) -> MediaRef:
    source = part["source"]
    kind: Kind = "image" if part.get("type") == "image" else "document"
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        limit = cfg.max_image_bytes if kind == "image" else cfg.max_document_bytes
        data = _decode(source["data"], limit, where)
        media_type = str(source.get("media_type") or "")
        title = part.get("title")
        name = title[:255] if isinstance(title, str) else None
        return MediaRef(kind, where, data=data, media_type=media_type, filename=name)
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return _ref(kind, where, source["url"], cfg)
    raise InvalidInput(f"{where}.source must be base64 data or a url", param=where)


IMAGE_PARTS = ("image_url", "input_image", "image")


def find_media(
    messages: Sequence[Mapping[str, Any]], cfg: MultimodalConfig, *, images: bool = True
) -> list[MediaRef]:
    """Every document (and image, unless ``images`` is false: then image parts are left
    alone, unread) of ``messages``, within the configured counts."""
    found: list[MediaRef] = []
    for i, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if isinstance(part, Mapping) and (images or part.get("type") not in IMAGE_PARTS):
                ref = part_media(part, f"messages[{i}].content[{j}]", cfg)
                if ref is not None:
                    found.append(ref)
    pictures = sum(1 for ref in found if ref.kind == "image")
    if pictures > cfg.max_images:
        raise InvalidInput(f"{pictures} images; the limit is {cfg.max_images} per request")
    documents = len(found) - pictures
    if documents > cfg.max_documents:
        raise InvalidInput(f"{documents} documents; the limit is {cfg.max_documents}")
    return found


async def load(ref: MediaRef, cfg: MultimodalConfig) -> tuple[bytes, str]:
    """The bytes and media type of ``ref``, fetching a URL only as the config allows."""
    if ref.data is not None:
        return ref.data, ref.media_type
    assert ref.url is not None
    limit = cfg.max_image_bytes if ref.kind == "image" else cfg.max_document_bytes
    return await fetch_url(ref.url, cfg.fetch_urls, max_bytes=limit)


def new_turn_images(messages: Sequence[Any], cfg: MultimodalConfig) -> list[str]:
    """The images of the newest user turn(s) (after the last assistant turn) that a learning
    job can use, as URLs: inline images (any API's part shape) as data: URLs within the size
    limit, and http(s) URLs only where fetching them is allowed. Earlier turns the client
    re-sends are never taken again; malformed parts are the provider's business, skipped."""
    found: list[str] = []
    for message in reversed(messages):
        if not isinstance(message, Mapping):
            continue
        if message.get("role") in ("assistant", "tool", "function"):
            break
        content = message.get("content")
        if message.get("role") != "user" or not isinstance(content, list):
            continue
        for part in reversed(content):
            url = _image_url(part, cfg) if isinstance(part, Mapping) else None
            if url is not None:
                found.append(url)
    found.reverse()
    return found[-cfg.max_images :]


def _image_url(part: Mapping[str, Any], cfg: MultimodalConfig) -> str | None:
    try:
        ref = part_media(part, "part", cfg)
        if ref is None or ref.kind != "image":
            return None
        if ref.data is not None:
            return data_url(ref.data, ref.media_type)
        assert ref.url is not None
        check_url(ref.url, cfg.fetch_urls)
    except InvalidInput:
        return None
    return ref.url


def data_url(data: bytes, media_type: str) -> str:
    return (
        f"data:{media_type or 'application/octet-stream'};base64,{base64.b64encode(data).decode()}"
    )


IMAGE_TYPES = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
}


def image_type(data: bytes, declared: str) -> str:
    """The image's media type from its first bytes; ``InvalidInput`` if it is no image."""
    for magic, kind in IMAGE_TYPES.items():
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise InvalidInput(f"not a PNG, JPEG, GIF or WebP image (declared {declared or 'nothing'})")


__all__ = [
    "MediaRef",
    "data_url",
    "find_media",
    "image_type",
    "load",
    "new_turn_images",
    "parse_data_url",
]
