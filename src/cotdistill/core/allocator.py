"""Which malloc the process runs on: jemalloc where the system has it, glibc's otherwise.

Training allocates activation buffers of a different size at every step (batches of different
lengths). glibc's malloc keeps the freed ones in its heaps, fragmented, and the process grows by
about 2 GiB over a recipe's training loop: the cpu-math CoT loop peaks at 6.8 GiB for a worst step
of 4.8 (docs/benchmarks.md §3c). jemalloc returns them: the same loop peaks at 4.9 GiB.

A process cannot change its malloc once it runs, so the console script starts itself again with
jemalloc preloaded (LD_PRELOAD) before doing anything, as PyTorch's CPU launcher does with
`--enable-jemalloc`. It needs the system's library (Debian/Ubuntu: `apt install libjemalloc2`;
no PyPI package ships it). COTDISTILL_ALLOCATOR chooses: auto (jemalloc when found, the default),
jemalloc (required: an error when missing), system (glibc's, no restart).
"""

from __future__ import annotations

import ctypes.util
import os
import sys

from cotdistill.core.errors import UserError

SETTING = "COTDISTILL_ALLOCATOR"
CHOICES = ("auto", "jemalloc", "system")


def jemalloc_library() -> str | None:
    """The shared library's name as the dynamic loader finds it (e.g. libjemalloc.so.2), or None."""
    return ctypes.util.find_library("jemalloc")


def in_use() -> str:
    """The allocator this process runs on, for the manifest: jemalloc when it is loaded, else system."""
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
            return "jemalloc" if "libjemalloc" in maps.read() else "system"
    except OSError:
        return "system"


def restart_with_jemalloc() -> None:
    """Replace this process by the same command with jemalloc preloaded, when COTDISTILL_ALLOCATOR
    and the system allow; return when it stays as it is. Call it first thing in the console script."""
    choice = os.environ.get(SETTING, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise UserError(f"{SETTING}={choice!r}: use one of {', '.join(CHOICES)}")
    if choice == "system" or not sys.platform.startswith("linux") or "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        return  # asked for glibc's, not Linux, or started with it preloaded already (by us or the user)
    library = jemalloc_library()
    if library is None:
        if choice == "jemalloc":
            raise UserError(f"{SETTING}=jemalloc but no jemalloc library was found; install it "
                            f"(Debian/Ubuntu: apt install libjemalloc2) or set {SETTING}=auto")
        return
    preload = os.environ.get("LD_PRELOAD", "")
    os.environ["LD_PRELOAD"] = f"{library} {preload}".strip()
    for stream in (sys.stdout, sys.stderr):  # None when started with it closed (`>&-`): main() says so after
        if stream is not None:
            stream.flush()
    os.execv(sys.executable, sys.orig_argv)
