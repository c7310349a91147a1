"""``GET /v1/users/{user_id}/profile``: the user's profile (``memory_core.profiles``) — the
stored one, else built now; ``?refresh=true`` rebuilds it now. Same keys and isolation as the
memory routes: a key that may not act for the user gets 403, whether the user exists or not."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from memory_core.errors import NotFound
from memory_core.profiles import Profile

from .api_models import ProfileQuery
from .errors import Conflict
from .memories_api import caller_of, json_response, memory_of, read_query
from .memory_access import authorize_scope
from .state import state_of


def shown(profile: Profile) -> dict[str, object]:
    return {
        "user_id": profile["user_id"],
        "profile": profile["profile"],
        "memories": profile["memories"],
        "created_at": profile["created_at"],
        "updated_at": profile["updated_at"],
    }


async def get_profile(request: Request) -> Response:
    caller = caller_of(request)
    scope = authorize_scope(caller, {"user_id": request.path_params["user_id"]})
    user_id = scope.user_id
    assert user_id is not None
    query = read_query(request, ProfileQuery)
    memory = memory_of(request)
    state = state_of(request)
    if not state.settings.memory.profile.enabled:
        raise Conflict("user profiles are off in this proxy's config (memory.profile.enabled)")
    llm = state.extraction.configured()
    if llm is None:
        raise Conflict(
            "user profiles need an extraction model: set memory.extraction_model or memory.llm"
        )
    stored = None if query.refresh else await memory.profile(user_id=user_id)
    profile = stored or await memory.build_profile(user_id=user_id, llm=llm)
    if profile is None:
        raise NotFound(f"user {user_id} has no memories to build a profile from")
    return json_response(shown(profile))


def profile_routes() -> list[BaseRoute]:
    return [
        Route(prefix + "/users/{user_id}/profile", get_profile, methods=["GET"])
        for prefix in ("", "/v1")
    ]


__all__ = ["profile_routes"]
