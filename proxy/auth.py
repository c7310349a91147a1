"""API keys: who is calling, and which users they may act for."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import Forbidden, Unauthorized
from .settings import ApiKey, AuthSettings


def hash_key(key: str) -> str:
    """The SHA-256 hex digest stored in the config instead of the key itself."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller. ``open_mode``: no keys configured (local use)."""

    name: str
    users: tuple[str, ...] = ("*",)
    admin: bool = False
    open_mode: bool = False
    may_assert_users: bool = True

    @property
    def bound_user(self) -> str | None:
        """The one user a key is bound to (a single non-wildcard entry)."""
        if len(self.users) == 1 and self.users[0] != "*":
            return self.users[0]
        return None

    def may_act_for(self, user_id: str) -> bool:
        return self.admin or "*" in self.users or user_id in self.users

    def may_name(self, user_id: str) -> bool:
        """Whether a request with this key may itself name ``user_id`` (memory routes): its
        bound user, or any user it may act for when it may assert users (admins may)."""
        if self.admin or user_id == self.bound_user:
            return True
        return self.may_assert_users and self.may_act_for(user_id)

    def check_user(self, user_id: str) -> None:
        if not self.may_act_for(user_id):
            raise Forbidden(f"this API key may not act for user {user_id!r}")


OPEN_CALLER = Caller(name="open", open_mode=True, admin=True)


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key from ``Authorization: Bearer`` or ``X-API-Key``."""
    header = headers.get("x-api-key")
    if header:
        return header.strip()
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class Authenticator:
    """Looks presented keys up by hash in constant time per candidate."""

    def __init__(self, settings: AuthSettings) -> None:
        self._keys: dict[str, ApiKey] = {k.key_sha256.lower(): k for k in settings.keys}

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        if not self._keys:
            return OPEN_CALLER
        key = presented_key(headers)
        if key is None:
            raise Unauthorized("missing API key: send Authorization: Bearer <key> or X-API-Key")
        digest = hash_key(key)
        for stored, entry in self._keys.items():
            if hmac.compare_digest(stored, digest):
                users = tuple(entry.users) if entry.users else (() if not entry.admin else ("*",))
                return Caller(
                    name=entry.name,
                    users=users,
                    admin=entry.admin,
                    may_assert_users=entry.may_assert_users,
                )
        raise Unauthorized("invalid API key")
