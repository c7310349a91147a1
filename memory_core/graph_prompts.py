"""The graph step of ``add(infer=True)``: from the facts a job stored, the entities they name
and the relations between them, each relation citing the fact it comes from. Pure functions:
the prompt, its JSON schema and the validation of the answer.

One call per learning job, after the facts: its input is the job's facts (short, already
cleaned), not the raw exchange, and each relation names its fact by number, so the memory a
relation rests on is known exactly (what deleting a memory must take with it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .contracts import Rejections
from .errors import UnusableAnswer
from .types import Message

MAX_NAME_CHARS = 100
MAX_RELATION_CHARS = 60
MAX_RELATIONS = 30  # per answer; more is a model running on
USER_ENTITY = "User"  # the person the memories are about: one node per scope
_RELATION_CHARS = re.compile(r"[^\w]+")

GRAPH_PROMPT = f"""You are memproxy's graph builder. You read numbered facts about a user and \
write down the entities they name (people, pets, places, organisations, things, events) and the \
relations between them.

Rules:
- The user is the entity "{USER_ENTITY}". Use each entity's fullest name as written in the facts.
- A relation is (source, relation, target): relation is a short verb phrase in snake_case \
("sister_of", "lives_in", "works_at", "owns", "likes").
- Each relation cites the number of the fact it comes from ("fact": 2). Use only what the facts \
say; never invent entities or relations.
- Keep names in the language of the facts.
Answer with one JSON object only: {{"entities": [{{"name": <name>, "type": <type>}}], \
"relations": [{{"source": <name>, "relation": <relation>, "target": <name>, "fact": <number>}}]}}

