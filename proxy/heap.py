"""The server's heap and CPython's cyclic garbage collector.

A full collection visits every tracked object, and its pause is added to every request in
flight. Measured in ``memproxy serve`` on 2 cores: the startup's own full collections reach
~400 ms as litellm and LanceDB are imported, and one more while serving (CPython starts one
when the objects surviving younger collections reach a quarter of the long-lived ones, as a
filling cache makes them) stalled 4 requests at once by ~450 ms. Freezing what the startup
built takes those objects out of every later collection (``gc.freeze``, as large Python
servers do); the scope cache's rows are kept untracked for the same reason
(``memory_core.scope_index``).
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
