"""One machine-wide token for the query embedding that may use a second core.

A query embedded while nothing else is (no other query queued, no passages being embedded)
runs on a two-thread ONNX session: 2.5 ms instead of 3.6 on a 2-core host, the same vector
bit for bit (``e5_engine``). Two processes doing it at once on those 2 cores are slower than
either alone (measured: 150 embeddings/s each against 272 with one thread), so every
process of one machine shares one token: a non-blocking ``flock`` on one file in the temp
dir. Whoever holds it embeds on two threads; the others use one, never wait for it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no token, one thread per embedding
    fcntl = None  # type: ignore[assignment]

DEFAULT_PATH = Path(tempfile.gettempdir()) / "memproxy-spare-core.lock"


class SpareCore:
    """The token (``take`` / ``give_back``), for one thread at a time in a process."""

    def __init__(self, path: Path = DEFAULT_PATH) -> None:
        self._path = path
        self._fd: int | None = None
        self._unusable = fcntl is None

    def take(self) -> bool:
        """True when the caller holds the token now (``give_back`` it after); False when
        another process holds it, or the lock file cannot be opened (then never again)."""
        if self._unusable:
            return False
        try:
            if self._fd is None:
                # Read-only, no symlink followed: the file is only ever locked, never written.
                flags = os.O_RDONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                self._fd = os.open(self._path, flags, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:
            self._unusable = True
            return False
        return True

    def give_back(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # also releases the lock
            self._fd = None


__all__ = ["DEFAULT_PATH", "SpareCore"]
