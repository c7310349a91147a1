"""When two memory texts are the same fact: judged on content, not on surface.

Embeddings of near-identical sentences are near-identical whatever the one token that differs
("wifi password hunter7" / "tiger7": 0.971), so similarity alone cannot tell a paraphrase from
a different fact. Two texts are duplicates only when they are similar enough *and* carry the
same distinguishing tokens: numbers, codes, names and the values of "password"/"code"/"named".
"""

from __future__ import annotations

import re

_WORDS = re.compile(r"\w+")
_TOKENS = re.compile(r"[\w'’-]+")
# A word after one of these is a value, whatever its case ("password hunter", "named rex").
_VALUE_MARKERS = frozenset(
    "password passwort passcode pin code token key id username login named called number "
    "nummer numéro número code-name handle email plate".split()
)
_LINKS = frozenset("is was are = : ist est es é".split())
_SENTENCE_STARTS = frozenset({"user", "user's", "users", "i", "my"})


def distinguishing_tokens(text: str) -> frozenset[str]:
    """Casefolded tokens that make a fact this fact: anything with a digit (dates, amounts,
    codes like "n40e75c10", "A7"), capitalised words past the first (names, places), and the
    word after a value marker ("password", "code", "named"...)."""
    tokens = _TOKENS.findall(text)
    found: set[str] = set()
    after_marker = False
    for index, token in enumerate(tokens):
        folded = token.casefold().strip("'’-")
        if after_marker and folded in _LINKS:
            continue  # "password is hunter": the value is after the link word
        if any(char.isdigit() for char in token):
            found.add(folded)
        elif index > 0 and token[:1].isupper() and folded not in _SENTENCE_STARTS:
            found.add(folded)
        elif after_marker:
            found.add(folded)
        after_marker = folded in _VALUE_MARKERS
    return frozenset(found)


def is_near_duplicate(similarity: float, new: str, old: str, threshold: float) -> bool:
    """Same fact in other words: cosine >= ``threshold`` and the same distinguishing tokens
    (a differing number, code or name is a different fact: "locker code A7" vs "B7"), or one
    text saying all the other says and more ("lives in Lisbon" / "in Lisbon, Portugal")."""
    if similarity < threshold:
        return False
    same = distinguishing_tokens(new) == distinguishing_tokens(old)
    return same or refines(new, old) or refines(old, new)


def refines(new: str, old: str) -> bool:
    """True when ``new`` says everything ``old`` says and more (all its words, plus others)."""
    new_words = set(_WORDS.findall(new.lower()))
    old_words = set(_WORDS.findall(old.lower()))
    return old_words < new_words


def fold_target(similarity: float, new: str, old: str, threshold: float) -> str | None:
    """How a new text relates to a stored one: ``"refinement"`` (similar, and it says all the
    stored one says and more: an UPDATE), ``"duplicate"`` (the same fact: NONE), or None."""
    if similarity >= threshold and refines(new, old):
        return "refinement"
    return "duplicate" if is_near_duplicate(similarity, new, old, threshold) else None


__all__ = ["distinguishing_tokens", "fold_target", "is_near_duplicate", "refines"]
