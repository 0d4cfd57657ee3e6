"""Atomic file writes and tolerant JSON reads: the one implementation every stage uses.

A file is written to a temporary name unique to this writer (process id + random suffix) and
renamed over the target, so a reader never sees half a file, a killed writer leaves at most a
stray temporary, and two writers never rename each other's temporaries away.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_lines_atomic(path: str | Path, lines: Iterable[str]) -> None:
    """Write `lines` (each ending in a newline) to `path` atomically, fsynced before the rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    write_lines_atomic(path, [text])


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON object written by an earlier stage (metrics, configs), or {} when it is missing or torn:
    callers show what is there and treat the rest as not yet produced."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
