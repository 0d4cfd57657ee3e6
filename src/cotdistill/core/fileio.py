"""Reading users' text files and writing ours: the one implementation every stage uses.

Users' files are read as UTF-8, with or without a byte-order mark (Excel and Notepad write one);
anything else is a UserError naming the file and line, never a UnicodeDecodeError traceback.

A file is written to a temporary name unique to this writer (process id + random suffix) and
renamed over the target, so a reader never sees half a file, a killed writer leaves at most a
stray temporary, and two writers never rename each other's temporaries away. A symlink is written
through (its target replaced, the link kept: paths.py). A write that fails for want of space,
a file size limit or a read-only location removes its temporary and is a UserError naming the
file and the bytes needed; several files written as one set (write_files_atomic) are all
replaced or none. What a library writes itself (a GGUF writer's file, save_pretrained's folder)
goes to a temporary beside its target the same way (replaced_when_done).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from cotdistill.core.errors import UserError
from cotdistill.core.paths import STORAGE_ERRNOS, expand, special_kind, storage_error


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
    """The file opened for reading bytes; a directory, a missing file, an unreadable one or a
    special file (a FIFO would block forever, a device never ends) is a UserError."""
    path = expand(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer before we can refuse it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"{path}: file not found") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied; check its permissions") from None
    except OSError as e:  # e.g. a symlink loop
        raise UserError(f"{path}: cannot open it ({e.strerror.lower()})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else special_kind(mode)
        raise UserError(f"{path}: is {kind}, expected a file")
    return os.fdopen(fd, "rb")


def input_file(path: str | Path) -> Path:
    """`path` expanded, once it is known to open as a readable regular file (a UserError otherwise):
    for a command to check, before any work, an input it reads only late."""
    path = expand(path)
    with _open_binary(path):
        return path


def read_text(path: str | Path) -> str:
    """A whole text file (see decode_utf8)."""
    with _open_binary(path) as f:
        return decode_utf8(f.read(), path)


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, decoded one at a time (large files are not read whole)."""
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            yield lineno, decode_utf8(raw, path, lineno)


def ends_torn(path: str | Path) -> bool:
    """Whether an append-only log ends in a partial line (a kill mid-write): appending to it as it is
    would glue the next row onto the torn one, and lose both."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return False
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def write_lines_atomic(path: str | Path, lines: Iterable[str]) -> None:
    """Write `lines` (each ending in a newline) to `path` atomically, fsynced before the rename."""
    write_files_atomic({path: (line.encode("utf-8") for line in lines)})


def write_text_atomic(path: str | Path, text: str) -> None:
    write_lines_atomic(path, [text])


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")


def write_files_atomic(files: Mapping[str | Path, Iterable[bytes]]) -> None:
    """Write several files as one: each goes to a temporary beside it (beside its target, where the
    path is a symlink: the link is kept), and only once every one is written and fsynced are they
    renamed into place, so a failure leaves the old set or the new one, never a mix. On any error
    the temporaries are removed; a full disk, a file size limit or a read-only location is a
    UserError naming the file and the bytes the whole set needed."""
    counted = {Path(path): _Counted(chunks) for path, chunks in files.items()}
    temps: list[tuple[str, Path]] = []
    current = None
    try:
        for current, chunks in counted.items():
            temps.append((_write_temp(current, chunks), current))
        for tmp, path in temps:
            os.replace(tmp, os.path.realpath(path))
    except BaseException as e:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
            raise storage_error(e, current, _needed(counted.values())) from None
        raise


@contextlib.contextmanager
def replaced_when_done(target: Path) -> Iterator[Path]:
    """A temporary path beside `target`, unique to this writer, for a library that writes a file or
    a folder itself; when the block ends without error it replaces `target` (a folder there is
    removed first), on any error it is removed: a reader never finds half a model at `target`."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    _remove(tmp)
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():  # a file is replaced by the rename itself
            shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    """A file or a whole folder gone, if it was there (a symlink is removed, not followed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class _Counted:
    """An iterator over a file's chunks that counts the bytes handed out: after a failed write,
    `bytes` plus what is left to iterate is the file's whole size."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self.bytes = 0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        chunk = next(self._chunks)
        self.bytes += len(chunk)
        return chunk


