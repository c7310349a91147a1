"""The fake upstream's scripted memory manager: facts from a conversation, and update decisions.

Pure rules, no I/O, standing in for an LLM behind memproxy's two memory prompts:

- ``extract_conversation_facts``: the ``user:`` turns of a rendered conversation become
  third-person facts ("I live in Paris and work at Acme" → "User lives in Paris",
  "User works at Acme"); questions, greetings, small talk and requests to the assistant
  give none.
- ``decide_updates``: each new fact against the existing memories becomes an ADD, UPDATE,
  DELETE or NONE decision (see its docstring). A fact containing ``[[bogus-id]]`` is answered
  with an UPDATE of id ``"999"``, an id never offered.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from tests.fake_languages import foreign_fact

_ROLE_LINE_RE = re.compile(r"^(user|assistant|system|developer|tool|function): ?(.*)$")
# The fake's magic strings are not facts, except ``[[bogus-id]]``, which must reach the update.
_CONTROL_MAGIC_RE = re.compile(r"\[\[(?!bogus-id\]\])[^\[\]]*\]\]")
_BOGUS_ID = "[[bogus-id]]"


def parse_conversation(text: str) -> list[tuple[str, str]]:
    """``role: text`` lines back into ``(role, text)`` pairs; other lines continue a message."""
    turns: list[list[str]] = []
    for line in text.splitlines():
        match = _ROLE_LINE_RE.match(line)
        if match:
            turns.append([match.group(1), match.group(2)])
        elif turns:
            turns[-1][1] += "\n" + line
    return [(role, body) for role, body in turns]


# ---------------------------------------------------------------------------------------------
# Fact extraction
# ---------------------------------------------------------------------------------------------

_SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])|\s*\n+\s*")
_CLAUSE_SPLIT_RE = re.compile(r"\s*,\s*and\s+|\s+and\s+", re.IGNORECASE)
_GREETING_PREFIX_RE = re.compile(
    r"^(?:(?:hi|hello|hey|greetings)(?:\s+there)?(?:\s*[,!.:;-]+\s*|\s+|$)"
    r"|(?:ok|okay|well|so|oh|yes|yeah|no|sure|great|cool|alright|right|hmm|wow)"
    r"(?:\s*[,!.:;-]+\s*|$))",
    re.IGNORECASE,
)
_SMALL_TALK_STARTS: tuple[str, ...] = (
    "thanks",
    "thank you",
    "thx",
    "how are you",
    "how's it going",
    "how is it going",
    "nice to meet you",
    "good morning",
    "good afternoon",
    "good evening",
    "good night",
    "goodbye",
    "bye",
    "see you",
    "you're welcome",
    "you are welcome",
    "no problem",
    "sounds good",
    "got it",
    "have a nice",
    "have a good",
    "you're ",
    "you are ",
    "that's ",
    "that is ",
    "this is ",
    # instructions and requests to the assistant are not facts about the user
    "please",
    "can you",
    "could you",
    "would you",
    "will you",
    "let's",
    "let me know",
    "tell me",
    "write ",
    "give me",
    "show me",
    "explain",
    "summarize",
    "summarise",
    "translate",
    "list ",
    "describe",
    "generate",
    "help me",
    "remind me",
)
_ADVERBS = frozenset(
    "really also usually often always never still just absolutely definitely actually mostly "
    "totally sometimes truly currently now".split()
)
_MODALS = frozenset("can could should would will shall may might must was were did".split())
_IRREGULAR_PAST = frozenset(
    "went got had was were bought met saw made took began started left ran ate drank wrote "
    "read found gave felt kept lost paid said sold sent spent thought told won".split()
)
_IRREGULAR_THIRD = {"am": "is", "are": "is", "be": "is", "have": "has", "do": "does"}
_BASE_VERBS = (
    "live work like love hate prefer enjoy have own study play speak moved want need use "
    "drive eat drink read watch go run cook teach plan ride collect travel visit".split()
)
# A clause starting with one of these borrows the subject of the previous clause:
# "I live in Paris and work at Acme", "My sister lives in Lisbon and works as a nurse".
_I_CARRY_VERBS = frozenset([*_BASE_VERBS, "am"])

# (pattern, replacement) applied to the start of a clause, first match wins.
_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"^I(?:'ve|\s+have|'m|\s+am)?\s+(?:just\s+|recently\s+|finally\s+)?"
            r"(?:live|moved|relocated|living)\s+(?:back\s+)?(?:in|to)\s+",
            re.IGNORECASE,
        ),
        "User lives in ",
    ),
    (re.compile(r"^I(?:'m|\s+am)\s+", re.IGNORECASE), "User is "),
    (re.compile(r"^I(?:'ve|\s+have)\s+got\s+", re.IGNORECASE), "User has "),
    (re.compile(r"^I(?:'ve|\s+have)\s+", re.IGNORECASE), "User has "),
    (re.compile(r"^I(?:'d|\s+would)\s+", re.IGNORECASE), "User would "),
    (re.compile(r"^I(?:'ll|\s+will)\s+", re.IGNORECASE), "User will "),
    (re.compile(r"^I\s+(?:don't|do\s+not|dont)\s+", re.IGNORECASE), "User doesn't "),
    (re.compile(r"^I\s+(?:didn't|did\s+not|didnt)\s+", re.IGNORECASE), "User didn't "),
    (re.compile(r"^I\s+(?:can't|cannot|can\s+not|cant)\s+", re.IGNORECASE), "User can't "),
    (re.compile(r"^my\s+", re.IGNORECASE), "User's "),
)


def third_person(verb: str) -> str:
    """``like`` → ``likes``, ``watch`` → ``watches``, ``study`` → ``studies``."""
    lower = verb.lower()
    if lower in _IRREGULAR_THIRD:
        return _IRREGULAR_THIRD[lower]
    if lower in _MODALS or lower in _IRREGULAR_PAST or lower.endswith("ed"):
        return verb
    if lower.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if len(lower) > 1 and lower.endswith("y") and lower[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


_MY_CARRY_VERBS = frozenset([*(third_person(v) for v in _BASE_VERBS), "is", "was", "does"])


def rewrite_clause(clause: str) -> str:
    """First person → third person (``I'm X`` → ``User is X``, ``my X`` → ``User's X``...)."""
    for pattern, replacement in _REWRITES:
        rewritten, count = pattern.subn(replacement, clause, count=1)
        if count:
            return rewritten
    words = clause.split()
    if len(words) < 2 or words[0] not in ("I", "i"):
        return clause
    modifiers: list[str] = []
    index = 1
    while index < len(words):
        word = words[index].lower()
        if word == "no" and index + 1 < len(words) and words[index + 1].lower() == "longer":
            modifiers += words[index : index + 2]
            index += 2
        elif word in _ADVERBS:
            modifiers.append(words[index])
            index += 1
        else:
            break
    if index < len(words) and words[index].isalpha():
        words[index] = third_person(words[index])
    return " ".join(["User", *modifiers, *words[index:]])


def _strip_greetings(clause: str) -> str:
    previous = None
    while previous != clause:
        previous = clause
        clause = _GREETING_PREFIX_RE.sub("", clause, count=1).strip()
    return clause


def _is_small_talk(clause: str) -> bool:
    lower = clause.lower()
    return lower.startswith(_SMALL_TALK_STARTS)


def _clause_subject(clause: str) -> str | None:
    """``"I"`` for "I ..." / "I'm ...", ``"my sister"`` for "My sister ...", else None."""
    words = clause.split(maxsplit=2)
    first = words[0].lower()
    if first == "i" or first.startswith("i'"):
        return "I"
    if first == "my" and len(words) > 1:
        return "my " + words[1]
    return None


def extract_facts(user_text: str, today: date | None = None) -> list[str]:
    """The scripted extractor: third-person facts from one user message, in order, unique.
    German, Spanish and Chinese statements keep their language (``fake_languages``), their
    relative dates resolved against ``today``, the exchange date."""
    text = _CONTROL_MAGIC_RE.sub(" ", user_text.replace("\u2019", "'"))
    facts: list[str] = []
    seen: set[str] = set()
    for sentence in _SENTENCE_SPLIT_RE.split(text):
        sentence = sentence.strip()
        if not sentence:
            continue
        if "### Task:" in sentence:
            break  # a task prompt (title/tags generation...): nothing after it is about the user
        if sentence.endswith(("?", "？")):
            continue
        foreign = foreign_fact(sentence, today)
        if foreign is not None:
            if foreign.lower() not in seen:
                seen.add(foreign.lower())
                facts.append(foreign)
            continue
        subject: str | None = None
        for raw_clause in _CLAUSE_SPLIT_RE.split(sentence.rstrip(".!;:, ")):
            clause = _strip_greetings(raw_clause.strip(" \t,;:-"))
            if not clause or _is_small_talk(clause):
                continue
            first_word = clause.split(maxsplit=1)[0].lower()
            if subject == "I" and first_word in _I_CARRY_VERBS:
                clause = "I " + clause
            elif subject is not None and subject != "I" and first_word in _MY_CARRY_VERBS:
                clause = subject + " " + clause
            subject = _clause_subject(clause)
            fact = " ".join(rewrite_clause(clause).split()).rstrip(".!;:, ")
            if len(fact.split()) < 3:
                continue
            fact = fact[0].upper() + fact[1:]
            if fact.lower() not in seen:
                seen.add(fact.lower())
                facts.append(fact)
    return facts


def extract_conversation_facts(conversation: str, today: date | None = None) -> list[str]:
    """Facts from the ``user:`` turns of a rendered conversation, unique across turns."""
    facts: list[str] = []
    seen: set[str] = set()
    for role, text in parse_conversation(conversation):
        if role != "user":
            continue
        for fact in extract_facts(text, today):
            if fact.lower() not in seen:
                seen.add(fact.lower())
                facts.append(fact)
    return facts


# ---------------------------------------------------------------------------------------------
# Memory update
# ---------------------------------------------------------------------------------------------

KEY_MARKERS: tuple[str, ...] = (
    " lives in ",
    " wohnt in ",
    " vive en ",
    "住在",
    " is ",
    " works at ",
    " works as ",
    " likes ",
    " prefers ",
    " has ",
)
_NEGATION_PREFIXES: tuple[str, ...] = (
    "user no longer ",
    "user doesn't ",
    "user does not ",
    "user don't ",
)
STOPWORDS = frozenset(
    "a an the is are am was were be been being i me my mine user user's users you your do does "
    "did to of in on at for and or with by from what where who when how which that this it its "
    "s any anymore longer no not".split()
)
WORD_RE = re.compile(r"[\w']+")


def _normalise(text: str) -> str:
    return " ".join(text.split()).rstrip(".").lower()


def fact_key(text: str) -> str | None:
    """The slot a fact fills: its lower-cased prefix up to the earliest key marker, if any."""
    lower = " ".join(text.split()).lower()
    best: tuple[int, str] | None = None
    for marker in KEY_MARKERS:
        index = lower.find(marker)
        if index != -1 and (best is None or index < best[0]):
            best = (index, marker)
    if best is None:
        return None
    return lower[: best[0] + len(best[1])]


def _content_words(text: str) -> set[str]:
    return {word for word in WORD_RE.findall(text.lower()) if word not in STOPWORDS}


def _negated_object(fact: str) -> set[str] | None:
    """For "User no longer likes sushi" / "User doesn't like sushi": {"sushi"}; else None."""
    lower = _normalise(fact)
    for prefix in _NEGATION_PREFIXES:
        if lower.startswith(prefix):
            rest = lower[len(prefix) :].split(maxsplit=1)
            words = _content_words(rest[1]) if len(rest) > 1 else set()
            return words or _content_words(lower[len(prefix) :])
    return None


def decide_updates(
    existing: Iterable[Mapping[str, Any]], facts: Iterable[str]
) -> list[dict[str, Any]]:
    """The scripted memory manager: one ``{"id", "text", "event", ...}`` entry per fact.

    NONE for a known text, UPDATE for a fact filling the same slot (see ``fact_key``), DELETE
    for a negation ("User no longer ...") of a memory sharing its object words, else ADD. A
    memory is updated or deleted at most once per call.
    """
    memories = [(str(item.get("id", "")), str(item.get("text", ""))) for item in existing]
    consumed: set[str] = set()
    seen_facts: set[str] = set()
    result: list[dict[str, Any]] = []
    for fact in facts:
        normalised = _normalise(fact)
        if not normalised or normalised in seen_facts:
            continue
        seen_facts.add(normalised)
        if _BOGUS_ID in fact:
            result.append(
                {"id": "999", "text": fact, "event": "UPDATE", "old_memory": "unknown memory"}
            )
            continue
        same = next((m for m in memories if _normalise(m[1]) == normalised), None)
        if same is not None:
            result.append({"id": same[0], "text": same[1], "event": "NONE"})
            continue
        key = fact_key(fact)
        if key is not None:
            slot = next(
                (m for m in memories if m[0] not in consumed and fact_key(m[1]) == key), None
            )
            if slot is not None:
                consumed.add(slot[0])
                result.append(
                    {"id": slot[0], "text": fact, "event": "UPDATE", "old_memory": slot[1]}
                )
                continue
        negated = _negated_object(fact)
        if negated:
            target = next(
                (
                    m
                    for m in memories
                    if m[0] not in consumed
                    and _normalise(m[1]).startswith("user ")
                    and _negated_object(m[1]) is None
                    and negated <= _content_words(m[1])
                ),
                None,
            )
            if target is not None:
                consumed.add(target[0])
                result.append({"id": target[0], "text": target[1], "event": "DELETE"})
                continue
        result.append({"id": "new", "text": fact, "event": "ADD"})
    return result
