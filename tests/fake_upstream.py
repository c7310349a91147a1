"""A fake OpenAI-compatible LLM server on loopback, used by tests and benchmarks.

It is a real HTTP server (a Starlette app run by uvicorn) that answers:

- ``GET /v1/models``, ``GET /v1/models/{id}``
- ``POST /v1/chat/completions`` (non-stream and SSE stream, ``n``, tools, JSON mode), with a
  scripted answer for memproxy's two memory prompts (fact extraction and memory update)
- ``POST /v1/embeddings`` (deterministic feature-hashing vectors)
- ``POST /_control``, ``GET /_control``, ``GET /_requests``, ``GET /_stats``, ``GET /health``

The same routes also answer without the ``/v1`` prefix.

Normal chats answer ``"ECHO: " + <last user text>``; a ``<memories>...</memories>`` block in a
system/developer/user message adds ``" | MEMORIES: " + <its lines joined by " ; ">``.

Magic strings in the last user message of a normal chat:

- ``[[fail:503]]``: answer that HTTP status with an OpenAI error body
- ``[[sleep:2.5]]``: wait that many seconds before answering
- ``[[stream-abort]]``: in stream mode, send 2 chunks then drop the connection

Magic strings in the conversation of an extraction call: ``[[extract-fail:500]]``,
``[[extract-sleep:1.5]]``, ``[[extract-invalid-json]]``. A fact containing ``[[bogus-id]]``
makes the update call answer an UPDATE for id ``"999"`` (never offered).

Use it in-process (``with FakeUpstream() as fake: ... fake.url``) or as a separate process
(``python -m tests.fake_upstream --port 0``, which prints ``FAKE_UPSTREAM_URL=...``).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import hashlib
import itertools
import logging
import math
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import TracebackType
from typing import Any, Literal

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

Json = dict[str, Any]
RequestKind = Literal["chat", "extract", "update", "embeddings", "models"]

EXTRACTION_PREFIX = "You are memproxy's fact extractor."
UPDATE_PREFIX = "You are memproxy's memory manager."
DEFAULT_EMBEDDING_DIM = 64
MODELS: tuple[str, ...] = ("fake-model", "fake-model-2", "fake-embedding")
INVALID_JSON_PROSE = (
    "Sure! Here are the facts I found in this conversation: the user shared a few details "
    "about their life. Let me know if you need anything else."
)

# ---------------------------------------------------------------------------------------------
# Text helpers (pure)
# ---------------------------------------------------------------------------------------------

_MEMORIES_RE = re.compile(r"<memories>(.*?)</memories>", re.DOTALL)
_FAIL_RE = re.compile(r"\[\[fail:(\d{3})\]\]")
_SLEEP_RE = re.compile(r"\[\[sleep:(\d+(?:\.\d+)?)\]\]")
_STREAM_ABORT = "[[stream-abort]]"
_EXTRACT_FAIL_RE = re.compile(r"\[\[extract-fail:(\d{3})\]\]")
_EXTRACT_SLEEP_RE = re.compile(r"\[\[extract-sleep:(\d+(?:\.\d+)?)\]\]")
_EXTRACT_INVALID = "[[extract-invalid-json]]"
_BOGUS_ID = "[[bogus-id]]"
_CONTROL_MAGIC_RE = re.compile(r"\[\[(?!bogus-id\]\])[^\[\]]*\]\]")
_WORD_BOUNDARY_RE = re.compile(r"(?<=\s)(?=\S)")
_ROLE_LINE_RE = re.compile(r"^(user|assistant|system|developer|tool|function): ?(.*)$")


def message_text(message: Mapping[str, Any]) -> str:
    """The plain text of a chat message (text parts joined by newlines)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of the last ``user`` message ("" when there is none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return ""


def injected_memories(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The ``<memories>`` blocks of system/developer/user messages, lines joined by " ; "."""
    blocks: list[str] = []
    for message in messages:
        if message.get("role") not in ("system", "developer", "user"):
            continue
        text = message_text(message)
        if "<memories>" not in text:
            continue
        for match in _MEMORIES_RE.finditer(text):
            lines = [line.strip() for line in match.group(1).strip().splitlines()]
            blocks.append(" ; ".join(line for line in lines if line))
    return " ; ".join(blocks) if blocks else None


def split_chunks(content: str, count: int | None = None) -> list[str]:
    """Split ``content`` for streaming: word by word, or into ``count`` near-equal pieces."""
    if not content:
        return []
    if count is None or count <= 0:
        return _WORD_BOUNDARY_RE.split(content)
    count = min(count, len(content))
    size, extra = divmod(len(content), count)
    pieces: list[str] = []
    start = 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        pieces.append(content[start:end])
        start = end
    return pieces


def estimate_tokens(text: str) -> int:
    """A cheap token estimate (about four characters per token)."""
    return (len(text) + 3) // 4


def between(text: str, start_tag: str, end_tag: str) -> str | None:
    """The text between the first ``start_tag`` and the last ``end_tag``, if both exist."""
    start = text.find(start_tag)
    end = text.rfind(end_tag)
    if start == -1 or end == -1 or end < start:
        return None
    return text[start + len(start_tag) : end]


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
# Scripted fact extraction (pure)
# ---------------------------------------------------------------------------------------------

_SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+|\s*\n+\s*")
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


def extract_facts(user_text: str) -> list[str]:
    """The scripted extractor: third-person facts from one user message, in order, unique."""
    text = _CONTROL_MAGIC_RE.sub(" ", user_text.replace("\u2019", "'"))
    facts: list[str] = []
    seen: set[str] = set()
    for sentence in _SENTENCE_SPLIT_RE.split(text):
        sentence = sentence.strip()
        if not sentence:
            continue
        if "### Task:" in sentence:
            break  # a task prompt (title/tags generation...): nothing after it is about the user
        if sentence.endswith("?"):
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


def extract_conversation_facts(conversation: str) -> list[str]:
    """Facts from the ``user:`` turns of a rendered conversation, unique across turns."""
    facts: list[str] = []
    seen: set[str] = set()
    for role, text in parse_conversation(conversation):
        if role != "user":
            continue
        for fact in extract_facts(text):
            if fact.lower() not in seen:
                seen.add(fact.lower())
                facts.append(fact)
    return facts


# ---------------------------------------------------------------------------------------------
# Scripted memory update (pure)
# ---------------------------------------------------------------------------------------------

KEY_MARKERS: tuple[str, ...] = (
    " lives in ",
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
_STOPWORDS = frozenset(
    "a an the is are am was were be been being i me my mine user user's users you your do does "
    "did to of in on at for and or with by from what where who when how which that this it its "
    "s any anymore longer no not".split()
)
_WORD_RE = re.compile(r"[\w']+")


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
    return {word for word in _WORD_RE.findall(text.lower()) if word not in _STOPWORDS}


def _negated_object(fact: str) -> set[str] | None:
    """For "User no longer likes sushi" / "User doesn't like sushi": {"sushi"}; else None."""
    lower = _normalise(fact)
    for prefix in _NEGATION_PREFIXES:
        if lower.startswith(prefix):
            rest = lower[len(prefix) :].split(maxsplit=1)
            words = _content_words(rest[1]) if len(rest) > 1 else set()
            return words or _content_words(lower[len(prefix) :])
    return None


def decide_updates(existing: Iterable[Mapping[str, Any]], facts: Iterable[str]) -> list[Json]:
    """The scripted memory manager: one ``{"id", "text", "event", ...}`` entry per fact.

    NONE for a known text, UPDATE for a fact filling the same slot (see ``fact_key``), DELETE
    for a negation ("User no longer ...") of a memory sharing its object words, else ADD. A
    memory is updated or deleted at most once per call.
    """
    memories = [(str(item.get("id", "")), str(item.get("text", ""))) for item in existing]
    consumed: set[str] = set()
    seen_facts: set[str] = set()
    result: list[Json] = []
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


# ---------------------------------------------------------------------------------------------
# Embeddings (pure)
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=65536)
def _token_hash(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")


def _embedding_tokens(text: str) -> list[str]:
    tokens: list[str] = []
    for word in _WORD_RE.findall(text.lower()):
        word = word.strip("'")
        if word.endswith("'s"):
            word = word[:-2]
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]  # a tiny stemmer: "lives" ~ "live"
        if word:
            tokens.append(word)
    content = [token for token in tokens if token not in _STOPWORDS]
    return content or tokens or ["\x00empty"]


def embed_text(text: str, dim: int = DEFAULT_EMBEDDING_DIM) -> list[float]:
    """A deterministic unit vector: feature hashing of lower-cased, lightly stemmed words.

    Stop words (and "user", "my", "I"...) are ignored when the text has other words, so texts
    sharing content words have a high cosine similarity.
    """
    vector = [0.0] * dim
    for token in _embedding_tokens(text):
        value = _token_hash(token)
        vector[value % dim] += 1.0 if (value >> 40) & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:  # every word cancelled out: fall back to one bucket
        vector[_token_hash(text) % dim] = 1.0
        return vector
    return [x / norm for x in vector]


def _embedding_base64(vector: list[float]) -> str:
    packed = array.array("f", vector)
    if sys.byteorder != "little":  # pragma: no cover
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


# ---------------------------------------------------------------------------------------------
# State shared between the server thread and the test thread
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RecordedRequest:
    """One request the fake received (control routes are not recorded)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Json
    kind: RequestKind
    at: float = field(default_factory=time.time)

    @property
    def messages(self) -> list[Json]:
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []

    @property
    def last_user_text(self) -> str:
        return last_user_text(self.messages)

    def to_json(self) -> Json:
        return {
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "body": self.body,
            "kind": self.kind,
            "at": self.at,
        }


class FakeState:
    """Recorded requests, counters and failure controls; safe to use from any thread.

    Controls: ``fail_next`` (next N chat calls, extraction/update included, answer
    ``fail_status``), ``invalid_json_next`` (next N extraction/update calls answer prose),
    ``embed_fail_next`` (next N embeddings calls answer ``fail_status``), ``delay_s`` (every
    chat call), ``extract_delay_s`` (extraction/update calls, on top of ``delay_s``).
    """

    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        extract_delay_s: float = 0.0,
        max_recorded: int | None = 50_000,
    ) -> None:
        self._lock = threading.Lock()
        self._default_delays = (max(0.0, delay_s), max(0.0, extract_delay_s))
        self.max_recorded = max_recorded
        self.requests: list[RecordedRequest] = []
        self.fail_next = 0
        self.fail_status = 500
        self.invalid_json_next = 0
        self.embed_fail_next = 0
        self.delay_s, self.extract_delay_s = self._default_delays
        self.counts: dict[str, int] = {}
        self._extractions = 0

    # -- recording ---------------------------------------------------------------------------

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.counts[request.kind] = self.counts.get(request.kind, 0) + 1
            self.counts["total"] = self.counts.get("total", 0) + 1
            if self.max_recorded == 0:
                return
            self.requests.append(request)
            limit = self.max_recorded
            if limit is not None and len(self.requests) > 2 * limit:
                del self.requests[: len(self.requests) - limit]

    def snapshot(self, kind: str | None = None) -> list[RecordedRequest]:
        """A copy of the recorded requests, optionally only one kind."""
        with self._lock:
            if kind is None:
                return list(self.requests)
            return [r for r in self.requests if r.kind == kind]

    def count(self, name: str) -> None:
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + 1

    # -- controls ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget recorded requests and counters; clear the controls (delays back to the
        values given to the constructor)."""
        with self._lock:
            self.requests.clear()
            self.counts = {}
            self._extractions = 0
            self.fail_next = 0
            self.fail_status = 500
            self.invalid_json_next = 0
            self.embed_fail_next = 0
            self.delay_s, self.extract_delay_s = self._default_delays

    def set_failures(
        self,
        *,
        fail_next: int | None = None,
        fail_status: int | None = None,
        invalid_json_next: int | None = None,
        embed_fail_next: int | None = None,
        delay_s: float | None = None,
        extract_delay_s: float | None = None,
    ) -> None:
        """Set the given controls; ``None`` leaves a control unchanged."""
        with self._lock:
            if fail_next is not None:
                self.fail_next = max(0, int(fail_next))
            if fail_status is not None:
                if not 100 <= int(fail_status) <= 599:
                    raise ValueError(f"fail_status must be an HTTP status, not {fail_status}")
                self.fail_status = int(fail_status)
            if invalid_json_next is not None:
                self.invalid_json_next = max(0, int(invalid_json_next))
            if embed_fail_next is not None:
                self.embed_fail_next = max(0, int(embed_fail_next))
            if delay_s is not None:
                self.delay_s = max(0.0, float(delay_s))
            if extract_delay_s is not None:
                self.extract_delay_s = max(0.0, float(extract_delay_s))

    configure = set_failures

    def controls(self) -> Json:
        with self._lock:
            return {
                "fail_next": self.fail_next,
                "fail_status": self.fail_status,
                "invalid_json_next": self.invalid_json_next,
                "embed_fail_next": self.embed_fail_next,
                "delay_s": self.delay_s,
                "extract_delay_s": self.extract_delay_s,
            }

    def stats(self) -> Json:
        with self._lock:
            counts = dict(self.counts)
            recorded = len(self.requests)
        return {"counts": counts, "recorded": recorded, "controls": self.controls()}

    # -- consumed by the handlers -----------------------------------------------------------

    def take_failure(self) -> int | None:
        with self._lock:
            if self.fail_next <= 0:
                return None
            self.fail_next -= 1
            self.counts["injected_failures"] = self.counts.get("injected_failures", 0) + 1
            return self.fail_status

    def take_embed_failure(self) -> int | None:
        with self._lock:
            if self.embed_fail_next <= 0:
                return None
            self.embed_fail_next -= 1
            self.counts["injected_failures"] = self.counts.get("injected_failures", 0) + 1
            return self.fail_status

    def take_invalid_json(self) -> bool:
        with self._lock:
            if self.invalid_json_next <= 0:
                return False
            self.invalid_json_next -= 1
            self.counts["invalid_json"] = self.counts.get("invalid_json", 0) + 1
            return True

    def next_extraction_number(self) -> int:
        with self._lock:
            self._extractions += 1
            return self._extractions

    def delay_for(self, kind: RequestKind) -> float:
        with self._lock:
            if kind in ("extract", "update"):
                return self.delay_s + self.extract_delay_s
            return self.delay_s


# ---------------------------------------------------------------------------------------------
# HTTP app
# ---------------------------------------------------------------------------------------------


class StreamAbort(Exception):
    """Raised inside a stream to drop the connection on purpose (``[[stream-abort]]``)."""


def _is_stream_abort(exc: BaseException | None) -> bool:
    if isinstance(exc, StreamAbort):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_stream_abort(inner) for inner in exc.exceptions)
    return False


def _drop_stream_abort_logs(record: logging.LogRecord) -> bool:
    return not (record.exc_info and _is_stream_abort(record.exc_info[1]))


def _install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if _drop_stream_abort_logs not in logger.filters:
        logger.addFilter(_drop_stream_abort_logs)


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(status: int, message: str, param: str | None = None) -> OrjsonResponse:
    """An OpenAI-shaped error body."""
    if status >= 500:
        kind = "server_error"
    elif status == 429:
        kind = "rate_limit_error"
    elif status == 401:
        kind = "authentication_error"
    else:
        kind = "invalid_request_error"
    return OrjsonResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": None}},
        status_code=status,
    )


@dataclass(slots=True)
class Reply:
    """What the assistant says: text, or tool calls."""

    content: str | None
    finish_reason: str = "stop"
    tool_calls: list[Json] | None = None


def classify(messages: Sequence[Mapping[str, Any]]) -> RequestKind:
    """``extract``/``update`` for memproxy's two prompts (also with a custom system prompt)."""
    first = messages[0] if messages else {}
    if first.get("role") in ("system", "developer"):
        system = message_text(first).lstrip()
        if system.startswith(EXTRACTION_PREFIX):
            return "extract"
        if system.startswith(UPDATE_PREFIX):
            return "update"
    last = message_text(messages[-1]).lstrip() if messages else ""
    if last.startswith("Exchange date:") and "<conversation>" in last:
        return "extract"
    if last.startswith("<existing_memories>") and "<new_facts>" in last:
        return "update"
    return "chat"


