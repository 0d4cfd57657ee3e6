"""The `cotdistill` console script and `python -m cotdistill`: onto jemalloc first where the system has
it (core/allocator.py: a restart, before anything heavy is imported), then the command line."""

from __future__ import annotations

import sys


def onto_jemalloc() -> None:
    """Restart this command on jemalloc where COTDISTILL_ALLOCATOR and the system allow; a bad
    setting is one line and exit 2, like any user error."""
    from cotdistill.core.allocator import restart_with_jemalloc
    from cotdistill.core.errors import UserError

    try:
        restart_with_jemalloc()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    onto_jemalloc()
    from cotdistill.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
