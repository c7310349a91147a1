"""What the proxy does when memories change: the ``ChangeObserver`` it gives ``AsyncMemory``
queues a webhook delivery per subscribed endpoint and a profile rebuild per user touched.

It runs after the write is stored, whichever way the write came in (REST, MCP, learning). A
queue that stays unreachable past its enqueue retries loses those events (logged and counted
in ``memproxy_change_events_lost_total``): the write itself stands.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from memory_core import AsyncMemory
from memory_core.changes import MemoryChange
from memory_core.errors import QueueStoreError
from memory_core.queue import Handler, LearningQueue

from .learning import ExtractionModels
from .metrics import Metrics
from .profile_jobs import PROFILE_JOB, ProfileRebuilder, profile_job
from .settings import Settings
from .webhooks import WEBHOOK_JOB, WebhookSender, WebhookSettings, delivery_jobs

log = logging.getLogger("proxy.change_events")


class ChangeEvents:
    """Queues the jobs a batch of changes asks for (``profiles``: rebuild after writes)."""

    def __init__(
        self,
        queue: LearningQueue,
        metrics: Metrics,
        *,
        webhooks: Sequence[WebhookSettings] = (),
        profiles: bool = False,
    ) -> None:
        self._queue = queue
        self._metrics = metrics
        self._webhooks = list(webhooks)
        self._profiles = profiles

    @property
    def active(self) -> bool:
        return bool(self._webhooks) or self._profiles

    async def memories_changed(self, changes: Sequence[MemoryChange]) -> None:
        jobs: list[tuple[str, str, dict[str, Any]]] = delivery_jobs(self._webhooks, changes)
        if self._profiles:
            now = time.time()
            users = dict.fromkeys(c.scope.user_id for c in changes if c.scope.user_id)
            jobs += [profile_job(user, now) for user in users if user is not None]
        for number, (job_id, scope_key, payload) in enumerate(jobs):
            try:
                await self._queue.enqueue(scope_key, payload, job_id)
            except QueueStoreError as exc:
                # The enqueue already retried for enqueue_retry_s: the rest would wait as
                # long each, under the scope's write lock. They are lost with this one.
                log.error("could not queue %d change jobs: %s", len(jobs) - number, exc)
                for _job_id, _scope, lost in jobs[number:]:
                    self._metrics.change_events_lost.labels(lost["kind"]).inc()
                return


def change_job_kinds(
    memory: AsyncMemory,
    settings: Settings,
    extraction: ExtractionModels,
    sender: WebhookSender | None = None,
) -> dict[str, Handler]:
    """The queue's handlers of the jobs ``ChangeEvents`` queues, for every process that runs
    a ``Learner`` on the shared queue (always registered: jobs queued under an earlier config
    still finish)."""
    sender = sender or WebhookSender(settings.webhooks)
    rebuilder = ProfileRebuilder(memory, extraction.configured(), settings.memory.profile)
    return {WEBHOOK_JOB: sender.deliver, PROFILE_JOB: rebuilder.rebuild}


def watch_changes(
    memory: AsyncMemory,
    queue: LearningQueue,
    settings: Settings,
    extraction: ExtractionModels,
    metrics: Metrics,
) -> ChangeEvents | None:
    """Give ``memory`` the observer the config asks for (None: no webhooks, no profiles)."""
    events = ChangeEvents(
        queue,
        metrics,
        webhooks=settings.webhooks,
        profiles=settings.memory.profile.enabled and extraction.configured() is not None,
    )
    if not events.active:
        return None
    memory.watch(events)
    return events


__all__ = ["ChangeEvents", "change_job_kinds", "watch_changes"]