_ID_COUNTER = itertools.count(1)


class FakeHandlers:
    """The route handlers, bound to one ``FakeState``."""

    def __init__(self, state: FakeState) -> None:
        self.state = state

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    async def _json_body(request: Request) -> Json | None:
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            return None
        return body if isinstance(body, dict) else None

    def _record(self, request: Request, body: Json, kind: RequestKind) -> None:
        self.state.record(
            RecordedRequest(request.method, request.url.path, dict(request.headers), body, kind)
        )

    # -- models ------------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        self._record(request, {}, "models")
        return OrjsonResponse({"object": "list", "data": [_model(name) for name in MODELS]})

    async def model(self, request: Request) -> Response:
        self._record(request, {}, "models")
        name = request.path_params["model"]
        if name not in MODELS:
            return error_response(404, f"The model '{name}' does not exist", "model")
        return OrjsonResponse(_model(name))

    # -- chat --------------------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        body = await self._json_body(request)
        if body is None:
            self._record(request, {}, "chat")
            return error_response(400, "The request body is not a JSON object")
        messages = body.get("messages")
        valid = (
            isinstance(messages, list)
            and len(messages) > 0
            and all(isinstance(m, dict) for m in messages)
        )
        kind = classify(messages) if valid else "chat"  # type: ignore[arg-type]
        self._record(request, body, kind)
        if not valid:
            return error_response(
                400, "'messages' must be a non-empty array of objects", "messages"
            )
        assert isinstance(messages, list)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return error_response(400, "you must provide a model parameter", "model")
        n = body.get("n") or 1
        if not isinstance(n, int) or not 1 <= n <= 128:
            return error_response(400, "'n' must be an integer between 1 and 128", "n")

        status = self.state.take_failure()
        if status is not None:
            return error_response(status, f"Injected failure ({status}) from the fake upstream")

        delay = self.state.delay_for(kind)
        abort = False
        if kind == "chat":
            last = last_user_text(messages)
            if "[[" in last:
                fail = _FAIL_RE.search(last)
                if fail:
                    code = int(fail.group(1))
                    return error_response(code, f"Requested failure ({code}) via magic content")
                sleep = _SLEEP_RE.search(last)
                if sleep:
                    delay += float(sleep.group(1))
                abort = _STREAM_ABORT in last
            reply = self._chat_reply(body, messages)
        else:
            conversation = message_text(messages[-1])
            if kind == "extract" and "[[extract-" in conversation:
                fail = _EXTRACT_FAIL_RE.search(conversation)
                if fail:
                    code = int(fail.group(1))
                    return error_response(code, f"Requested extraction failure ({code})")
                sleep = _EXTRACT_SLEEP_RE.search(conversation)
                if sleep:
                    delay += float(sleep.group(1))
            reply = Reply(self._memory_reply(kind, conversation))

        if delay > 0:
            await asyncio.sleep(delay)
        if body.get("stream"):
            self.state.count("stream")
            return StreamingResponse(
                self._stream(body, messages, reply, n, abort),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache"},
            )
        return OrjsonResponse(_completion(body, messages, reply, n))

    def _chat_reply(self, body: Json, messages: list[Json]) -> Reply:
        last_message = messages[-1]
        memories = injected_memories(messages)
        suffix = "" if memories is None else " | MEMORIES: " + memories
        tools = body.get("tools")
        if last_message.get("role") == "tool":
            return Reply("TOOL RESULT: " + message_text(last_message) + suffix)
        if (
            tools
            and isinstance(tools, list)
            and last_message.get("role") == "user"
            and "call tool" in message_text(last_message).lower()
        ):
            name = _tool_name(tools, body.get("tool_choice"))
            call = {
                "id": "call_1",
                "type": "function",
                "function": {"name": name, "arguments": '{"x": 1}'},
            }
            return Reply(None, "tool_calls", [call])
        text = last_user_text(messages)
        response_format = body.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") in (
            "json_object",
            "json_schema",
        ):
            payload: Json = {"echo": text}
            if memories is not None:
                payload["memories"] = memories
            return Reply(orjson.dumps(payload).decode())
        return Reply("ECHO: " + text + suffix)

    def _memory_reply(self, kind: RequestKind, prompt: str) -> str:
        if kind == "extract":
            number = self.state.next_extraction_number()
            if _EXTRACT_INVALID in prompt or self.state.take_invalid_json():
                return INVALID_JSON_PROSE
            conversation = between(prompt, "<conversation>", "</conversation>") or ""
            answer = orjson.dumps({"facts": extract_conversation_facts(conversation)}).decode()
            if number % 3 == 0:
                return f"Here you go:\n```json\n{answer}\n```"
            return answer
        if self.state.take_invalid_json():
            return INVALID_JSON_PROSE
        existing = _json_list(between(prompt, "<existing_memories>", "</existing_memories>"))
        facts = [f for f in _json_list(between(prompt, "<new_facts>", "</new_facts>"))]
        decisions = decide_updates(
            (item for item in existing if isinstance(item, dict)),
            (str(fact) for fact in facts if isinstance(fact, str)),
        )
        return orjson.dumps({"memory": decisions}).decode()

    async def _stream(
        self, body: Json, messages: list[Json], reply: Reply, n: int, abort: bool
    ) -> AsyncIterator[bytes]:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        chunk_delay = float(body.get("fake_chunk_delay_s") or 0.0)
        chunks = body.get("fake_chunks")
        base: Json = {
            "id": f"chatcmpl-fake-{next(_ID_COUNTER)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_fake",
        }
        if include_usage:
            base["usage"] = None

        def event(choices: list[Json]) -> bytes:
            return b"data: " + orjson.dumps({**base, "choices": choices}) + b"\n\n"

        def choice(index: int, delta: Json, finish: str | None = None) -> Json:
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}

        events: list[bytes] = []
        if reply.tool_calls:
            call = reply.tool_calls[0]
            head = {
                "index": 0,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            arguments = call["function"]["arguments"]
            half = len(arguments) // 2
            for index in range(n):
                delta = {"role": "assistant", "content": None, "tool_calls": [head]}
                events.append(event([choice(index, delta)]))
            for part in (arguments[:half], arguments[half:]):
                for index in range(n):
                    delta = {"tool_calls": [{"index": 0, "function": {"arguments": part}}]}
                    events.append(event([choice(index, delta)]))
        else:
            for index in range(n):
                events.append(event([choice(index, {"role": "assistant", "content": ""})]))
            count = chunks if isinstance(chunks, int) and chunks > 0 else None
            for piece in split_chunks(reply.content or "", count):
                for index in range(n):
                    events.append(event([choice(index, {"content": piece})]))
        for index in range(n):
            events.append(event([choice(index, {}, reply.finish_reason)]))
        if include_usage:
            usage = _usage(messages, reply, n)
            events.append(
                b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
            )
        events.append(b"data: [DONE]\n\n")

        for number, data in enumerate(events, start=1):
            if number > 1 and chunk_delay > 0:
                await asyncio.sleep(chunk_delay)
            yield data
            if abort and number >= 2:
                await asyncio.sleep(0.01)  # let the two chunks leave before the reset
                raise StreamAbort("[[stream-abort]]")

    # -- embeddings --------------------------------------------------------------------------

    async def embeddings(self, request: Request) -> Response:
        body = await self._json_body(request)
        self._record(request, body or {}, "embeddings")
        if body is None:
            return error_response(400, "The request body is not a JSON object")
        status = self.state.take_embed_failure()
        if status is not None:
            return error_response(status, f"Injected failure ({status}) from the fake upstream")
        texts = _embedding_inputs(body.get("input"))
        if texts is None:
            return error_response(
                400, "'input' must be a string or an array of strings or tokens", "input"
            )
        dim = body.get("dimensions") or DEFAULT_EMBEDDING_DIM
        if not isinstance(dim, int) or not 1 <= dim <= 8192:
            return error_response(400, "'dimensions' must be an integer in 1..8192", "dimensions")
        as_base64 = body.get("encoding_format") == "base64"
        data: list[Json] = []
        for index, text in enumerate(texts):
            vector = embed_text(text, dim)
            data.append(
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": _embedding_base64(vector) if as_base64 else vector,
                }
            )
        tokens = sum(estimate_tokens(text) for text in texts)
        return OrjsonResponse(
            {
                "object": "list",
                "data": data,
                "model": body.get("model") or "fake-embedding",
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    # -- control -----------------------------------------------------------------------------

    async def control(self, request: Request) -> Response:
        if request.method == "GET":
            return OrjsonResponse(self.state.controls())
        body = await self._json_body(request)
        if body is None:
            return error_response(400, "The request body is not a JSON object")
        unknown = set(body) - _CONTROL_FIELDS
        if unknown:
            return error_response(400, f"unknown control fields: {sorted(unknown)}")
        if body.get("reset"):
            self.state.reset()
        try:
            self.state.set_failures(
                **{k: v for k, v in body.items() if k != "reset" and v is not None}
            )
        except (TypeError, ValueError) as exc:
            return error_response(400, f"invalid control value: {exc}")
        return OrjsonResponse(self.state.stats())

    async def recorded(self, request: Request) -> Response:
        kind = request.query_params.get("kind")
        return OrjsonResponse([r.to_json() for r in self.state.snapshot(kind)])

    async def stats(self, request: Request) -> Response:
        return OrjsonResponse(self.state.stats())

    async def health(self, request: Request) -> Response:
        return OrjsonResponse({"ok": True})


_CONTROL_FIELDS = frozenset(
    {
        "fail_next",
        "fail_status",
        "invalid_json_next",
        "embed_fail_next",
        "delay_s",
        "extract_delay_s",
        "reset",
    }
)


def _model(name: str) -> Json:
    return {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "fake-upstream"}


def _tool_name(tools: list[Any], tool_choice: Any) -> str:
    if isinstance(tool_choice, dict):
        chosen = tool_choice.get("function")
        if isinstance(chosen, dict) and isinstance(chosen.get("name"), str):
            return str(chosen["name"])
    first = tools[0] if tools else {}
    function = first.get("function") if isinstance(first, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return str(function["name"])
    return "tool"


def _json_list(text: str | None) -> list[Any]:
    if not text:
        return []
    try:
        value = orjson.loads(text.strip())
    except orjson.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []


def _embedding_inputs(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(item, str) for item in value):
        return list(value)
    if all(isinstance(item, int) for item in value):  # one pre-tokenised input
        return [" ".join(map(str, value))]
    if all(isinstance(item, list) for item in value):  # several pre-tokenised inputs
        return [" ".join(map(str, item)) for item in value]
    return None


def _usage(messages: list[Json], reply: Reply, n: int) -> Json:
    prompt = sum(estimate_tokens(message_text(m)) + 3 for m in messages)
    if reply.tool_calls:
        one = sum(estimate_tokens(c["function"]["arguments"]) + 5 for c in reply.tool_calls)
    else:
        one = estimate_tokens(reply.content or "")
    completion = max(1, one) * n
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _completion(body: Json, messages: list[Json], reply: Reply, n: int) -> Json:
    message: Json = {"role": "assistant", "content": reply.content, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = reply.tool_calls
    return {
        "id": f"chatcmpl-fake-{next(_ID_COUNTER)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": index,
                "message": message,
                "logprobs": None,
                "finish_reason": reply.finish_reason,
            }
            for index in range(n)
        ],
        "usage": _usage(messages, reply, n),
    }


def create_fake_app(state: FakeState | None = None) -> Starlette:
    """The fake upstream as an ASGI app; ``app.state.fake`` is its ``FakeState``."""
    _install_log_filter()
    fake_state = state if state is not None else FakeState()
    handlers = FakeHandlers(fake_state)
    routes: list[Route] = []
    for prefix in ("/v1", ""):
        routes += [
            Route(f"{prefix}/models", handlers.models, methods=["GET"]),
            Route(f"{prefix}/models/{{model:path}}", handlers.model, methods=["GET"]),
            Route(f"{prefix}/chat/completions", handlers.chat_completions, methods=["POST"]),
            Route(f"{prefix}/embeddings", handlers.embeddings, methods=["POST"]),
        ]
    routes += [
        Route("/_control", handlers.control, methods=["GET", "POST"]),
        Route("/_requests", handlers.recorded, methods=["GET"]),
        Route("/_stats", handlers.stats, methods=["GET"]),
        Route("/health", handlers.health, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.fake = fake_state
    return app


# ---------------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------------


class FakeUpstream:
    """Runs the fake on loopback in a background thread: ``with FakeUpstream() as fake:``."""

    def __init__(
        self,
        state: FakeState | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        configure_logging: bool = False,
        startup_timeout_s: float = 10.0,
    ) -> None:
        self.state = state if state is not None else FakeState()
        self.host = host
        self.port = port
        self._log_level = log_level
        self._configure_logging = configure_logging
        self._startup_timeout_s = startup_timeout_s
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL: ``http://127.0.0.1:PORT/v1``."""
        return f"{self.base_url}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every recorded request."""
        return self.state.snapshot()

    def requests_of(self, kind: RequestKind) -> list[RecordedRequest]:
        """A snapshot of the recorded requests of one kind (``chat``, ``extract``...)."""
        return self.state.snapshot(kind)

    def reset(self) -> None:
        self.state.reset()

    def set_failures(
        self,
        *,
        fail_next: int | None = None,
        fail_status: int | None = None,
        invalid_json_next: int | None = None,
        embed_fail_next: int | None = None,
        delay_s: float | None = None,
        extract_delay_s: float | None = None,
    ) -> None:
        self.state.set_failures(
            fail_next=fail_next,
            fail_status=fail_status,
            invalid_json_next=invalid_json_next,
            embed_fail_next=embed_fail_next,
            delay_s=delay_s,
            extract_delay_s=extract_delay_s,
        )

    def start(self) -> FakeUpstream:
        if self._thread is not None:
            raise RuntimeError("the fake upstream is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_fake_app(self.state),
            lifespan="off",
            log_level=self._log_level,
            log_config=uvicorn.config.LOGGING_CONFIG if self._configure_logging else None,
            access_log=False,
            ws="none",
            timeout_graceful_shutdown=1,
            backlog=4096,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="fake-upstream", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + self._startup_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError("the fake upstream did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout=5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible LLM on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before every chat")
    parser.add_argument(
        "--extract-delay", type=float, default=0.0, help="extra seconds for extraction/update"
    )
    parser.add_argument("--max-recorded", type=int, default=10_000)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    state = FakeState(
        delay_s=args.delay, extract_delay_s=args.extract_delay, max_recorded=args.max_recorded
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with FakeUpstream(
        state, host=args.host, port=args.port, log_level=args.log_level, configure_logging=True
    ) as fake:
        print(f"FAKE_UPSTREAM_URL={fake.url}", flush=True)
        while not stop.wait(0.5):
            if fake._thread is None or not fake._thread.is_alive():
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
