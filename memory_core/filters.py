"""The one place that turns ids and Mem0-style filters into LanceDB SQL.

No other module concatenates caller values into a filter string. Columns of the table are
filtered in SQL (prefilter); ``metadata`` keys, which live in a JSON column, are checked in
Python by the predicate this module returns alongside the SQL.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .config import MemoryLimits
from .errors import InvalidFilter
from .filter_shape import DEFAULT_LIMITS, LOGIC, OPERATORS, check_filter_shape
from .lifecycle import HIDDEN_FEEDBACK
from .storage import Selection
from .timestamps import normalize_timestamp
from .types import IDENTITY_FIELDS, Scope, validate_id

TIME_FIELDS = ("created_at", "updated_at")
COLUMN_FIELDS = (*IDENTITY_FIELDS, *TIME_FIELDS, "id", "hash")
MAX_VALUE_CHARS = 4096
MAX_IN_VALUES = 1000

_SQL_OPS = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}

Predicate = Callable[[Mapping[str, Any]], bool]


def sql_literal(value: Any) -> str:
    """Render one value as a SQL literal; strings are quote-escaped, others type-checked."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidFilter("filter numbers must be finite")
        return repr(value)
    if isinstance(value, str):
        if len(value) > MAX_VALUE_CHARS:
            raise InvalidFilter(f"filter value longer than {MAX_VALUE_CHARS} characters")
        if "\x00" in value:
            raise InvalidFilter("filter value contains a NUL character")
        return "'" + value.replace("'", "''") + "'"
    raise InvalidFilter(f"unsupported filter value type: {type(value).__name__}")


def scope_sql(scope: Scope) -> str:
    """``user_id = '...' AND ...`` for the ids set in ``scope`` (validated again here)."""
    clauses = []
    for field, value in scope.as_dict().items():
        if value is not None:
            clauses.append(f"{field} = {sql_literal(validate_id(value, field))}")
    return " AND ".join(clauses)


def in_sql(column: str, values: Sequence[str]) -> str:
    """``column IN (...)`` for string values (``column`` is the caller's own name, never
    input); FALSE for none."""
    if not values:
        return "FALSE"
    return f"{column} IN ({', '.join(sql_literal(v) for v in values)})"


def ids_sql(column: str, values: Sequence[str]) -> str:
    """``in_sql`` on a column of the memories or history table."""
    if column not in COLUMN_FIELDS and column != "memory_id":
        raise InvalidFilter(f"unknown column {column!r}")
    return in_sql(column, values)


@dataclass(frozen=True, slots=True)
class CompiledFilter:
    """A Mem0 filter split into a SQL prefilter and a Python check on metadata."""

    sql: str
    predicate: Predicate | None

    def matches(self, row: Mapping[str, Any]) -> bool:
        return self.predicate is None or self.predicate(row)


def combine_sql(*parts: str) -> str:
    """AND together non-empty SQL fragments, each parenthesised."""
    kept = [p for p in parts if p]
    return " AND ".join(f"({p})" for p in kept)


def compile_filters(
    scope: Scope, filters: Mapping[str, Any] | None, limits: MemoryLimits = DEFAULT_LIMITS
) -> CompiledFilter:
    """Compile the scope plus Mem0-style ``filters`` into a ``CompiledFilter``.

    The scope is always ANDed in, so a filter can only narrow what the scope allows.
    """
    base = scope_sql(scope)
    if not filters:
        return CompiledFilter(sql=base, predicate=None)
    if not isinstance(filters, Mapping):
        raise InvalidFilter("filters must be an object")
    check_filter_shape(filters, limits)
    node = _compile_node(filters)
    return CompiledFilter(sql=combine_sql(base, node.sql), predicate=node.predicate)


def compile_selection(
    selection: Selection, limits: MemoryLimits = DEFAULT_LIMITS
) -> CompiledFilter:
    """A store's ``Selection`` as a SQL prefilter plus the metadata check: the scope, ids and
    hashes, the caller's filters (held to ``limits``) and the library's own window."""
    compiled = compile_filters(selection.scope, selection.filters, limits)
    parts = [compiled.sql]
    if selection.ids is not None:
        parts.append(ids_sql("id", selection.ids))
    if selection.hashes is not None:
        parts.append(ids_sql("hash", selection.hashes))
    if selection.window:
        parts.append(_compile_node(selection.window).sql)
    if selection.unexpired_at is not None:
        at = sql_literal(normalize_timestamp(selection.unexpired_at))
        parts.append(f"expires_at IS NULL OR expires_at > {at}")
    if selection.hide_very_negative:
        parts.append(f"feedback IS NULL OR feedback != {sql_literal(HIDDEN_FEEDBACK)}")
    return CompiledFilter(sql=combine_sql(*parts), predicate=compiled.predicate)


@dataclass(frozen=True, slots=True)
class _Node:
    sql: str  # empty: no SQL condition (all rows)
    predicate: Predicate | None  # None: no Python condition


def _compile_node(filters: Mapping[str, Any]) -> _Node:
    nodes: list[_Node] = []
    for key, value in filters.items():
        if key in LOGIC:
            nodes.append(_compile_logic(key, value))
        elif not isinstance(key, str) or not key:
            raise InvalidFilter("filter keys must be non-empty strings")
        else:
            nodes.append(_compile_field(key, value))
    return _and(nodes)


