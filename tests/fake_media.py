"""What the fake upstream answers to memproxy's vision and structured-export prompts, and
small media files for the tests (a PNG carrying its "fact", a PDF with a text layer).

- Vision: the image is a PNG whose ``tEXt`` chunk ``memproxy-fact`` holds what the fake "sees";
  it answers ``{"statements": [that text]}`` (no chunk: no statements).
- Export: fills the schema's properties from the listed memories by the words of each
  property's name. ``[[export-invalid]]`` in the instructions answers ``{}`` every time;
  ``[[export-invalid-once]]`` only until the prompt carries the validation errors.
"""

from __future__ import annotations

import base64
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from memory_core.exports import EXPORT_PREFIX
from memory_core.vision import VISION_PREFIX

FACT_KEY = b"memproxy-fact"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def media_kind(system_text: str) -> str | None:
    """``vision`` / ``export`` for memproxy's prompts, None for anything else."""
    if system_text.startswith(VISION_PREFIX):
        return "vision"
    if system_text.startswith(EXPORT_PREFIX):
        return "export"
    return None


# ---- media files -----------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_fact(fact: str | None) -> bytes:
    """A valid 1x1 PNG, with ``fact`` in a tEXt chunk."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    pixels = _chunk(b"IDAT", zlib.compress(b"\x00\xff\x80\x00"))
    text = _chunk(b"tEXt", FACT_KEY + b"\x00" + fact.encode("latin-1")) if fact else b""
    return b"\x89PNG\r\n\x1a\n" + header + text + pixels + _chunk(b"IEND", b"")


def png_data_url(fact: str | None) -> str:
    return "data:image/png;base64," + base64.b64encode(png_with_fact(fact)).decode()


def png_fact(data: bytes) -> str | None:
    position = 8
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if kind == b"tEXt" and body.startswith(FACT_KEY + b"\x00"):
            return body[len(FACT_KEY) + 1 :].decode("latin-1")
        position += 12 + length
    return None


def pdf_with_pages(pages: Sequence[str]) -> bytes:
    """A minimal valid PDF whose pages carry ``pages`` as their text layer (Helvetica)."""
    objects: list[bytes] = []
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    font = 3 + 2 * len(pages)
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    for i, text in enumerate(pages):
        lines = [
            ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            for ln in text.split("\n")
        ]
        ops = "BT /F1 11 Tf 14 TL 50 780 Td " + " T* ".join(f"({ln}) Tj" for ln in lines) + " ET"
        stream = ops.encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


# ---- answers ---------------------------------------------------------------------------


def vision_answer(messages: Sequence[Mapping[str, Any]]) -> str:
    statements: list[str] = []
    for part in messages[-1].get("content") or []:
        url = (part.get("image_url") or {}).get("url", "") if isinstance(part, Mapping) else ""
        if isinstance(url, str) and url.startswith("data:image/png;base64,"):
            fact = png_fact(base64.b64decode(url.split(",", 1)[1]))
            if fact:
                statements.append(fact)
    return orjson.dumps({"statements": statements}).decode()


def _section(prompt: str, name: str) -> str:
    found = re.search(rf"<{name}>\n(.*?)\n</{name}>", prompt, re.DOTALL)
    return found.group(1) if found else ""


def _fill(schema: Mapping[str, Any], memories: list[str], name: str) -> Any:
    words = [w for w in re.split(r"[_\W]+", name.lower()) if len(w) > 2]
    matching = [m for m in memories if any(w in m.lower() for w in words)]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {key: _fill(sub, memories, key) for key, sub in props.items()}
    if kind == "array":
        return matching
    if kind in ("integer", "number"):
        numbers = [_NUMBER.search(m) for m in matching]
        value = next((float(n.group()) for n in numbers if n), None)
        return int(value) if kind == "integer" and value is not None else value
    if kind == "boolean":
        return bool(matching)
    return matching[0] if matching else None


def export_answer(prompt: str) -> str:
    schema = orjson.loads(_section(prompt, "schema") or "{}")
    memories = [line[2:] for line in _section(prompt, "memories").splitlines() if line[:2] == "- "]
    instructions = _section(prompt, "instructions")
    corrected = "did not validate" in prompt
    if "[[export-invalid]]" in instructions or (
        "[[export-invalid-once]]" in instructions and not corrected
    ):
        return "{}"
    return orjson.dumps(_fill(schema, memories, "")).decode()


def media_reply(kind: str, messages: Sequence[Mapping[str, Any]]) -> str:
    if kind == "vision":
        return vision_answer(messages)
    content = messages[-1].get("content")
    return export_answer(content if isinstance(content, str) else "")


__all__ = [
    "media_kind",
    "media_reply",
    "pdf_with_pages",
    "png_data_url",
    "png_with_fact",
]
