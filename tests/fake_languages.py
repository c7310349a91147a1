"""The scripted extractor's other languages, as the extraction prompt asks a model to write
them: a German, Spanish or Chinese first-person statement becomes a third-person fact in the
same language, never translated, its relative day words resolved against the exchange date.

Table-driven: each language lists how a statement starts (first person) and what that start
becomes, and its words for "today" / "yesterday" with what they become."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(frozen=True, slots=True)
class Language:
    starts: tuple[tuple[str, str], ...]  # (regex at the sentence start, replacement)
    days: tuple[tuple[str, int, str], ...]  # (word, days before the exchange, "{date}" form)


LANGUAGES: dict[str, Language] = {
    "de": Language(
        starts=(
            (r"Meine (\w+)", r"Die \1 des Nutzers"),
            (r"Mein (\w+)", r"Der \1 des Nutzers"),
            (r"Ich wohne", "Der Nutzer wohnt"),
            (r"Ich arbeite", "Der Nutzer arbeitet"),
            (r"Ich habe", "Der Nutzer hat"),
            (r"Ich bin", "Der Nutzer ist"),
            (r"Ich spiele", "Der Nutzer spielt"),
        ),
        days=(("gestern", 1, "am {date}"), ("heute", 0, "am {date}")),
    ),
    "es": Language(
        starts=(
            (r"Mi hermana", "La hermana del usuario"),
            (r"Mi hermano", "El hermano del usuario"),
            (r"Mi (\w+)", r"El \1 del usuario"),
            (r"Vivo", "El usuario vive"),
            (r"Trabajo", "El usuario trabaja"),
            (r"Tengo", "El usuario tiene"),
            (r"Soy", "El usuario es"),
            (r"Empecé", "El usuario empezó"),
        ),
        days=(("ayer", 1, "el {date}"), ("hoy", 0, "el {date}")),
    ),
    "zh": Language(
        starts=((r"我的", "用户的"), (r"我", "用户")),
        days=(("昨天", 1, "{date}"), ("今天", 0, "{date}")),
    ),
}
_EXCHANGE_DATE_RE = re.compile(r"Exchange date: (\d{4}-\d{2}-\d{2})")


def exchange_date(prompt: str) -> date | None:
    """The date the extraction prompt gives the exchange (the user turn's ``Exchange date:``)."""
    found = _EXCHANGE_DATE_RE.findall(prompt)
    return date.fromisoformat(found[-1]) if found else None


def foreign_fact(sentence: str, today: date | None) -> str | None:
    """The fact a German / Spanish / Chinese first-person ``sentence`` states, in its own
    language; None for any other sentence (the English rules take it)."""
    text = sentence.strip().rstrip(".!。！")
    for language in LANGUAGES.values():
        for start, replacement in language.starts:
            match = re.match(start, text)
            if match is None:
                continue
            fact = match.expand(replacement) + text[match.end() :]
            for word, days_before, form in language.days:
                if today is not None and word in fact:
                    when = (today - timedelta(days=days_before)).isoformat()
                    # Chinese writes no spaces: its day words are matched anywhere.
                    bounded = rf"(?<!\w){word}(?!\w)" if word.isascii() else word
                    fact = re.sub(bounded, form.format(date=when), fact)
            return fact
    return None
