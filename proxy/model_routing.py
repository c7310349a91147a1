"""Model routing: which configured deployment serves a requested model name, the LiteLLM
model string it becomes (wildcards filled in), and which upstream kind relays it."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import BadRequest, NotFoundError
from .settings import Deployment

OPENAI_COMPATIBLE_PREFIXES = ("openai/", "hosted_vllm/", "lm_studio/", "text-completion-openai/")
_ADDRESS_MARKS = ("//", "@", "\\", "..")


@dataclass(slots=True)
class ModelRoute:
    """A resolved deployment for one requested model name."""

    deployment: Deployment
    model: str  # the litellm model string, wildcard filled in
    kind: str  # "passthrough" | "litellm"

    @property
    def params(self) -> dict[str, Any]:
        return self.deployment.litellm_params


class ModelRouter:
    """Maps a requested model name to a deployment (exact names first, then wildcards)."""

    def __init__(self, deployments: Sequence[Deployment]) -> None:
        self._exact = {d.model_name: d for d in deployments if "*" not in d.model_name}
        self._patterns = [d for d in deployments if "*" in d.model_name]

    def resolve(self, model: str) -> ModelRoute:
        deployment = self._exact.get(model)
        litellm_model: str | None = None
        if deployment is not None:
            litellm_model = deployment.litellm_params["model"]
        else:
            for candidate in self._patterns:
                if fnmatch.fnmatchcase(model, candidate.model_name):
                    deployment = candidate
                    litellm_model = _fill_wildcard(candidate, model)
                    break
        if deployment is None or litellm_model is None:
            raise NotFoundError(
                f"The model `{model}` does not exist", param="model", code="model_not_found"
            )
        return ModelRoute(deployment, litellm_model, _kind(deployment, litellm_model))

    def public_models(self) -> list[str]:
        return list(self._exact)


def _fill_wildcard(deployment: Deployment, requested: str) -> str:
    pattern = deployment.model_name
    target: str = deployment.litellm_params["model"]
    if "*" not in target:
        return target
    prefix = pattern.split("*", 1)[0]
    suffix = requested[len(prefix) :] if requested.startswith(prefix) else requested
    if any(mark in suffix for mark in _ADDRESS_MARKS):
        # Some LiteLLM providers read a URL out of the model string (huggingface/https://...).
        raise BadRequest(
            "a model name that fills a wildcard deployment may not hold an address",
            param="model",
            code="invalid_model",
        )
    return target.replace("*", suffix, 1)


def _kind(deployment: Deployment, model: str) -> str:
    if deployment.upstream != "auto":
        return deployment.upstream
    if model.startswith(OPENAI_COMPATIBLE_PREFIXES):
        return "passthrough"
    if "/" not in model and deployment.litellm_params.get("api_base"):
        return "passthrough"
    return "litellm"