def _compile_logic(op: str, value: Any) -> _Node:
    if op == "NOT":
        items = value if isinstance(value, list) else [value]
        inner = _and([_compile_node(_as_mapping(item)) for item in items])
        return _not(inner)
    if not isinstance(value, list) or not value:
        raise InvalidFilter(f"{op} takes a non-empty list of filters")
    children = [_compile_node(_as_mapping(item)) for item in value]
    return _and(children) if op == "AND" else _or(children)


def _as_mapping(item: Any) -> Mapping[str, Any]:
    if not isinstance(item, Mapping):
        raise InvalidFilter("logical operators take lists of filter objects")
    return item


def _compile_field(field: str, condition: Any) -> _Node:
    if isinstance(condition, Mapping):
        if not condition:
            raise InvalidFilter(f"empty operator object for {field!r}")
        return _and([_compile_op(field, op, value) for op, value in condition.items()])
    return _compile_op(field, "eq", condition)


def _compile_op(field: str, op: str, value: Any) -> _Node:
    if op not in OPERATORS:
        raise InvalidFilter(f"unknown filter operator {op!r}; use one of {', '.join(OPERATORS)}")
    if field in COLUMN_FIELDS:
        return _Node(sql=_column_sql(field, op, value), predicate=None)
    if field.startswith("metadata."):
        field = field[len("metadata.") :]
    if field in ("memory", "vector", "metadata", "categories") or not field:
        raise InvalidFilter(f"cannot filter on field {field!r}")
    return _Node(sql="", predicate=_metadata_predicate(field, op, value))


def _column_sql(field: str, op: str, value: Any) -> str:
    convert: Callable[[Any], Any] = normalize_timestamp if field in TIME_FIELDS else _text
    if field in IDENTITY_FIELDS:
        convert = _identity_value(field)
    if op in _SQL_OPS:
        return f"{field} {_SQL_OPS[op]} {sql_literal(convert(value))}"
    if op in ("in", "nin"):
        values = _as_list(value)
        rendered = ", ".join(sql_literal(convert(v)) for v in values)
        if not values:
            return "FALSE" if op == "in" else "TRUE"
        return f"{field} {'IN' if op == 'in' else 'NOT IN'} ({rendered})"
    if not isinstance(value, str):
        raise InvalidFilter(f"{op} needs a string value")
    pattern = sql_literal("%" + _escape_like(value) + "%")
    if op == "contains":
        return f"{field} LIKE {pattern} ESCAPE '\\'"
    return f"lower({field}) LIKE lower({pattern}) ESCAPE '\\'"


def _identity_value(field: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if not isinstance(value, str):
            raise InvalidFilter(f"{field} filter values must be strings")
        return validate_id(value, field)

    return convert


def _text(value: Any) -> Any:
    # id and hash are string columns: LanceDB rejects other literals with an internal error.
    if not isinstance(value, str):
        raise InvalidFilter("id and hash filter values must be strings")
    return value


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _as_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidFilter("in/nin take a list")
    if len(value) > MAX_IN_VALUES:
        raise InvalidFilter(f"in/nin take at most {MAX_IN_VALUES} values")
    for item in value:
        sql_literal(item)  # scalars only, with the same checks as single values
    return value


def _metadata_predicate(key: str, op: str, value: Any) -> Predicate:
    if op in ("in", "nin"):
        allowed = _as_list(value)
    elif op in ("contains", "icontains") and not isinstance(value, str):
        raise InvalidFilter(f"{op} needs a string value")
    else:
        sql_literal(value)  # same type checks as SQL values

    def check(row: Mapping[str, Any]) -> bool:
        metadata = row.get("metadata") or {}
        if key not in metadata:
            return op in ("ne", "nin")
        actual = metadata[key]
        try:
            if op == "eq":
                return bool(actual == value)
            if op == "ne":
                return bool(actual != value)
            if op == "gt":
                return bool(actual > value)
            if op == "gte":
                return bool(actual >= value)
            if op == "lt":
                return bool(actual < value)
            if op == "lte":
                return bool(actual <= value)
        except TypeError:
            return False
        if op == "in":
            return actual in allowed
        if op == "nin":
            return actual not in allowed
        if op == "contains":
            return isinstance(actual, str) and value in actual
        return isinstance(actual, str) and value.lower() in actual.lower()

    return check


def _and(nodes: Sequence[_Node]) -> _Node:
    sql = combine_sql(*(n.sql for n in nodes))
    predicates = [n.predicate for n in nodes if n.predicate is not None]
    if not predicates:
        return _Node(sql=sql, predicate=None)
    return _Node(sql=sql, predicate=lambda row: all(p(row) for p in predicates))


_MIXED = (
    "OR/NOT mixing table fields (ids, created_at, updated_at) with metadata keys "
    "is not supported; split the query"
)


def _or(nodes: Sequence[_Node]) -> _Node:
    if all(n.predicate is None for n in nodes):
        return _Node(sql=" OR ".join(f"({n.sql or 'TRUE'})" for n in nodes), predicate=None)
    if any(n.sql for n in nodes):
        raise InvalidFilter(_MIXED)
    checks = [n.predicate for n in nodes if n.predicate is not None]
    return _Node(sql="", predicate=lambda row: any(c(row) for c in checks))


def _not(node: _Node) -> _Node:
    if node.predicate is None:
        return _Node(sql=f"NOT ({node.sql or 'TRUE'})", predicate=None)
    if node.sql:
        raise InvalidFilter(_MIXED)
    check = node.predicate
    return _Node(sql="", predicate=lambda row: not check(row))
