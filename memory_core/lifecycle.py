"""A memory's life beyond its text: when it expires, whether extraction may change it
(immutable), and the feedback given on it. Pure: parsing what callers give, and the checks
every read path applies (the store's SQL, the scope cache's masks and the in-memory store all
judge rows by these definitions).

- ``expires_at``: the stored instant (UTC, the one timestamp format) from which a memory is
  expired. Mem0's ``expiration_date`` (``YYYY-MM-DD``, UTC, inclusive of the day) sets it to
  the next midnight; ``ttl_s`` to now plus that many seconds.
- ``immutable``: extraction's UPDATE/DELETE of it become NONE (``IMMUTABLE_REASON``).
- ``feedback``: Mem0's ``POSITIVE`` / ``NEGATIVE`` / ``VERY_NEGATIVE``. Negative lowers the
  memory in the fusion (``fusion_weights.FEEDBACK_WEIGHTS``); very negative hides it from
  search and recall (it stays listed, so it can be seen and the feedback taken back).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .config import MAX_TTL_S
from .errors import ImmutableMemory, InvalidInput
from .extraction import Decision
from .storage import Row
from .timestamps import format_timestamp
from .types import AddResult

FEEDBACK = ("POSITIVE", "NEGATIVE", "VERY_NEGATIVE")
HIDDEN_FEEDBACK = "VERY_NEGATIVE"
MAX_FEEDBACK_REASON_CHARS = 1000
MAX_CATEGORIES = 16
MAX_CATEGORY_CHARS = 64
IMMUTABLE_REASON = "immutable: extraction may not change or delete this memory"
EXPIRED_SOURCE = "expired"  # the history ``source`` of a purge by maintenance

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_expiration_date(value: str) -> str:
    """``YYYY-MM-DD`` (UTC, the day included) as the stored ``expires_at``: the next
    midnight. Strict: anything else is ``InvalidInput``."""
    if not isinstance(value, str) or _DATE.fullmatch(value) is None:
        raise InvalidInput("expiration_date must be a date as YYYY-MM-DD", param="expiration_date")
    try:
        day = date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(f"expiration_date: {exc}", param="expiration_date") from exc
    if day == date.max:
        raise InvalidInput("expiration_date is out of range", param="expiration_date")
    midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    return format_timestamp(midnight)


def expiry_after(ttl_s: int, now: datetime) -> str:
    """``now`` plus ``ttl_s`` seconds (1 s to ``MAX_TTL_S``) as the stored ``expires_at``."""
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 1 <= ttl_s <= MAX_TTL_S:
        raise InvalidInput(f"ttl_s must be an integer from 1 to {MAX_TTL_S}", param="ttl_s")
    return format_timestamp(now + timedelta(seconds=ttl_s))


def requested_expiry(expiration_date: str | None, ttl_s: int | None, now: datetime) -> str | None:
    """The ``expires_at`` a caller asked for (one of the two, or neither)."""
    if expiration_date is not None and ttl_s is not None:
        raise InvalidInput("give expiration_date or ttl_s, not both", param="ttl_s")
    if expiration_date is not None:
        return parse_expiration_date(expiration_date)
    if ttl_s is not None:
        return expiry_after(ttl_s, now)
    return None


def lifecycle_changes(
    expiration_date: str | None,
    ttl_s: int | None,
    clear_expiration: bool,
    immutable: bool | None,
    now: datetime,
) -> dict[str, Any]:
    """The lifecycle columns an update sets: ``expires_at`` (None when cleared) and
    ``immutable``, each only when asked."""
    if immutable is not None and not isinstance(immutable, bool):
        raise InvalidInput("immutable must be true or false", param="immutable")
    changes: dict[str, Any] = {}
    expires_at = requested_expiry(expiration_date, ttl_s, now)
    if clear_expiration and expires_at is not None:
        raise InvalidInput("an expiration and no expiration at once", param="ttl_s")
    if clear_expiration or expires_at is not None:
        changes["expires_at"] = expires_at
    if immutable is not None:
        changes["immutable"] = immutable
    return changes


def check_text_change(current: Mapping[str, Any], text: str | None, immutable: bool | None) -> None:
    """Refuse a new text for an immutable memory unless the same change lifts it."""
    if (
        current.get("immutable")
        and immutable is not False
        and text not in (None, current["memory"])
    ):
        raise ImmutableMemory(
            f"memory {current['id']} is immutable; send immutable: false with the new text "
            "to change it"
        )


def default_expiry(
    categories: Sequence[str], by_category: Mapping[str, int], now: datetime
) -> str | None:
    """The configured expiry of a memory in ``categories``: the shortest of their TTLs."""
    ttls = [by_category[c] for c in categories if c in by_category]
    return format_timestamp(now + timedelta(seconds=min(ttls))) if ttls else None


def expiration_day(expires_at: str | None) -> str | None:
    """The last UTC day a memory is visible (Mem0's ``expiration_date``)."""
    if not expires_at:
        return None
    moment = datetime.fromisoformat(expires_at) - timedelta(microseconds=1)
    return moment.date().isoformat()


def is_expired(row: Mapping[str, Any], at: str) -> bool:
    """True when ``row`` is expired at the stored timestamp ``at``."""
    expires = row.get("expires_at")
    return isinstance(expires, str) and bool(expires) and expires <= at


def is_hidden(row: Mapping[str, Any]) -> bool:
    """True when very negative feedback hides ``row`` from search and recall."""
    return row.get("feedback") == HIDDEN_FEEDBACK


def check_feedback(feedback: str | None, reason: str | None) -> tuple[str | None, str | None]:
    """Mem0's feedback value (any case; None takes it back) and its optional reason."""
    value = None
    if feedback is not None:
        if not isinstance(feedback, str) or feedback.upper() not in FEEDBACK:
            raise InvalidInput(
                f"feedback must be one of {', '.join(FEEDBACK)} (or null)", param="feedback"
            )
        value = feedback.upper()
    if reason is not None:
        if not isinstance(reason, str) or len(reason) > MAX_FEEDBACK_REASON_CHARS:
            raise InvalidInput(
                f"feedback_reason must be a string of at most {MAX_FEEDBACK_REASON_CHARS} "
                "characters",
                param="feedback_reason",
            )
        reason = " ".join(reason.split()) or None
    return value, reason if value is not None else None


def check_categories(categories: Sequence[str] | None) -> tuple[str, ...]:
    """Category labels a caller gives an add: unique, each 1-64 characters, at most 16."""
    if categories is None:
        return ()
    if isinstance(categories, str) or not isinstance(categories, Sequence):
        raise InvalidInput("categories must be a list of strings", param="categories")
    labels = list(dict.fromkeys(categories))
    if len(labels) > MAX_CATEGORIES or not all(
        isinstance(c, str) and 1 <= len(c.strip()) <= MAX_CATEGORY_CHARS for c in labels
    ):
        raise InvalidInput(
            f"categories: at most {MAX_CATEGORIES} strings of 1-{MAX_CATEGORY_CHARS} characters",
            param="categories",
        )
    return tuple(c.strip() for c in labels)


def protect_immutable(
    decisions: Sequence[Decision], existing: Mapping[str, Row]
) -> tuple[list[Decision], list[AddResult]]:
    """``decisions`` with every UPDATE or DELETE of an immutable memory of ``existing``
    (whichever way they were made: the LLM's answer, the near-duplicate fold) turned into a
    NONE with ``IMMUTABLE_REASON`` (what the learning log shows); an UPDATE's text becomes an
    ADD, so the contradiction is kept as a memory of its own. Also the refused ones as NONE
    results for the add's answer."""
    kept: list[Decision] = []
    refused: list[AddResult] = []
    for decision in decisions:
        row = existing.get(decision.memory_id or "")
        if decision.event in ("UPDATE", "DELETE") and row is not None and row.get("immutable"):
            kept.append(Decision("NONE", row["memory"], row["id"], reason=IMMUTABLE_REASON))
            refused.append(
                AddResult(id=row["id"], memory=row["memory"], event="NONE", reason=IMMUTABLE_REASON)
            )
            if decision.event == "UPDATE":
                kept.append(Decision("ADD", decision.text, reason=decision.reason))
        else:
            kept.append(decision)
    return kept, refused


__all__ = [
    "EXPIRED_SOURCE",
    "FEEDBACK",
    "HIDDEN_FEEDBACK",
    "IMMUTABLE_REASON",
    "MAX_TTL_S",
    "check_categories",
    "check_feedback",
    "check_text_change",
    "default_expiry",
    "expiration_day",
    "expiry_after",
    "is_expired",
    "is_hidden",
    "lifecycle_changes",
    "parse_expiration_date",
    "protect_immutable",
    "requested_expiry",
]
