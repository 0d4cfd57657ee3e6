"""Advisory file locks: the one implementation of "one process at a time" (flock).

Used where two processes must not write the same thing at once: a run directory (rundir.py: a
second writer is refused at once, told who holds it) and the one-time conversion of an embedded
student (students.py: a second process, e.g. another DDP rank, waits and then finds it done).

The kernel drops a flock when its holder exits, however it exits, so a killed process never leaves
a lock behind. A lock is re-entrant within a process (a second flock on a new descriptor of the
same file would wait for, or be refused by, the process itself). Where there is no flock
(Windows) nothing is locked: one writer is then the user's business.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

_HELD: dict[Path, int] = {}  # lock files this process holds, and how deeply


class Busy(Exception):
    """Another process holds the lock; `holder` is what it wrote into the lock file ("" if nothing)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


@contextlib.contextmanager
def file_lock(path: Path, *, wait: bool, note: str = "") -> Iterator[None]:
    """Hold an exclusive lock on `path` (created with its folder if missing) for the block.

    `wait`: block until the holder lets go; else raise Busy at once. `note` (who holds it) is
    written into the lock file while held, for a refused process to show. An OSError creating
    the file propagates, for the caller to name what it could not write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = path.resolve()
    if key in _HELD or fcntl is None:
        fd = None
    else:
        fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies, as for any new file
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            if wait:  # not contention (that waits): e.g. no locks on this file system
                os.close(fd)
                raise
            holder = os.read(fd, 4096).decode("utf-8", errors="replace").strip()
            os.close(fd)
            raise Busy(holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, note.encode())
    _HELD[key] = _HELD.get(key, 0) + 1
    try:
        yield
    finally:
        _HELD[key] -= 1
        if not _HELD[key]:
            del _HELD[key]
            if fd is not None:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
