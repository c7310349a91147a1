"""Open WebUI's signed user header (``FORWARD_USER_INFO_HEADER_JWT_SECRET``): an HS256 JWT,
verified with the standard library only (docs/chat-uis.md)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

import orjson

from .errors import Unauthorized
from .settings import OpenWebUISettings


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def verify_hs256(
    token: str,
    secret: bytes,
    *,
    issuer: str | None = None,
    leeway_s: float = 30.0,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of a JWT signed with HS256 and ``secret``; ``Unauthorized`` for anything else
    (another algorithm, a bad signature, no or a past ``exp``, a future ``nbf``/``iat``, another
    issuer)."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise Unauthorized("user JWT is malformed")
    try:
        header = orjson.loads(_b64url(parts[0]))
        signature = _b64url(parts[2])
        signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    except ValueError as exc:  # binascii.Error, JSONDecodeError and UnicodeError are ValueErrors
        raise Unauthorized("user JWT is malformed") from exc
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise Unauthorized("user JWT must be signed with HS256")
    expected = hmac.new(secret, signing_input, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise Unauthorized("user JWT signature does not match the configured secret")
    try:
        claims = orjson.loads(_b64url(parts[1]))
    except ValueError as exc:
        raise Unauthorized("user JWT is malformed") from exc
    if not isinstance(claims, dict):
        raise Unauthorized("user JWT is malformed")
    now = time.time() if now is None else now
    exp = _number(claims.get("exp"))
    if exp is None:
        raise Unauthorized("user JWT has no expiry")
    if now > exp + leeway_s:
        raise Unauthorized("user JWT has expired")
    for field in ("nbf", "iat"):
        stamp = _number(claims.get(field))
        if stamp is not None and stamp > now + leeway_s:
            raise Unauthorized(f"user JWT {field} is in the future")
    if issuer is not None and claims.get("iss") != issuer:
        raise Unauthorized("user JWT has another issuer")
    return claims


def signed_user_claim(
    headers: Mapping[str, str], openwebui: OpenWebUISettings
) -> tuple[str, Any] | None:
    """The user claim of a verified Open WebUI user JWT, as (where it came from, its raw
    value); None without a header or a configured secret. Whether the value is a valid user
    id is the caller's check, as for every other claim."""
    token = headers.get(openwebui.jwt_header.lower())
    if not token or openwebui.jwt_secret is None:
        return None
    claims = verify_hs256(
        token.strip(),
        openwebui.jwt_secret.get_secret_value().encode("utf-8"),
        issuer=openwebui.jwt_issuer,
        leeway_s=openwebui.jwt_leeway_s,
    )
    claim = "sub" if openwebui.user_id_from == "id" else "email"
    return f"{openwebui.jwt_header} {claim}", claims.get(claim)
