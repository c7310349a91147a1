"""Synthetic memories for the benchmarks: the caller's 200 real facts, and filler for the rest.

Embedding a million texts is impossible on this machine, so only the calling user's 200
memories are embedded with the real default embedder; the other users' rows get random unit
vectors and random word salad (so the full-text index has realistic work to do).
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

CALLER = "bench-user"

_SUBJECTS = {
    "food": [
        "sushi",
        "ramen",
        "lasagna",
        "tacos",
        "pad thai",
        "falafel",
        "risotto",
        "pho",
        "dumplings",
        "paella",
    ],
    "drink": [
        "oolong tea",
        "flat whites",
        "sparkling water",
        "matcha",
        "espresso",
        "ginger beer",
        "rooibos",
        "cold brew",
    ],
    "hobby": [
        "bouldering",
        "trail running",
        "watercolour painting",
        "chess",
        "sourdough baking",
        "birdwatching",
        "salsa dancing",
        "woodworking",
        "kayaking",
        "photography",
    ],
    "city": [
        "Lisbon",
        "Osaka",
        "Toronto",
        "Berlin",
        "Nairobi",
        "Melbourne",
        "Bogotá",
        "Edinburgh",
        "Seoul",
        "Porto",
    ],
    "pet": [
        "a beagle named Toast",
        "two cats called Miso and Udon",
        "a parrot named Kiwi",
        "a corgi named Waffles",
        "a tortoise called Sheldon",
        "a rescue greyhound named Dash",
    ],
    "lang": ["Rust", "Go", "TypeScript", "Python", "Kotlin", "Elixir", "Haskell", "Zig"],
    "book": [
        "Dune",
        "The Left Hand of Darkness",
        "Middlemarch",
        "Piranesi",
        "Project Hail Mary",
        "The Remains of the Day",
        "Neuromancer",
        "Circe",
    ],
    "music": [
        "jazz piano",
        "Brazilian bossa nova",
        "80s synth-pop",
        "baroque cello suites",
        "Afrobeat",
        "lo-fi hip hop",
        "bluegrass",
        "Icelandic post-rock",
    ],
    "health": [
        "a peanut allergy",
        "lactose intolerance",
        "mild asthma",
        "a gluten sensitivity",
        "a bad left knee",
        "migraines in bright light",
    ],
    "job": [
        "a nurse",
        "a backend engineer",
        "a high-school teacher",
        "a product designer",
        "a data analyst",
        "an architect",
        "a paramedic",
        "a bookkeeper",
    ],
}

_TEMPLATES = [
    ("food", "Loves eating {x}, especially on Friday evenings"),
    ("food", "Cannot stand {x} and avoids it at restaurants"),
    ("drink", "Starts every morning with {x}"),
    ("hobby", "Spends most weekends {x}"),
    ("hobby", "Wants to get better at {x} this year"),
    ("city", "Lives in {x} since moving there for work"),
    ("city", "Is planning a holiday to {x} next spring"),
    ("pet", "Has {x}"),
    ("lang", "Writes {x} at work and prefers it for backend services"),
    ("lang", "Is learning {x} in the evenings"),
    ("book", "Favourite novel is {x}"),
    ("music", "Listens to {x} while working"),
    ("health", "Has {x}"),
    ("job", "Works as {x}"),
]

QUERIES = [
    "What should I cook for dinner tonight?",
    "Can you recommend a restaurant for me this weekend?",
    "What drink should I make to start my day?",
    "Suggest a weekend activity I would enjoy.",
    "Where should I go on my next holiday?",
    "Any tips for looking after my pet?",
    "Which programming language should I use for a new backend service?",
    "Recommend a novel I might like.",
    "What music should I put on while I work?",
    "Are there foods I should avoid because of my health?",
    "What do you know about my job?",
    "Which city do I live in and what is there to do?",
    "Plan a relaxing Saturday for me.",
    "What hobby could I pick up this winter?",
    "Give me a gift idea for myself based on what I like.",
    "How can I stay healthy given my conditions?",
]


def caller_facts(count: int = 200, seed: int = 7) -> list[str]:
    """``count`` distinct, plausible facts about the calling user."""
    rng = np.random.default_rng(seed)
    facts: list[str] = []
    seen: set[str] = set()
    combos = [(template, value) for kind, template in _TEMPLATES for value in _SUBJECTS[kind]]
    order = rng.permutation(len(combos))
    suffixes = [
        "",
        " (mentioned in March)",
        " (said so twice)",
        " and talks about it often",
        " according to a recent chat",
        " (brought up last week)",
        " since childhood",
        " these days",
        " (told a friend)",
        " more than ever",
    ]
    for i in itertools.cycle(order):
        template, value = combos[int(i)]
        text = template.format(x=value) + suffixes[len(facts) // len(combos) % len(suffixes)]
        if text not in seen:
            seen.add(text)
            facts.append(text)
        if len(facts) >= count:
            break
    return facts


_WORDS = (
    "apple river mountain coffee garden window morning evening winter summer travel family "
    "friend music guitar piano movie series novel poetry kitchen recipe bread cheese wine "
    "football tennis running swimming cycling hiking camping beach forest city village office "
    "meeting project deadline budget invoice client server database python javascript design "
    "doctor dentist pharmacy allergy vitamin yoga meditation sleep weekend holiday birthday "
    "wedding anniversary daughter son brother sister mother father cousin neighbour teacher "
    "student exam course library museum gallery concert festival airport train bicycle car "
    "insurance mortgage rent salary savings bank loan tax garden tomato basil chocolate tea"
).split()


def _vocabulary(size: int = 4000, seed: int = 3) -> np.ndarray:
    """The common words above first, then pronounceable made-up words (names, places...)."""
    rng = np.random.default_rng(seed)
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    made_up: list[str] = []
    seen = set(_WORDS)
    while len(_WORDS) + len(made_up) < size:
        word = "".join(rng.choice(syllables, size=int(rng.integers(2, 4))))
        if word not in seen:
            seen.add(word)
            made_up.append(word)
    return np.asarray(_WORDS + made_up, dtype=object)


_VOCAB = _vocabulary()
# Zipf-like word frequencies, as in natural text: a few words are everywhere, most are rare.
_ZIPF = 1.0 / (np.arange(len(_VOCAB)) + 30.0)
_ZIPF /= _ZIPF.sum()


def filler_texts(n: int, rng: np.random.Generator) -> list[str]:
    lengths = rng.integers(6, 14, size=n)
    picks = rng.choice(len(_VOCAB), size=int(lengths.sum()), p=_ZIPF)
    out = []
    pos = 0
    for length in lengths:
        words = _VOCAB[picks[pos : pos + length]]
        out.append(" ".join(words).capitalize())
        pos += length
    return out


def unit_vectors(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def rows_for(
    texts: list[str], users: list[str], vectors: np.ndarray, rng: np.random.Generator
) -> list[dict[str, Any]]:
    base = datetime(2025, 1, 1, tzinfo=UTC)
    offsets = rng.integers(0, 600 * 86400, size=len(texts))
    rows = []
    for text, user, vector, offset in zip(texts, users, vectors, offsets, strict=True):
        stamp = (base + timedelta(seconds=int(offset))).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
        rows.append(
            {
                "id": str(uuid.uuid4()),
                "user_id": user,
                "agent_id": None,
                "run_id": None,
                "memory": text,
                "hash": hashlib.md5(text.encode()).hexdigest(),
                "vector": vector,
                "metadata": {},
                "categories": [],
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
    return rows
