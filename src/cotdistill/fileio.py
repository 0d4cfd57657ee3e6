"""Reading users' text files and writing ours: the one implementation every stage uses.

Users' files are read as UTF-8, with or without a byte-order mark (Excel and Notepad write one);
anything else is a UserError naming the file and line, never a UnicodeDecodeError traceback.

A file is written to a temporary name unique to this writer (process id + random suffix) and
renamed over the target, so a reader never sees half a file, a killed writer leaves at most a
stray temporary, and two writers never rename each other's temporaries away.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cotdistill.errors import UserError


def decode_utf8(data: bytes, path: str | Path, first_line: int = 1) -> str:
    """`data` as text (a leading BOM dropped); a UserError naming the file and line if not UTF-8."""
    try:
        return data.decode("utf-8-sig" if first_line == 1 else "utf-8")
    except UnicodeDecodeError as e:
        line = first_line + data.count(b"\n", 0, e.start)
        raise UserError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as UTF-8 and try again"
        ) from None


def _open_binary(path: str | Path):
    """The file opened for reading bytes; a directory or a missing file is a UserError."""
    try:
        return Path(path).open("rb")
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a file") from None
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None


def read_text(path: str | Path) -> str:
    """A whole text file (see decode_utf8)."""
    with _open_binary(path) as f:
        return decode_utf8(f.read(), path)


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, decoded one at a time (large files are not read whole)."""
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            yield lineno, decode_utf8(raw, path, lineno)


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