def _mode_for(target: Path) -> int:
    """The permissions of the file being replaced, or those `open` would give a new one (mkstemp's
    0600 would make a shared report or dataset unreadable to others)."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def _needed(files: Iterable[_Counted]) -> int | None:
    """The bytes of every file of a set whose writing failed: what was handed out, plus the rest."""
    try:
        return sum(c.bytes + sum(len(rest) for rest in c) for c in files)
    except Exception:  # the rest could not be produced either (e.g. text that cannot be encoded)
        return None


def _write_temp(path: Path, chunks: Iterable[bytes]) -> str:
    """`chunks` in a new fsynced temporary beside `path`'s target, unique to this writer (two writers
    never rename each other's); its name. On any error it is removed."""
    target = Path(os.path.realpath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _mode_for(target))
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON object written by an earlier stage (metrics, configs), or {} when it is missing or torn:
    callers show what is there and treat the rest as not yet produced."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # ValueError: bad JSON or UTF-8, or an overlong integer
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------- JSON and JSON Lines
#
# One definition of a JSON Lines line, for every reader and writer: a line ends at "\n" and only
# there. str.splitlines also ends lines at U+2028, U+2029 and U+0085, which JSON strings may hold
# raw (its other line ends, \r, \x0b, \x1c..., are control characters JSON always escapes): a reader
# splitting with it would cut a record in two, and so would JavaScript and some editors. So the
# writer escapes those three, and lone surrogates (code points UTF-8 cannot encode, which a JSON
# "\ud800" escape produces), as \u escapes, and readers split at "\n": any Python string round-trips.

JSONL_LINE_END = "\n"
_ESCAPED_IN_JSONL = re.compile("[\u0085\u2028\u2029\ud800-\udfff]")
SURROGATE_RE = re.compile("[\ud800-\udfff]")


def without_surrogates(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD (and a surrogate pair by the character it
    encodes): for text from outside (a teacher's answer) that must become files, SQLite rows, output."""
    if not SURROGATE_RE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def jsonl_line(obj: Any) -> str:
    """`obj` as one JSON Lines line (ending in JSONL_LINE_END): UTF-8 text, with the characters above
    escaped. A high surrogate followed by a low one reads back, as in any JSON, as the one character
    they encode in UTF-16."""
    text = json.dumps(obj, ensure_ascii=False)
    return _ESCAPED_IN_JSONL.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + JSONL_LINE_END


def first_jsonl_line(text: str) -> str:
    """The first line of JSON Lines text (the format sniffer's look at a file)."""
    return text.split(JSONL_LINE_END, 1)[0]


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    return {dict: "an object", list: "a list", str: "text", int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def parse_json(text: str, where: str, fix: str = "") -> Any:
    """json.loads, with every way a text can fail to be read as JSON a UserError naming `where`
    (the file, and its line for JSON Lines) and then `fix` (what to do): bad syntax, nesting deeper
    than Python's recursion allows, an integer longer than Python converts (4300 digits)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        at = f"line {e.lineno} column {e.colno}" if e.lineno > 1 else f"column {e.colno}"
        problem = f"not valid JSON ({e.msg.removesuffix(' at')} at {at})"
    except RecursionError:
        problem = "not readable JSON (nested too deeply)"
    except ValueError:  # int(): "Exceeds the limit (4300 digits) for integer string conversion"
        problem = f"not readable JSON (an integer longer than {sys.get_int_max_str_digits()} digits)"
    raise UserError(f"{where}: {problem}" + (f"; {fix}" if fix else ""))


def check_fields(obj: Any, fields: dict[str, tuple[type, ...]], where: str, fix: str) -> dict[str, Any]:
    """`obj` if it is a JSON object whose fields have the JSON types `fields` allows (a name ending in
    "?" may be missing); else a UserError naming `where`, the field, and `fix` (what to do)."""
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object, got {json_type(obj)}; {fix}")
    for name, types in fields.items():
        key = name.rstrip("?")
        if key not in obj:
            if name.endswith("?"):
                continue
            raise UserError(f"{where}: no '{key}' field; {fix}")
        value = obj[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join(dict.fromkeys(json_type(t()) if t is not type(None) else "null" for t in types))
            raise UserError(f"{where}: '{key}' is {json_type(value)}, expected {expected}; {fix}")
    return obj


def read_json_file(path: str | Path, fields: dict[str, tuple[type, ...]], fix: str) -> dict[str, Any]:
    """A JSON object that cotdistill wrote (a manifest, a summary), checked against `fields`; torn or
    foreign content is a UserError naming the file and saying what to do (`fix`)."""
    return check_fields(parse_json(read_text(path), str(path), fix), fields, str(path), fix)


def read_jsonl_file(path: str | Path, fields: dict[str, tuple[type, ...]], fix: str, *, skip_bad: bool = False) -> list[dict[str, Any]]:
    """The rows of a JSON Lines file that cotdistill wrote, each checked against `fields`; a missing
    file has none. A torn or foreign line is a UserError naming the file and line and `fix` (what to
    do); with `skip_bad` (an append-only log a kill can tear, whose rows are only a resume's head
    start) such lines are dropped instead."""
    if not Path(path).exists():
        return []
    rows = []
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rows.append(check_fields(parse_json(line, where, fix), fields, where, fix))
        except UserError:
            if not skip_bad:
                raise
    return rows