Worked example (made up: never repeat it):
Facts: 1. User's neighbour Tomasz restores vintage radios 2. Tomasz lives in Gdańsk
Answer: {{"entities": [{{"name": "Tomasz", "type": "person"}}, {{"name": "vintage radios", \
"type": "thing"}}, {{"name": "Gdańsk", "type": "place"}}], "relations": [{{"source": "User", \
"relation": "neighbour_of", "target": "Tomasz", "fact": 1}}, {{"source": "Tomasz", "relation": \
"restores", "target": "vintage radios", "fact": 1}}, {{"source": "Tomasz", "relation": \
"lives_in", "target": "Gdańsk", "fact": 2}}]}}"""

_ENTITY: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "type": {"type": "string"}},
    "required": ["name", "type"],
    "additionalProperties": False,
}
_RELATION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "source": {"type": "string"},
        "relation": {"type": "string"},
        "target": {"type": "string"},
        "fact": {"type": "integer"},
    },
    "required": ["source", "relation", "target", "fact"],
    "additionalProperties": False,
}
GRAPH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "entities": {"type": "array", "items": _ENTITY},
        "relations": {"type": "array", "items": _RELATION},
    },
    "required": ["entities", "relations"],
    "additionalProperties": False,
}
# The worked example's relations: one coming back is the model copying, never stored.
EXAMPLE_TRIPLES = frozenset(
    {("user", "neighbour_of", "tomasz"), ("tomasz", "restores", "vintage radios")}
    | {("tomasz", "lives_in", "gdańsk")}
)


@dataclass(frozen=True, slots=True)
class RelationClaim:
    """One validated relation of an answer; ``fact`` indexes the facts given (0-based)."""

    source: str
    source_type: str
    relation: str
    target: str
    target_type: str
    fact: int

    @property
    def text(self) -> str:
        return relation_text(self.source, self.relation, self.target)


def relation_text(source: str, relation: str, target: str) -> str:
    """What is embedded and searched of a relation: ``"Maria lives in Lisbon"``."""
    return f"{source} {relation.replace('_', ' ')} {target}"


def build_graph_messages(facts: Sequence[str]) -> list[Message]:
    numbered = "\n".join(f"{index}. {fact}" for index, fact in enumerate(facts, start=1))
    return [
        {"role": "system", "content": GRAPH_PROMPT},
        {"role": "user", "content": f"<facts>\n{numbered}\n</facts>"},
    ]


def entity_name(value: Any) -> str | None:
    """A usable entity name (one line, trimmed, bounded), or None."""
    if not isinstance(value, str):
        return None
    name = " ".join(value.split()).strip(" .,:;\"'")[:MAX_NAME_CHARS]
    return name if any(char.isalnum() for char in name) else None


def name_key(name: str) -> str:
    """How names are compared: casefolded words, so "Maria  Silva." is "maria silva"."""
    return " ".join(re.findall(r"\w+", name.casefold()))


def relation_name(value: Any) -> str | None:
    """``"Lives In"`` → ``"lives_in"``; None when nothing is left."""
    if not isinstance(value, str):
        return None
    relation = _RELATION_CHARS.sub("_", value.casefold()).strip("_")[:MAX_RELATION_CHARS]
    return relation or None


def _fact_number(value: Any, count: int) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and 1 <= value <= count:
        return value - 1
    return None


def _types(entities: Any, rejected: Rejections) -> dict[str, str]:
    types: dict[str, str] = {}
    for entry in entities if isinstance(entities, list) else []:
        name = entity_name(entry.get("name")) if isinstance(entry, Mapping) else None
        if name is None:
            rejected.add("malformed_entity", entry)
            continue
        kind = entry.get("type")
        types.setdefault(name_key(name), relation_name(kind) or "thing")
    return types


def parse_graph(
    payload: Mapping[str, Any], facts: Sequence[str], rejected: Rejections | None = None
) -> list[RelationClaim]:
    """``{"entities": [...], "relations": [...]}`` → unique, validated relations in order.

    A relation needs two different names, a relation word and the number of a fact given;
    the rest is counted in ``rejected``. Raises ``UnusableAnswer`` when relations were given
    and none was usable (the call is re-asked)."""
    counted = rejected if rejected is not None else Rejections()
    types = _types(payload.get("entities"), counted)
    items = payload.get("relations")
    if not isinstance(items, list):
        raise UnusableAnswer('the graph answer has no "relations" list')
    claims: list[RelationClaim] = []
    seen: set[tuple[str, str, str]] = set()
    for entry in items[:MAX_RELATIONS]:
        claim = _claim(entry, facts, types, counted)
        if claim is None:
            continue
        triple = (name_key(claim.source), claim.relation, name_key(claim.target))
        if triple in EXAMPLE_TRIPLES:
            counted.add("prompt_example", entry)
        elif triple not in seen:
            seen.add(triple)
            claims.append(claim)
    if items and not claims:
        raise UnusableAnswer(f"no usable relation among the {len(items)} given")
    return claims


def _claim(
    entry: Any, facts: Sequence[str], types: Mapping[str, str], rejected: Rejections
) -> RelationClaim | None:
    if not isinstance(entry, Mapping):
        rejected.add("malformed_relation", entry)
        return None
    source, target = entity_name(entry.get("source")), entity_name(entry.get("target"))
    relation = relation_name(entry.get("relation"))
    fact = _fact_number(entry.get("fact"), len(facts))
    if source is None or target is None or relation is None:
        rejected.add("malformed_relation", entry)
        return None
    if name_key(source) == name_key(target):
        rejected.add("self_relation", entry)
        return None
    if fact is None:
        rejected.add("unknown_fact", entry)
        return None
    user = name_key(USER_ENTITY)
    return RelationClaim(
        source=USER_ENTITY if name_key(source) == user else source,
        source_type="person" if name_key(source) == user else types.get(name_key(source), "thing"),
        relation=relation,
        target=USER_ENTITY if name_key(target) == user else target,
        target_type="person" if name_key(target) == user else types.get(name_key(target), "thing"),
        fact=fact,
    )


__all__ = [
    "GRAPH_PROMPT",
    "GRAPH_SCHEMA",
    "MAX_RELATIONS",
    "USER_ENTITY",
    "RelationClaim",
    "build_graph_messages",
    "entity_name",
    "name_key",
    "parse_graph",
    "relation_name",
    "relation_text",
]
