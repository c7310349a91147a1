"""Which memories an API key may touch: scope authorization for the memory API and the CLI.

Filters can only narrow: memory_core ANDs the scope into every filter, and every user_id a
filter mentions must be one the key may act for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memory_core.filter_shape import filter_user_ids, identity_from_filters
from memory_core.types import IDENTITY_FIELDS, Scope, validate_id

from .auth import Caller
from .errors import BadRequest, Forbidden


def sees_all_users(caller: Caller) -> bool:
    """Admin keys, and ``*`` keys that may assert users (a ``*`` key that may not, e.g. a chat
    UI's relying on signed users, names nobody on the memory routes)."""
    return caller.admin or ("*" in caller.users and caller.may_assert_users)


def may_see(caller: Caller, item: Mapping[str, Any]) -> bool:
    """A memory is visible when the key may name its user (user-less ones: all-user keys)."""
    if sees_all_users(caller):
        return True
    user_id = item.get("user_id")
    return user_id is not None and caller.may_name(user_id)


def authorize_scope(
    caller: Caller,
    ids: Mapping[str, Any],
    filters: Mapping[str, Any] | None = None,
) -> Scope:
    """The scope a request may touch; filters can only narrow it (memory_core ANDs it in).

    The key's rules are the chat route's: a bound key acts for its user alone, a key that
    may not assert users names none but its bound one, and ids the filters name must agree
    with the ones given (403 otherwise: conflicting claims are never resolved silently).
    ``ids``: the request's identity fields (``user_id``, ``agent_id``, ``run_id``, ``app_id``).
    """
    given = {key: ids.get(key) or None for key in IDENTITY_FIELDS}
    if filters:
        derived = identity_from_filters(filters)
        for key, value in derived.items():
            if given[key] is not None and given[key] != value:
                raise Forbidden(f"{key} {given[key]!r} conflicts with the filters' {value!r}")
        if all(value is None for value in given.values()):
            given = {key: derived.get(key) for key in IDENTITY_FIELDS}
    if given["user_id"] is None and not sees_all_users(caller):
        given["user_id"] = caller.bound_user
        if given["user_id"] is None:
            raise Forbidden("this API key must name a user_id", param="user_id")
    scope = Scope.of(given).require()
    if scope.user_id is not None:
        _check_names(caller, scope.user_id, "user_id")
    for value in filter_user_ids(filters or {}):
        if not isinstance(value, str):
            raise BadRequest("user_id filter values must be strings", param="filters")
        _check_names(caller, validate_id(value, "user_id"), "filters")
    return scope


def _check_names(caller: Caller, user_id: str, param: str) -> None:
    caller.check_user(user_id)
    if not caller.may_name(user_id):
        raise Forbidden("this API key may not assert user ids", param=param)
