"""Peak memory of one stage, for the timings table and train_metrics.json.

A thread samples this process's resident set size while the stage runs. Resetting the kernel's
high-water mark instead (/proc/self/clear_refs) would be exact but would also erase the peak that
getrusage and `/usr/bin/time` report for the whole process; a stage's peak lasts for many
training steps or generated tokens, so 50 ms samples catch it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType


def rss_bytes() -> int | None:
    """Resident memory of this process now (Linux /proc; None elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory:
    """`with PeakMemory() as peak: ...` then `peak.gib`: the highest resident memory seen inside."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.peak: int | None = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._update()

    def _update(self) -> None:
        now = rss_bytes()
        if now is not None:
            self.peak = max(self.peak or 0, now)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._update()

    @property
    def gib(self) -> float | None:
        return None if self.peak is None else round(self.peak / 2**30, 2)
