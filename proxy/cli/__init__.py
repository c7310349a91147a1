"""The ``memproxy`` command: ``serve``, ``check-config``, ``keys hash``, ``queue``, ``memories``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from memory_core.errors import MemoryCoreError

from . import mcp, memories, queue, serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memproxy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve.add_parsers(sub)
    queue.add_parsers(sub)
    memories.add_parsers(sub)
    mcp.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except MemoryCoreError as exc:
        print(f"memproxy: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
