"""The fake upstream's graph builder and entity resolver, standing in for an LLM behind
memproxy's graph prompts (``memory_core/graph_prompts.py``, ``graph_resolve.py``).

Rules over the numbered facts: ``<Subject>['s <role> [<Name>]] <verb> <object>`` gives
``(Subject, role, Name)`` and ``(Name, verb, object)`` ("User's sister Maria lives in Lisbon"
→ User -sister-> Maria, Maria -lives_in-> Lisbon; "Maria Silva works at Acme" → one relation).
The resolver says two names are one entity when they share their first word.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import orjson

GRAPH_PREFIX = "You are memproxy's graph builder."
SAME_PREFIX = "You are memproxy's entity resolver."
GraphKind = Literal["graph", "same"]

_NAME = r"(?:User|[A-Z][\w'-]*(?: [A-Z][\w'-]*)*)"
_VERBS = (
    "lives in",
    "moved to",
    "works at",
    "works as",
    "likes",
    "loves",
    "owns",
    "plays",
    "studies",
    "is married to",
    "is allergic to",
    "visited",
)
_FACT = re.compile(
    rf"^(?P<subject>{_NAME})(?:'s (?P<role>[a-z]+)(?: (?P<name>{_NAME}))?)? "
    rf"(?P<verb>{'|'.join(_VERBS)}) (?P<object>.+?)\.?$"
)
_FACT_LINE = re.compile(r"(\d+)\. (.*?)(?= \d+\. |$)")


def graph_kind(instructions: str) -> GraphKind | None:
    if instructions.startswith(GRAPH_PREFIX):
        return "graph"
    if instructions.startswith(SAME_PREFIX):
        return "same"
    return None


def relation_of(verb: str) -> str:
    return "lives_in" if verb == "moved to" else verb.replace(" ", "_")


def graph_answer(facts_text: str) -> dict[str, Any]:
    """``{"entities", "relations"}`` for the ``<facts>`` of a graph prompt."""
    entities: dict[str, str] = {}
    relations: list[dict[str, Any]] = []
    for number, fact in _FACT_LINE.findall(facts_text):
        match = _FACT.match(fact.strip())
        if match is None:
            continue
        subject = match["subject"]
        entities.setdefault(subject, "person")
        if match["role"]:
            holder = match["name"] or f"{subject}'s {match['role']}"
            entities.setdefault(holder, "person")
            if match["name"]:
                relations.append(_relation(subject, match["role"], holder, number))
            subject = holder
        target = match["object"]
        entities.setdefault(target, "thing")
        relations.append(_relation(subject, relation_of(match["verb"]), target, number))
    listed = [{"name": name, "type": kind} for name, kind in entities.items()]
    return {"entities": listed, "relations": relations}


def _relation(source: str, relation: str, target: str, fact: str) -> dict[str, Any]:
    return {"source": source, "relation": relation, "target": target, "fact": int(fact)}


def same_answer(pairs_text: str) -> dict[str, Any]:
    """``{"same": [...]}``: a pair is one entity when both names start with the same word."""
    verdicts = []
    for line in pairs_text.strip().splitlines():
        names = re.findall(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"", line)
        first = [(a or b).split()[0].casefold() for a, b in names if (a or b).split()]
        verdicts.append(len(first) == 2 and first[0] == first[1])
    return {"same": verdicts}


def graph_reply(kind: GraphKind, messages: Sequence[Mapping[str, Any]]) -> str:
    text = str(messages[-1].get("content", ""))
    if kind == "graph":
        inner = text.split("<facts>", 1)[-1].split("</facts>", 1)[0]
        return orjson.dumps(graph_answer(" ".join(inner.split()))).decode()
    inner = text.split("<pairs>", 1)[-1].split("</pairs>", 1)[0]
    return orjson.dumps(same_answer(inner)).decode()
