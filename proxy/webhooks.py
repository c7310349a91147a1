"""Webhooks: configured endpoints receive ``memory.added`` / ``memory.updated`` /
``memory.deleted`` events, signed with HMAC-SHA256, delivered by the durable queue
(docs/webhooks.md).

Each change of each subscribed endpoint is one queue job (id from the change: enqueueing it
twice is a no-op) in the scope ``webhook/<endpoint>/<owner>``: one owner's events reach one
endpoint in order, and a failing endpoint's retries hold back only that owner's events to it.
Delivery is at-least-once; the event id lets receivers drop repeats. Targets are checked on the
address actually connected to (``memory_core.url_fetch.GuardedBackend``): no private address
unless the endpoint says ``allow_private``; redirects are never followed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import httpcore
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from memory_core.changes import MemoryChange
from memory_core.errors import ConfigError, InvalidInput, MemoryCoreError
from memory_core.queue import Job
from memory_core.url_fetch import GuardedBackend, PrivateAddress

log = logging.getLogger("proxy.webhooks")

WebhookEvent = Literal["memory.added", "memory.updated", "memory.deleted"]
EVENT_TYPES: dict[str, WebhookEvent] = {
    "ADD": "memory.added",
    "UPDATE": "memory.updated",
    "DELETE": "memory.deleted",
}
ALL_EVENTS: tuple[WebhookEvent, ...] = ("memory.added", "memory.updated", "memory.deleted")
WEBHOOK_JOB = "webhook"
SIGNATURE_HEADER = "X-Memproxy-Signature"
USER_AGENT = "memproxy-webhooks"
MAX_RESPONSE_BYTES = 64 * 1024  # what is read of a receiver's answer (then the line closes)


class WebhookSettings(BaseModel):
    """One ``webhooks:`` entry. The secret: ``secret`` (may be ``os.environ/NAME``) or
    ``secret_env`` (the variable's name); never logged nor returned by any API."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048)
    secret: SecretStr | None = None
    secret_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    events: list[WebhookEvent] = Field(default_factory=lambda: list(ALL_EVENTS), min_length=1)
    # Loopback, private and link-local targets are refused unless this is set.
    allow_private: bool = False
    timeout_s: float = Field(default=10.0, gt=0, le=60)
    name: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials (sign with the secret instead)")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookSettings:
        if (self.secret is None) == (self.secret_env is None):
            raise ValueError("give exactly one of secret or secret_env")
        return self

    def secret_bytes(self) -> bytes:
        """The signing key; ``ConfigError`` when ``secret_env`` names an unset variable or
        the secret is shorter than 16 characters."""
        if self.secret is not None:
            value = self.secret.get_secret_value()
        else:
            assert self.secret_env is not None
            if self.secret_env not in os.environ:
                raise ConfigError(f"webhook secret_env {self.secret_env} is not set")
            value = os.environ[self.secret_env]
        if len(value) < 16:
            raise ConfigError(f"the secret of webhook {self.label} must have 16+ characters")
        return value.encode()

    @property
    def endpoint_id(self) -> str:
        """Stable across restarts (the queued jobs name it, never the URL or the secret)."""
        return hashlib.sha256(self.url.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """For logs and job results: the name, else scheme://host of the URL (no path or query,
        which may hold tokens)."""
        parts = urlsplit(self.url)
        return self.name or f"{parts.scheme}://{parts.netloc}"


class DeliveryFailed(MemoryCoreError):
    """The receiver did not take the event (network error, timeout, non-2xx): retried."""


# ---- pure: events and signatures ------------------------------------------------------------


def event_of(change: MemoryChange) -> dict[str, Any]:
    """The JSON event of one stored change (its id is the change's, stable across retries)."""
    return {
        "id": "evt_" + change.change_id.replace("-", ""),
        "type": EVENT_TYPES[change.event],
        "created_at": change.at,
        "data": {
            "id": change.memory_id,
            "memory": change.new if change.event != "DELETE" else change.old,
            "previous_memory": change.old if change.event == "UPDATE" else None,
            **change.scope.as_dict(),
            "event": change.event,
            "source": change.source or ("learning" if change.job_id else "api"),
        },
    }


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """``t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>." + body>``."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(
    secret: bytes, header: str, body: bytes, *, tolerance_s: float = 300, now: float | None = None
) -> bool:
    """What a receiver checks: a ``v1`` signature of this body and a timestamp within
    ``tolerance_s`` of ``now`` (replays of old deliveries fail)."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    stamps = fields.get("t") or []
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    timestamp = int(stamps[0])
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).rsplit("v1=", 1)[1]
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1") or [])


def owner_key(change: MemoryChange) -> str:
    """Whose events one delivery scope orders: the user, else the agent, the run, the app."""
    scope = change.scope
    if scope.user_id is not None:
        return scope.user_id
    for field in ("agent_id", "run_id", "app_id"):
        value = getattr(scope, field)
        if value is not None:
            return f"{field.removesuffix('_id')}:{value}"
    return "none"


def delivery_jobs(
    endpoints: Sequence[WebhookSettings], changes: Sequence[MemoryChange]
) -> list[tuple[str, str, dict[str, Any]]]:
    """``(job id, scope key, payload)`` of each change each endpoint subscribes to."""
    jobs = []
    for change in changes:
        event_type = EVENT_TYPES.get(change.event)
        if event_type is None:
            continue
        owner = owner_key(change)
        event = event_of(change)
        for endpoint in endpoints:
            if event_type not in endpoint.events:
                continue
            target = endpoint.endpoint_id
            payload = {"kind": WEBHOOK_JOB, "endpoint": target, "event": event}
            jobs.append((f"webhook:{target}:{event['id']}", f"webhook/{target}/{owner}", payload))
    return jobs


# ---- delivery -----------------------------------------------------------------------------


class WebhookSender:
    """Delivers queued webhook jobs to the configured endpoints (secrets read at start)."""

    def __init__(self, endpoints: Sequence[WebhookSettings]) -> None:
        self.endpoints = list(endpoints)
        self._by_id = {e.endpoint_id: (e, e.secret_bytes()) for e in self.endpoints}
        if len(self._by_id) != len(self.endpoints):
            raise ConfigError("two webhooks have the same url")

    async def deliver(self, job: Job) -> dict[str, Any]:
        """POST the job's event, signed; the job's result says where and what came back."""
        found = self._by_id.get(str(job.payload.get("endpoint")))
        event = job.payload.get("event")
        if not isinstance(event, Mapping):
            raise InvalidInput("a webhook job without its event")
        if found is None:  # the endpoint left the config since: nobody to deliver to
            return {"status": "dropped", "event_id": event.get("id"), "reason": "no endpoint"}
        endpoint, secret = found
        body = orjson.dumps(event)
        timestamp = int(time.time())
        headers = [
            (b"Content-Type", b"application/json"),
            (b"User-Agent", USER_AGENT.encode()),
            (b"X-Memproxy-Event", str(event.get("type")).encode()),
            (b"X-Memproxy-Event-Id", str(event.get("id")).encode()),
            (b"X-Memproxy-Delivery-Attempt", str(job.attempts).encode()),
            (SIGNATURE_HEADER.encode(), sign(secret, timestamp, body).encode()),
        ]
        status = await self._post(endpoint, headers, body)
        log.info("webhook %s got %s (HTTP %d)", endpoint.label, event.get("id"), status)
        return {
            "status": "delivered",
            "endpoint": endpoint.label,
            "event_id": event.get("id"),
            "event": event.get("type"),
            "http_status": status,
        }

    async def _post(
        self, endpoint: WebhookSettings, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> int:
        host = urlsplit(endpoint.url).hostname or ""
        backend = GuardedBackend([host] if endpoint.allow_private else [])
        timeout = endpoint.timeout_s
        try:
            async with (
                asyncio.timeout(timeout),  # the whole delivery, a trickling answer included
                httpcore.AsyncConnectionPool(network_backend=backend, retries=0) as pool,
                pool.stream("POST", endpoint.url, headers=headers, content=body) as response,
            ):
                read = 0
                async for chunk in response.aiter_stream():
                    read += len(chunk)
                    if read > MAX_RESPONSE_BYTES:
                        break
                status = response.status
        except PrivateAddress as exc:
            # Permanent (InvalidInput): straight to the dead letters, never retried.
            raise PrivateAddress(
                f"webhook {endpoint.label}: {exc} (set allow_private to deliver there)"
            ) from exc
        except (httpcore.TimeoutException, TimeoutError) as exc:
            raise DeliveryFailed(
                f"webhook {endpoint.label}: timed out after {timeout:g} s"
            ) from exc
        except (httpcore.NetworkError, httpcore.ProtocolError, OSError, InvalidInput) as exc:
            message = f"webhook {endpoint.label}: {type(exc).__name__}: {exc}"
            raise DeliveryFailed(message) from exc
        if not 200 <= status < 300:
            # 3xx included: a redirect is never followed (it could point anywhere).
            raise DeliveryFailed(f"webhook {endpoint.label} answered HTTP {status}")
        return status


__all__ = [
    "EVENT_TYPES",
    "SIGNATURE_HEADER",
    "WEBHOOK_JOB",
    "DeliveryFailed",
    "WebhookSender",
    "WebhookSettings",
    "delivery_jobs",
    "event_of",
    "sign",
    "verify",
]
