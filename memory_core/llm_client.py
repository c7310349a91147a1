"""The extraction LLM as the pipeline sees it: one ``complete`` call with bounded, varied,
schema-constrained parameters, on any LiteLLM provider.

``CallOptions`` is what one call asks for (which JSON contract, which attempt); the client
turns it into provider parameters: ``max_tokens`` and a timeout always, a ``response_format``
by the model's capability (``structured_output``), a temperature and seed that change with the
attempt (a retry that sent the same request would get the same answer), and the instructions
moved into the first user message for models whose chat template has no system role.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .config import LLMConfig
from .errors import ExtractionError, TruncatedAnswer
from .types import Message

StructuredOutput = Literal["json_schema", "json_object_schema", "json_object", "none"]
RETRY_TEMPERATURE_STEP = 0.3
MAX_RETRY_TEMPERATURE = 1.0
CHARS_PER_TOKEN = 3  # a cautious estimate (English runs ~4, other scripts fewer)
MIN_EXCHANGE_CHARS = 200


@dataclass(frozen=True, slots=True)
class CallOptions:
    """One call: the JSON contract the answer must follow and the attempt number (0 first;
    queue retries continue the count, so no two attempts of a job send the same request)."""

    schema_name: str
    schema: Mapping[str, Any]
    attempt: int = 0
    # False for a caller's own schema (an export): strict mode's rules (every property
    # required, no additional ones) are ours to meet, not theirs.
    strict: bool = True


class ChatLLM(Protocol):
    """One method: send chat messages, get the assistant's text back (raises
    ``ExtractionError`` when the provider fails or the answer was cut at ``max_tokens``).
    A client may also say how many prompt characters fit (``prompt_chars``, see
    ``prompt_budget``); the learning pipeline then cuts the exchange to fit."""

    async def complete(self, messages: list[Message], *, call: CallOptions) -> str: ...


def prompt_budget(llm: ChatLLM) -> int | None:
    """How many prompt characters ``llm`` takes (None: unknown, the configured caps rule)."""
    budget = getattr(llm, "prompt_chars", None)
    return budget if isinstance(budget, int) else None


def prompt_chars(context_window: int | None, max_tokens: int) -> int | None:
    """Prompt characters that leave room for a ``max_tokens`` answer in ``context_window``."""
    if context_window is None:
        return None
    return max(MIN_EXCHANGE_CHARS, (context_window - max_tokens - 64) * CHARS_PER_TOKEN)


class ShiftedAttempts:
    """A ``ChatLLM`` whose attempts start at ``offset``: the queue's n-th try of a job does not
    repeat the temperatures and seeds of the tries before it."""

    def __init__(self, inner: ChatLLM, offset: int) -> None:
        self._inner = inner
        self._offset = max(0, offset)
        self.prompt_chars = prompt_budget(inner)

    async def complete(self, messages: list[Message], *, call: CallOptions) -> str:
        shifted = CallOptions(
            call.schema_name, call.schema, call.attempt + self._offset, strict=call.strict
        )
        return await self._inner.complete(messages, call=shifted)


def varied_sampling(base_temperature: float, seed: int, attempt: int) -> dict[str, Any]:
    """Temperature and seed of an attempt: the configured ones first, then warmer and another
    seed each time (capped at ``MAX_RETRY_TEMPERATURE``)."""
    if attempt <= 0:
        return {"temperature": base_temperature, "seed": seed}
    warmer = base_temperature + RETRY_TEMPERATURE_STEP * attempt
    return {"temperature": round(min(MAX_RETRY_TEMPERATURE, warmer), 3), "seed": seed + attempt}


def response_format(mode: StructuredOutput, call: CallOptions, *, strict: bool) -> dict[str, Any]:
    """The ``response_format`` parameter for ``mode`` (empty for ``none``)."""
    if mode == "json_schema":
        schema = {
            "name": call.schema_name,
            "schema": dict(call.schema),
            "strict": strict and call.strict,
        }
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    if mode == "json_object_schema":  # llama-cpp-python's server: JSON mode under a grammar
        return {"response_format": {"type": "json_object", "schema": dict(call.schema)}}
    if mode == "json_object":
        return {"response_format": {"type": "json_object"}}
    return {}


def without_system_role(messages: Sequence[Message]) -> list[Message]:
    """System/developer messages folded into the first user message (for chat templates that
    have no system role and would drop them silently)."""
    instructions = [
        str(m.get("content") or "") for m in messages if m.get("role") in ("system", "developer")
    ]
    rest = [dict(m) for m in messages if m.get("role") not in ("system", "developer")]
    if not instructions:
        return rest
    prefix = "\n\n".join(text for text in instructions if text)
    first_user = next((m for m in rest if m.get("role") == "user"), None)
    if first_user is None:
        return [{"role": "user", "content": prefix}, *rest]
    content = first_user.get("content")
    if isinstance(content, list):  # parts (an image...): the instructions as a first text part
        first_user["content"] = [{"type": "text", "text": prefix}, *content]
    else:
        first_user["content"] = prefix + "\n\n" + str(content or "")
    return rest


def _model_info(model: str) -> Mapping[str, Any]:
    from .litellm_loader import get_litellm

    try:
        info = get_litellm().get_model_info(model)
    except Exception:  # litellm raises several types for a model it has no card for
        return {}
    return info if isinstance(info, Mapping) else {}


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the client sends a model: resolved from the config, ``auto`` by LiteLLM's cards."""

    structured_output: StructuredOutput
    strict_schema: bool
    system_role: bool


