"""Mem0-style filters as data: their vocabulary, their size bounds, and the identities they
name. Callers (the proxy's authorization) read filters through these; only the store's
compiler (``filters.py``) turns them into a query."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import MemoryLimits
from .errors import InvalidFilter
from .types import IDENTITY_FIELDS

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "contains", "icontains")
LOGIC = ("AND", "OR", "NOT")
DEFAULT_LIMITS = MemoryLimits()


def check_filter_shape(filters: Any, limits: MemoryLimits = DEFAULT_LIMITS) -> None:
    """Refuse filters nesting AND/OR/NOT deeper than ``limits.max_filter_depth`` or holding
    more than ``limits.max_filter_conditions`` conditions (walked without recursion, so no
    shape of input can exhaust the stack before it is refused)."""
    stack: list[tuple[Any, int]] = [(filters, 0)]
    conditions = 0
    while stack:
        node, depth = stack.pop()
        if isinstance(node, list):
            stack.extend((item, depth) for item in node)
            continue
        if not isinstance(node, Mapping):
            continue  # the compiler says what is wrong with it
        for key, value in node.items():
            if key in LOGIC:
                if depth + 1 > limits.max_filter_depth:
                    raise InvalidFilter(
                        f"filters nest AND/OR/NOT more than {limits.max_filter_depth} levels deep"
                    )
                stack.append((value, depth + 1))
                continue
            conditions += len(value) if isinstance(value, Mapping) and value else 1
            if conditions > limits.max_filter_conditions:
                raise InvalidFilter(
                    f"filters hold more than {limits.max_filter_conditions} conditions"
                )


def identity_from_filters(filters: Mapping[str, Any]) -> dict[str, str]:
    """Top-level equalities on user_id/agent_id/run_id (also inside a top-level AND)."""
    found: dict[str, str] = {}
    nodes: list[Any] = [filters]
    and_items = filters.get("AND")
    if isinstance(and_items, list):
        nodes.extend(and_items)
    for node in nodes:
        if not isinstance(node, Mapping):
            continue
        for key in IDENTITY_FIELDS:
            value = node.get(key)
            if isinstance(value, Mapping) and set(value) == {"eq"}:
                value = value["eq"]
            if isinstance(value, str) and key not in found:
                found[key] = value
    return found


def filter_user_ids(filters: Any) -> list[Any]:
    """Every user_id value a filter mentions, at any depth, under any operator."""
    found: list[Any] = []
    stack: list[Any] = [filters]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, Mapping):
            for key, value in node.items():
                if key in LOGIC:
                    stack.append(value)
                elif key == "user_id":
                    values = value.values() if isinstance(value, Mapping) else [value]
                    for v in values:
                        found.extend(v if isinstance(v, list) else [v])
    return found


__all__ = [
    "LOGIC",
    "OPERATORS",
    "check_filter_shape",
    "filter_user_ids",
    "identity_from_filters",
]
