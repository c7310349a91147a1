"""What in an image is worth remembering about the user: the vision prompt (pure) and the
parse of its answer. The statements it yields are learned through the normal pipeline
(extraction, then ADD/UPDATE/DELETE/NONE), as if the user had said them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ExtractionError
from .messages import cap_text

VISION_PREFIX = "You look at one image a user shared in a conversation"
VISION_PROMPT = (
    VISION_PREFIX
    + """ and write down only what it shows
that is durable and personal about the user: their pets, family, home, belongings, places they
go, what they make or like. Write each as a short first-person statement the user could have
said, in the language of their message, for example "My dog is a golden retriever named
Kestrel." Do not describe lighting, composition or anything not about the user. If the image
shows nothing durable about the user, answer an empty list.
Answer JSON only: {"statements": ["..."]}"""
)
STATEMENTS_SCHEMA = {
    "type": "object",
    "properties": {"statements": {"type": "array", "items": {"type": "string"}}},
    "required": ["statements"],
    "additionalProperties": False,
}
MAX_STATEMENTS = 10
MAX_STATEMENT_CHARS = 500


def build_vision_messages(image_data_url: str, user_text: str) -> list[dict[str, Any]]:
    """The vision call: the instructions, the user's words (context only) and the image."""
    words = cap_text(user_text.strip(), 2000) or "(no words)"
    content: list[dict[str, Any]] = [
        {"type": "text", "text": f"The user's message with this image: {words}"},
        {"type": "image_url", "image_url": {"url": image_data_url}},
    ]
    return [{"role": "system", "content": VISION_PROMPT}, {"role": "user", "content": content}]


def parse_statements(payload: Mapping[str, Any]) -> list[str]:
    """The statements of a vision answer: non-empty strings, bounded in count and length."""
    statements = payload.get("statements")
    if not isinstance(statements, list):
        raise ExtractionError('the vision answer has no "statements" list')
    kept = []
    for item in statements[:MAX_STATEMENTS]:
        if isinstance(item, str) and any(ch.isalpha() for ch in item):
            kept.append(cap_text(item.strip(), MAX_STATEMENT_CHARS))
    return kept


__all__ = [
    "STATEMENTS_SCHEMA",
    "VISION_PREFIX",
    "VISION_PROMPT",
    "build_vision_messages",
    "parse_statements",
]
