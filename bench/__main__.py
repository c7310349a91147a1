"""``python -m bench NAME [options]``: run one benchmark.

Each benchmark is a module of this package with a ``main(argv: list[str]) -> int``; add yours to
``BENCHMARKS`` below (name -> module).
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS: dict[str, str] = {
    "locomo": "bench.locomo",  # retrieval recall on LoCoMo (tests the memory_core search)
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in BENCHMARKS:
        print("usage: python -m bench {" + ",".join(sorted(BENCHMARKS)) + "} [options]")
        print("       python -m bench NAME --help   for a benchmark's options")
        return 0 if args and args[0] in ("-h", "--help") else 2
    module = importlib.import_module(BENCHMARKS[args[0]])
    result: int = module.main(args[1:])
    return result


if __name__ == "__main__":
    sys.exit(main())
