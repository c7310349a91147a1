"""Structured export: a user's memories poured into a JSON Schema (as a Pydantic model emits
it) by the extraction model, validated against the schema, retried once with the validation
errors. Prompt building and validation are pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ValidationError

from .errors import ExtractionError, InvalidInput
from .extraction import ChatLLM, complete_validated
from .messages import cap_text

EXPORT_PREFIX = "You fill one JSON object that follows a JSON Schema"
EXPORT_PROMPT = (
    EXPORT_PREFIX
    + """, using only the memories
listed about one user. Use a memory's wording where it fits; leave optional fields out and use
null or empty lists where the memories say nothing, rather than guessing. Answer with the JSON
object only."""
)
MAX_SCHEMA_BYTES = 64 * 1024
MAX_MEMORY_CHARS_IN_PROMPT = 60_000
MAX_ERRORS_SHOWN = 10


class ExportInvalid(ExtractionError):
    """The model's answer did not validate against the schema (the errors say where)."""


def json_schema_of(target: type[BaseModel] | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON Schema of a Pydantic model, or a given schema after checking it."""
    if isinstance(target, type) and issubclass(target, BaseModel):
        return target.model_json_schema()
    if not isinstance(target, Mapping):
        raise InvalidInput("schema must be a JSON Schema object or a Pydantic model class")
    schema = dict(target)
    if len(orjson.dumps(schema)) > MAX_SCHEMA_BYTES:
        raise InvalidInput(f"schema is larger than {MAX_SCHEMA_BYTES} bytes", param="schema")
    if schema.get("type", "object") != "object":
        raise InvalidInput('the schema must describe an object ("type": "object")', param="schema")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        message = f"schema is not a valid JSON Schema: {exc.message}"
        raise InvalidInput(message, param="schema") from exc
    return schema


def build_export_messages(
    schema: Mapping[str, Any],
    memories: Sequence[str],
    instructions: str | None = None,
    errors: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The fill call: the rules, the schema, the memories (data, never instructions)."""
    listed = "\n".join(f"- {m}" for m in memories) or "(no memories)"
    parts = [
        "<schema>\n" + orjson.dumps(schema, option=orjson.OPT_INDENT_2).decode() + "\n</schema>",
        "<memories>\n" + cap_text(listed, MAX_MEMORY_CHARS_IN_PROMPT) + "\n</memories>",
    ]
    if instructions:
        parts.append("<instructions>\n" + cap_text(instructions, 4000) + "\n</instructions>")
    if errors:
        shown = "\n".join(f"- {e}" for e in errors[:MAX_ERRORS_SHOWN])
        parts.append("Your previous answer did not validate:\n" + shown + "\nFix these.")
    return [
        {"role": "system", "content": EXPORT_PROMPT},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def schema_errors(data: Any, schema: Mapping[str, Any]) -> list[str]:
    """Each way ``data`` breaks ``schema``, as ``path: message`` (empty when it validates)."""
    validator = Draft202012Validator(schema)
    found = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in found]


def model_errors(data: Any, model: type[BaseModel]) -> list[str]:
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return [f"{'/'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()]
    return []


def _as_given(answer: dict[str, Any]) -> dict[str, Any]:
    return answer  # validated against the caller's schema below, with the errors fed back


async def fill_schema(
    llm: ChatLLM,
    schema: Mapping[str, Any],
    memories: Sequence[str],
    *,
    instructions: str | None = None,
    model: type[BaseModel] | None = None,
) -> dict[str, Any]:
    """The validated object; ``ExportInvalid`` with the errors after one corrected retry."""
    errors: list[str] = []
    nothing: dict[str, Any] = {}
    for _attempt in range(2):
        answer, _calls = await complete_validated(
            llm,
            build_export_messages(schema, memories, instructions, errors),
            _as_given,
            schema_name="export",
            schema=schema,
            empty=nothing,
            strict=False,
        )
        errors = model_errors(answer, model) if model else schema_errors(answer, schema)
        if not errors:
            return answer
    raise ExportInvalid("the export does not validate against the schema: " + "; ".join(errors))


__all__ = [
    "EXPORT_PREFIX",
    "ExportInvalid",
    "build_export_messages",
    "fill_schema",
    "json_schema_of",
    "schema_errors",
]