def resolve_capabilities(config: LLMConfig, info: Mapping[str, Any]) -> Capabilities:
    """``auto`` → ``json_schema`` (strict) where LiteLLM's card says the model supports response
    schemas, else ``json_object``; the system role unless the card says the model has none."""
    knows_schema = info.get("supports_response_schema") is True
    mode: StructuredOutput
    if config.structured_output == "auto":
        mode = "json_schema" if knows_schema else "json_object"
    else:
        mode = config.structured_output
    system_role = config.system_role
    if system_role is None:
        system_role = info.get("supports_system_messages") is not False
    return Capabilities(mode, knows_schema, system_role)


@dataclass(slots=True)
class TokenUsage:
    """Tokens the client's calls used, as the provider reported them."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    truncated: int = 0


class LiteLLMChat:
    """``litellm.acompletion`` with bounded, capability-aware params (any provider)."""

    def __init__(self, config: LLMConfig) -> None:
        self._config = config
        info = _model_info(config.model)
        self.capabilities = resolve_capabilities(config, info)
        window = config.context_window or info.get("max_input_tokens")
        self.prompt_chars = prompt_chars(
            window if isinstance(window, int) else None, config.max_tokens
        )
        self.usage = TokenUsage()

    def request_params(self, messages: Sequence[Message], call: CallOptions) -> dict[str, Any]:
        """Everything sent for one call but the provider's credentials (pure; tested)."""
        caps = self.capabilities
        kwargs = self._config.litellm_kwargs()
        if "num_retries" not in kwargs and "max_retries" not in kwargs:
            # The durable queue retries with backoff; hidden client retries would multiply it.
            kwargs["num_retries"] = kwargs["max_retries"] = 0
        kwargs.update(varied_sampling(self._config.temperature, self._config.seed, call.attempt))
        kwargs.update(response_format(caps.structured_output, call, strict=caps.strict_schema))
        kwargs["messages"] = list(messages) if caps.system_role else without_system_role(messages)
        return kwargs

    async def complete(self, messages: list[Message], *, call: CallOptions) -> str:
        from .litellm_loader import get_litellm

        kwargs = self.request_params(messages, call)
        try:
            response = await get_litellm().acompletion(**kwargs)
        except Exception as exc:  # provider errors come in many types; one typed error out
            raise ExtractionError(f"LLM call to {self._config.model} failed: {exc}") from exc
        self._count(getattr(response, "usage", None))
        choice = response.choices[0]
        content = choice.message.content
        text = content if isinstance(content, str) else ""
        if getattr(choice, "finish_reason", None) == "length":
            self.usage.truncated += 1
            raise TruncatedAnswer(
                f"the answer was cut at max_tokens={self._config.max_tokens} "
                f"(it must be short, JSON only): {text[:120]!r}",
                answer=text,
            )
        return text

    def _count(self, usage: Any) -> None:
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        self.usage.calls += 1
        self.usage.prompt_tokens += prompt
        self.usage.completion_tokens += completion


__all__ = [
    "Capabilities",
    "CallOptions",
    "ChatLLM",
    "LiteLLMChat",
    "ShiftedAttempts",
    "TokenUsage",
    "prompt_budget",
    "prompt_chars",
    "resolve_capabilities",
    "response_format",
    "varied_sampling",
    "without_system_role",
]
