"""schemathesis hooks for tests/test_security_fuzz.py: how to send a JSON Lines body."""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def json_lines(context: Any, value: Any) -> bytes:
    """A generated list becomes one JSON document per line; anything else, one line."""
    items = value if isinstance(value, list) else [value]
    return "\n".join(json.dumps(item) for item in items).encode()
