"""The learning log over HTTP: ``GET /v1/learning`` pages what a user's learning jobs did
(facts, decisions with the memories they touched and why, attempts, a dead job's error),
newest first; ``POST /v1/learning/{job_id}/retry`` requeues a dead letter.

The same keys and rules as ``/v1/memories``: a key reads the log of the users it may name; a
dead job of anyone else answers 404, exactly like an absent one.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from memory_core.errors import NotFound
from memory_core.queue import LearningQueue
from memory_core.timestamps import format_timestamp

from .auth import Caller
from .errors import MemoryDisabled
from .learning_models import LearningQuery
from .memories_api import caller_of, json_response, read_query
from .memory_access import authorize_scope, may_see, sees_all_users
from .state import state_of

# What a key restricted to some users does not see of an error: the proxy's URLs and paths.
MAX_JOB_ID_CHARS = 128
_INTERNALS = re.compile(r"\w+://\S+|(?<![\w.])/(?:[\w.-]+/)+[\w.-]*")


def queue_of(request: Request) -> LearningQueue:
    queue = state_of(request).queue
    if queue is None:
        raise MemoryDisabled("memory is disabled in this proxy's config (memory.enabled)")
    return queue


def _stamp(seconds: float) -> str:
    return format_timestamp(datetime.fromtimestamp(seconds, UTC))


def shown_error(error: str | None, caller: Caller) -> str | None:
    """Errors in full for keys that see every user; URLs and paths hidden from the others."""
    if error is None or sees_all_users(caller):
        return error
    return _INTERNALS.sub("<hidden>", error)


def log_entry(row: dict[str, Any], caller: Caller) -> dict[str, Any]:
    """A job store's ``results()`` row as the API shows it (version 1 results: counts only)."""
    stored = dict(row["result"]) if isinstance(row.get("result"), dict) else None
    facts = stored.pop("facts", []) if stored is not None else []
    decisions = stored.pop("decisions", []) if stored is not None else []
    return {
        "id": row["id"],
        "user_id": row["scope_key"],
        "kind": row.get("kind") or "learn",
        "status": row["status"],
        "attempts": row["attempts"],
        "enqueued_at": _stamp(row["enqueued_at"]),
        "finished_at": _stamp(row["finished_at"]),
        "error": shown_error(row.get("error"), caller),
        "facts": facts,
        "decisions": decisions,
        "result": stored,
    }


async def learning_log(request: Request) -> Response:
    caller = caller_of(request)
    query = read_query(request, LearningQuery)
    scope_key: str | None = None
    if query.user_id is not None or not sees_all_users(caller):
        scope_key = authorize_scope(caller, {"user_id": query.user_id}).user_id
    rows = await queue_of(request).results(
        query.limit + 1, scope_key=scope_key, before=query.cursor
    )
    page = rows[: query.limit]
    next_cursor = page[-1]["cursor"] if len(rows) > query.limit else None
    return json_response(
        {"results": [log_entry(row, caller) for row in page], "next_cursor": next_cursor}
    )


async def retry_job(request: Request) -> Response:
    caller = caller_of(request)
    job_id = request.path_params["job_id"]
    queue = queue_of(request)
    dead = await queue.dead_job(job_id) if len(job_id) <= MAX_JOB_ID_CHARS else None
    # A dead job of a user the key may not name is as absent as one that never existed.
    if dead is None or not may_see(caller, {"user_id": dead["scope_key"] or None}):
        raise NotFound(f"no dead learning job {job_id}")
    if not await queue.retry_dead(job_id):  # retried or purged meanwhile
        raise NotFound(f"no dead learning job {job_id}")
    return json_response({"id": job_id, "status": "pending"}, status=202)


def learning_routes() -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for prefix in ("", "/v1"):
        routes += [
            Route(prefix + "/learning", learning_log, methods=["GET"]),
            Route(prefix + "/learning/", learning_log, methods=["GET"]),
            Route(prefix + "/learning/{job_id}/retry", retry_job, methods=["POST"]),
        ]
    return routes


__all__ = ["learning_routes", "log_entry", "shown_error"]
