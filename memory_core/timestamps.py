"""The one stored timestamp format, and parsing what callers give (ISO-8601 or epoch seconds)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .errors import InvalidFilter, InvalidInput


def format_timestamp(moment: datetime) -> str:
    """The one stored timestamp format: fixed-width UTC, so string order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def now_stamp() -> str:
    return format_timestamp(datetime.now(UTC))


def normalize_timestamp(value: Any) -> str:
    """Parse an ISO date/time (or epoch seconds) into the stored UTC ISO format."""
    if isinstance(value, bool):
        raise InvalidFilter("timestamps must be ISO-8601 strings or epoch seconds")
    if isinstance(value, int | float):
        try:
            moment = datetime.fromtimestamp(float(value), tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise InvalidFilter(f"epoch seconds out of range: {value!r}") from exc
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidFilter(f"not an ISO-8601 timestamp: {value[:64]!r}") from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    else:
        raise InvalidFilter("timestamps must be ISO-8601 strings or epoch seconds")
    try:
        return format_timestamp(moment)
    except OverflowError as exc:  # e.g. year 9999 with a negative offset
        raise InvalidFilter(f"timestamp out of range: {value!r}") from exc


def exchange_moment(timestamp: str | float | datetime | None) -> datetime:
    """When an exchange happened: now, a datetime (UTC if naive), or a parsed timestamp."""
    if timestamp is None:
        return datetime.now(UTC)
    if isinstance(timestamp, datetime):
        return timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
    try:
        return datetime.fromisoformat(normalize_timestamp(timestamp))
    except InvalidFilter as exc:  # same parser as filters, but here it is bad input
        raise InvalidInput(f"timestamp: {exc}") from exc


__all__ = ["exchange_moment", "format_timestamp", "normalize_timestamp", "now_stamp"]
