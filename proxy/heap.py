"""The server's heap and CPython's cyclic garbage collector.

A full collection visits every tracked object, and its pause is the request latency of every
request in flight: measured in ``memproxy serve`` on 2 cores, 100-500 ms pauses once a few
hundred scopes were cached, most of it the objects of the imports (litellm's, LanceDB's)
that live as long as the process. Freezing what the startup built moves those objects out of
every later collection (``gc.freeze``, as large Python servers do); the scope cache's rows
are kept untracked for the same reason (``memory_core.scope_index``).
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect the startup's garbage, then exempt every object still alive from later
    collections (they are still freed when no longer referenced); returns how many."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


__all__ = ["freeze_startup_heap"]
