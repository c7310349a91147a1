"""Calendar dates a query names ("on 8 May, 2023", "in June 2023"), as day ranges for search.

Pure functions: ``search`` turns the ranges into a created-at prefilter for one more ranking,
so "what did I say on 8 May?" finds what was said that day even when the memory's text has no
date in it. Only dates with a year are taken; a bare "May 8" is ambiguous in a long history.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .timestamps import format_timestamp

_MONTHS = {
    "january": 1,
    "february": 2,
    "march": 3,
    "april": 4,
    "may": 5,
    "june": 6,
    "july": 7,
    "august": 8,
    "september": 9,
    "october": 10,
    "november": 11,
    "december": 12,
    "jan": 1,
    "feb": 2,
    "mar": 3,
    "apr": 4,
    "jun": 6,
    "jul": 7,
    "aug": 8,
    "sep": 9,
    "sept": 9,
    "oct": 10,
    "nov": 11,
    "dec": 12,
}
_MONTH = r"(?P<month>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>\d{4})"
_PATTERNS = (
    re.compile(rf"\b{_DAY}(?: of)? {_MONTH},? {_YEAR}\b", re.IGNORECASE),  # 8 May, 2023
    re.compile(rf"\b{_MONTH} {_DAY},? {_YEAR}\b", re.IGNORECASE),  # May 8th, 2023
    re.compile(r"\b(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})(?=T|\b)"),  # 2023-05-08
)
# Years a memory can plausibly be about; also keeps the windows (± up to a year of slack)
# inside the stored timestamps' four-digit years.
_YEARS = (1900, 2999)
_MONTH_YEAR = re.compile(rf"\b{_MONTH},? {_YEAR}\b", re.IGNORECASE)  # June 2023
_FOUR_DIGITS = re.compile(r"\d{4}")  # every pattern needs a year: most queries have none


@dataclass(frozen=True, slots=True)
class DayRange:
    """Whole days from ``first`` to ``last``, both included."""

    first: date
    last: date


def named_days(text: str) -> list[DayRange]:
    """The days and months ``text`` names, in order of appearance, without repeats.

    A month with a year ("in June 2023") is the whole month, unless the same words are part
    of a full date ("8 June 2023"). Impossible dates ("31 February 2023") are ignored.
    """
    if _FOUR_DIGITS.search(text) is None:
        return []
    found: list[tuple[int, DayRange]] = []
    taken: list[tuple[int, int]] = []
    for pattern in _PATTERNS:
        for match in pattern.finditer(text):
            taken.append(match.span())
            day = _day(match.group("year"), match.group("month"), match.group("day"))
            if day is not None:
                found.append((match.start(), DayRange(day, day)))
    for match in _MONTH_YEAR.finditer(text):
        if any(start <= match.start() < end for start, end in taken):
            continue
        first = _day(match.group("year"), match.group("month"), "1")
        if first is not None:
            following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
            found.append((match.start(), DayRange(first, following - timedelta(days=1))))
    found.sort(key=lambda item: item[0])
    return list(dict.fromkeys(day_range for _, day_range in found))


def created_bounds(ranges: list[DayRange], *, slack_days: int = 0) -> list[tuple[str, str]]:
    """Each range widened by ``slack_days``, as stored timestamps ``[first, last)``."""
    slack = timedelta(days=slack_days)
    return [(_midnight(r.first - slack), _midnight(r.last + slack, 1)) for r in ranges]


def created_within(ranges: list[DayRange], *, slack_days: int = 0) -> dict[str, Any]:
    """A Mem0-style filter: ``created_at`` inside any range, widened by ``slack_days``."""
    clauses = [
        {"created_at": {"gte": first, "lt": last}}
        for first, last in created_bounds(ranges, slack_days=slack_days)
    ]
    return clauses[0] if len(clauses) == 1 else {"OR": clauses}


def _day(year: str, month: str, day: str) -> date | None:
    number = int(month) if month.isdigit() else _MONTHS.get(month.lower())
    if number is None or not _YEARS[0] <= int(year) <= _YEARS[1]:
        return None
    try:
        return date(int(year), number, int(day))
    except ValueError:
        return None


def _midnight(day: date, plus_days: int = 0) -> str:
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=plus_days)
    return format_timestamp(moment)
