"""A stop signal while paid requests are in flight: finish them, keep their answers, then stop.

An HTTP teacher's request that has reached the server is paid for whether or not we read its
answer, so abandoning it on Ctrl-C or SIGTERM pays twice: once now, and again when the rerun asks
for it. While a teacher sends such requests it holds `draining()`; the CLI's signal handler then
calls `defer(signum)` instead of stopping the process at once: no new request starts, those in
flight finish (each within the teacher's own deadline, `timeout_s`) and are committed like any
answer, and the teacher raises Interrupted. A second signal stops at once, as before. Work that is
not paid per request (an in-process llama.cpp or transformers model) stops at the first signal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from cotdistill.core.errors import Interrupted

_draining = 0  # sections in progress that finish their requests in flight on a stop signal
_signum: int | None = None  # the deferred stop signal, once one arrived


@contextlib.contextmanager
def draining() -> Iterator[None]:
    """Paid requests are in flight inside this block: a stop signal is deferred to its end."""
    global _draining
    _draining += 1
    try:
        yield
    finally:
        _draining -= 1


def defer(signum: int) -> bool:
    """Called by the signal handler: True when the stop is deferred (the draining section raises
    Interrupted once its requests in flight are answered); False to stop at once."""
    global _signum
    if not _draining or _signum is not None:
        return False
    _signum = signum
    return True


def requested() -> bool:
    """Whether a deferred stop is waiting: start nothing new."""
    return _signum is not None


def stop_if_requested() -> None:
    """Raise the deferred stop, once the requests in flight are answered and committed."""
    global _signum
    if _signum is not None:
        signum, _signum = _signum, None
        raise Interrupted(signum)
