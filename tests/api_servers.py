"""One proxy for the API-shape tests (tests/test_responses_api.py, test_messages_api.py,
test_agent_loops.py): a real uvicorn server with the real embedder and LanceDB, in front of
the fake OpenAI-compatible server (Chat Completions and Responses) and the fake Anthropic
server, over every upstream path:

- ``fake-model``: raw relay to the OpenAI-compatible fake
- ``lite-model``: the same fake through LiteLLM
- ``claude``: raw relay to the fake Anthropic (``anthropic/`` model, auto)
- ``lite-claude``: the fake Anthropic through LiteLLM (translation to and from Anthropic)
- ``gemini``: the fake Gemini ``generateContent`` server through LiteLLM
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy import Settings, create_app
from tests.fake_anthropic import FAKE_ANTHROPIC_KEY, fake_anthropic
from tests.fake_gemini import FAKE_GEMINI_KEY, fake_gemini
from tests.fake_state import FakeState
from tests.fake_upstream import FakeUpstream
from tests.servers import ServerThread

OPENAI_SHAPED = ("fake-model", "lite-model")
ANTHROPIC_SHAPED = ("claude", "lite-claude")


@dataclass
class ApiRig:
    proxy: ServerThread
    openai_fake: FakeUpstream
    anthropic_fake: ServerThread
    anthropic_state: FakeState
    gemini_state: FakeState

    def chats_of(self, model: str) -> list[Any]:
        """The chat-kind requests the provider behind ``model`` received."""
        if model in ANTHROPIC_SHAPED:
            return self.anthropic_state.snapshot("chat")
        if model == "gemini":
            return self.gemini_state.snapshot("chat")
        return self.openai_fake.requests_of("chat")


def rig_settings(
    openai_url: str,
    anthropic_url: str,
    gemini_url: str,
    storage: Path,
    extra: dict[str, Any] | None = None,
    **memory: Any,
) -> Settings:
    fake = {"api_base": openai_url, "api_key": "sk-fake"}
    claude = {"model": "anthropic/claude-fake", "api_base": anthropic_url}
    return Settings.from_dict(
        {
            "model_list": [
                {
                    "model_name": "fake-model",
                    "litellm_params": {"model": "openai/fake-model", **fake},
                },
                {
                    "model_name": "lite-model",
                    "litellm_params": {"model": "openai/fake-model", **fake},
                    "upstream": "litellm",
                },
                {
                    "model_name": "claude",
                    "litellm_params": {**claude, "api_key": FAKE_ANTHROPIC_KEY},
                },
                {
                    "model_name": "lite-claude",
                    "litellm_params": {**claude, "api_key": FAKE_ANTHROPIC_KEY},
                    "upstream": "litellm",
                },
                {
                    "model_name": "gemini",
                    "litellm_params": {
                        "model": "gemini/gemini-fake",
                        "api_base": gemini_url,
                        "api_key": FAKE_GEMINI_KEY,
                    },
                },
            ],
            "memory": {
                "storage_uri": str(storage),
                "extraction_model": "fake-model",
                # Every memory of the user is recalled: the tests check where blocks go.
                "recall": {"threshold": None},
                "queue": {"backoff_base_s": 0.05, "shutdown_grace_s": 1},
                **memory,
            },
            **(extra or {}),
        }
    )


@contextlib.contextmanager
def api_rig(storage: Path, extra: dict[str, Any] | None = None, **memory: Any) -> Iterator[ApiRig]:
    """The rig; ``extra``: more top-level config sections (``auth``...), ``memory``: more
    ``memory`` keys."""
    with (
        FakeUpstream() as openai_fake,
        fake_anthropic() as (anthropic_fake, state),
        fake_gemini() as (gemini, gemini_state),
    ):
        settings = rig_settings(
            openai_fake.url, anthropic_fake.base_url, gemini.base_url, storage, extra, **memory
        )
        with ServerThread(create_app(settings)) as proxy:
            yield ApiRig(proxy, openai_fake, anthropic_fake, state, gemini_state)


def new_user(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"
