"""The queue's profile job: rebuild a user's profile after writes, debounced.

Every write enqueues one job (its own id) in the scope ``profile/<user>``. The first job of a
burst waits ``profile.debounce_s`` after its write (``Deferred``: it keeps the head of the
scope, the later ones queue behind it), then rebuilds from every memory stored by then; a job
whose write is older than the profile's ``source_at`` is already covered and does nothing. So
a burst of writes costs one model call, and no write is left out of the profile that follows.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from memory_core import AsyncMemory
from memory_core.config import ProfileConfig
from memory_core.errors import InvalidInput
from memory_core.extraction import ChatLLM
from memory_core.queue import Deferred, Job

PROFILE_JOB = "profile"


def profile_job(user_id: str, changed_at: float) -> tuple[str, str, dict[str, Any]]:
    """``(job id, scope key, payload)`` of the rebuild a write of ``user_id`` asks for."""
    payload = {"kind": PROFILE_JOB, "user_id": user_id, "changed_at": changed_at}
    return f"profile:{user_id}:{uuid.uuid4().hex}", f"profile/{user_id}", payload


class ProfileRebuilder:
    """Runs profile jobs with the configured extraction model (None: jobs queued before it
    left the config are dropped)."""

    def __init__(self, memory: AsyncMemory, llm: ChatLLM | None, config: ProfileConfig) -> None:
        self._memory = memory
        self._llm = llm
        self._config = config

    async def rebuild(self, job: Job) -> dict[str, Any]:
        user_id = job.payload.get("user_id")
        changed_at = job.payload.get("changed_at")
        if not isinstance(user_id, str) or not isinstance(changed_at, int | float):
            raise InvalidInput("a profile job without its user_id and changed_at")
        if self._llm is None:
            return {"kind": PROFILE_JOB, "user_id": user_id, "profile": "no model"}
        current = await self._memory.profile(user_id=user_id)
        if current is not None and current["source_at"] >= changed_at:
            return {"kind": PROFILE_JOB, "user_id": user_id, "profile": "current"}
        due = changed_at + self._config.debounce_s
        if time.time() < due:
            raise Deferred(due)
        built = await self._memory.build_profile(user_id=user_id, llm=self._llm)
        return {
            "kind": PROFILE_JOB,
            "user_id": user_id,
            "profile": "rebuilt" if built is not None else "deleted",
            "memories": built["memories"] if built is not None else 0,
        }


__all__ = ["PROFILE_JOB", "ProfileRebuilder", "profile_job"]
