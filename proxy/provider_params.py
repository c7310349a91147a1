"""Which request-body fields may reach the provider call (docs/security.md, "Trust boundary").

Where the proxy connects, with which credentials, headers, timeouts and retries comes from the
config alone. A body field that names such a setting is refused on both upstream paths. The
LiteLLM path forwards only OpenAI's Chat Completions parameters (plus what a deployment lists
in ``client_params``), since ``litellm.acompletion`` reads hundreds of keyword arguments of its
own (logging hosts, credentials, mocks...); the passthrough relays other fields to the
configured endpoint, which is the point of a raw relay (vLLM's ``guided_json``, OpenRouter's
``provider``...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from .errors import BadRequest

# OpenAI's Chat Completions request parameters (platform.openai.com/docs/api-reference/chat).
CHAT_COMPLETION_PARAMS = frozenset(
    {
        "model",
        "messages",
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)
# OpenAI's Responses request parameters (platform.openai.com/docs/api-reference/responses).
RESPONSES_PARAMS = frozenset(
    {
        "model",
        "input",
        "background",
        "conversation",
        "include",
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "metadata",
        "parallel_tool_calls",
        "previous_response_id",
        "prompt",
        "prompt_cache_key",
        "prompt_cache_retention",
        "reasoning",
        "safety_identifier",
        "service_tier",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "truncation",
        "user",
    }
)
# Anthropic's Messages request parameters (docs.anthropic.com/en/api/messages).
MESSAGES_PARAMS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "metadata",
        "service_tier",
        "stop_sequences",
        "stream",
        "system",
        "temperature",
        "thinking",
        "tool_choice",
        "tools",
        "top_k",
        "top_p",
    }
)
API_PARAMS = {
    "chat": CHAT_COMPLETION_PARAMS,
    "responses": RESPONSES_PARAMS,
    "messages": MESSAGES_PARAMS,
}
API_TITLES = {
    "chat": "OpenAI Chat Completions",
    "responses": "OpenAI Responses",
    "messages": "Anthropic Messages",
}
# Read by LiteLLM as its own settings, not sent to the provider: never passed from a body.
LITELLM_ONLY_PARAMS = frozenset({"metadata"})

# Names that set where a call goes, with which credentials, headers, timeouts or retries,
# or that replace the provider's answer: refused on every path.
STEERING_PARAMS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "api_type",
        "organization",
        "project",
        "deployment_id",
        "custom_llm_provider",
        "provider_specific_header",
        "extra_headers",
        "headers",
        "default_headers",
        "extra_body",
        "extra_query",
        "timeout",
        "request_timeout",
        "stream_timeout",
        "client_side_timeout",
        "num_retries",
        "max_retries",
        "retry_policy",
        "retry_strategy",
        "fallbacks",
        "context_window_fallback_dict",
        "mock_response",
        "mock_timeout",
        "mock_tool_calls",
        "model_list",
        "client",
        "shared_session",
        "ssl_verify",
        "region_name",
        "callbacks",
        "success_callback",
        "failure_callback",
        "logger_fn",
        "use_litellm_proxy",
        "use_in_pass_through",
        "proxy_server_request",
    }
)
STEERING_PREFIXES = ("litellm_", "aws_", "vertex_", "azure_", "watsonx_", "_")


def is_steering(name: str) -> bool:
    return name in STEERING_PARAMS or name.startswith(STEERING_PREFIXES)


@lru_cache(maxsize=1)
def litellm_own_params() -> frozenset[str]:
    """Every keyword LiteLLM itself interprets (its ``all_litellm_params``), minus OpenAI's."""
    from memory_core.litellm_loader import get_litellm

    get_litellm()
    from litellm.types.utils import all_litellm_params

    return (
        frozenset(all_litellm_params) - CHAT_COMPLETION_PARAMS - RESPONSES_PARAMS - MESSAGES_PARAMS
    )


def _refuse(name: str, why: str) -> BadRequest:
    return BadRequest(
        f"the request field {name!r} {why}; the proxy's config decides it",
        param=name,
        code="forbidden_parameter",
    )


def check_passthrough_body(body: Mapping[str, Any]) -> None:
    """Refuse fields that would steer the call (the relay itself never reads them)."""
    for name in body:
        if is_steering(name):
            raise _refuse(name, "would change where or how the provider is called")


def litellm_body(
    body: Mapping[str, Any], extra_allowed: Iterable[str] = (), api: str = "chat"
) -> dict[str, Any]:
    """The keyword arguments a body may give LiteLLM's call for ``api``: that API's parameters
    and the deployment's ``client_params``; any other field is refused, naming it."""
    allowed = API_PARAMS[api].union(extra_allowed)
    kwargs: dict[str, Any] = {}
    for name, value in body.items():
        if is_steering(name) or name in litellm_own_params() and name not in allowed:
            raise _refuse(name, "would change where or how the provider is called")
        if name not in allowed:
            raise BadRequest(
                f"the request field {name!r} is not an {API_TITLES[api]} parameter, and "
                "this model is called through LiteLLM (list it in the deployment's "
                "client_params to pass it on)",
                param=name,
                code="unknown_parameter",
            )
        if name not in LITELLM_ONLY_PARAMS:
            kwargs[name] = value
    return kwargs


__all__ = [
    "API_PARAMS",
    "CHAT_COMPLETION_PARAMS",
    "MESSAGES_PARAMS",
    "RESPONSES_PARAMS",
    "STEERING_PARAMS",
    "check_passthrough_body",
    "is_steering",
    "litellm_body",
]
