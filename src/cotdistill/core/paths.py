"""What a path the user gives us may be, decided once, before any work: outputs, `~`, full disks.

Every command that writes checks its outputs first with `output_file` (a file it writes whole and
replaces) or `output_dir` (a folder it creates or fills), so a path that cannot work is one line
naming it before a model loads or a teacher is paid, never a traceback after. What is allowed:

- a file to write: a missing path whose nearest existing ancestor is a writable folder, or a
  regular file (replaced atomically: fileio writes a temporary beside it and renames it over);
- a folder: a missing path under a writable folder, or an existing writable folder;
- never a special file (a FIFO, a device such as /dev/null, a socket): cotdistill would replace it;
- a symlink stands for its target, like a shell's `>` or `cp`: the target is checked and written
  (replaced atomically, the link kept), whether it is a file or a folder;
- `~` and `~user` at the start of a path are expanded wherever a path comes from the command line
  or a config (`run_dir: ~/runs/x`, `--out=~/x`, data files, exemplar files, caches);
- a read-only location (a read-only mount, or a folder this user may not write) is refused as
  such. Permission bits do not stop root, a read-only mount does: both are asked of the kernel.

A write that fails anyway (the disk fills, `ulimit -f`, a quota) is turned into one line naming the
path and the space it needed by `storage_error`, for the writers and for the CLI's last resort.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from cotdistill.core.errors import StorageError, UserError

# errno -> (what happened, what to do): the write failures a user fixes by freeing space, raising a
# limit or choosing another place. Anything else stays a bug with its traceback.
STORAGE_ERRNOS = {
    errno.ENOSPC: ("no space left on the device", "free some space"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or raise the quota"),
    errno.EFBIG: ("larger than the file size limit (ulimit -f)", "raise the limit"),
    errno.EROFS: ("read-only file system", "choose a writable location"),
    errno.EACCES: ("permission denied", "check its permissions or choose another location"),
    errno.EPERM: ("operation not permitted", "check its permissions or choose another location"),
}

_SPECIAL = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def expand(path: str | Path) -> Path:
    """`path` with a leading `~` or `~user` expanded (a literal `./~` folder is never what was meant)."""
    return Path(os.path.expanduser(str(path)))


def special_kind(mode: int) -> str | None:
    """What a non-regular, non-directory file is ("a named pipe (FIFO)"), or None for files and folders."""
    return next((name for test, name in _SPECIAL if test(mode)), None)


def output_file(path: str | Path, option: str, what: str = "output file") -> Path:
    """`path` expanded, once it is known that a file can be written there (see the module doc);
    otherwise a UserError naming it, `what` it is and the `option` to change."""
    path, target, mode = _existing(path, option, what)
    if mode is None:
        return path
    if stat.S_ISDIR(mode):
        raise _refuse(path, what, option, "it is a folder; give a file name")
    if kind := special_kind(mode):
        raise _refuse(path, what, option, f"it is {kind}, not a regular file")
    _check_writable(path, target.parent, option, what)
    return path


def output_dir(path: str | Path, option: str, what: str = "output folder") -> Path:
    """`path` expanded, once it is known to be a folder that can be filled or created (see the
    module doc); otherwise a UserError naming it, `what` it is and the `option` to change."""
    path, target, mode = _existing(path, option, what)
    if mode is None:
        return path
    if not stat.S_ISDIR(mode):
        raise _refuse(path, what, option, f"it is {special_kind(mode) or 'a file'}, not a folder")
    _check_writable(path, target, option, what)
    return path


def _existing(path: str | Path, option: str, what: str) -> tuple[Path, Path, int | None]:
    """(`path` expanded, what it resolves to through symlinks, that target's mode); the mode is None
    when nothing is there yet and it can be created (else a UserError)."""
    path = expand(path)
    target = Path(os.path.realpath(path))
    try:
        return path, target, target.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        _check_can_create(path, target.parent, option, what)
        return path, target, None
    except OSError as e:  # e.g. a symlink loop
        raise _refuse(path, what, option, e.strerror.lower()) from None


def storage_error(e: OSError, path: str | Path | None = None, needed: int | None = None) -> StorageError | None:
    """The one-line error for a write that failed for lack of space or rights (see STORAGE_ERRNOS),
    naming `path` (else the error's own file name) and, where known, the bytes `needed` and those
    free; None for any other OSError."""
    if e.errno not in STORAGE_ERRNOS:
        return None
    happened, fix = STORAGE_ERRNOS[e.errno]
    where = path or e.filename  # a write to an open file does not say which file it was
    space = ""
    if needed is not None and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        free = _free_bytes(Path(where)) if where and e.errno != errno.EFBIG else None
        space = f": it needs {human_bytes(needed)}" + (f", {human_bytes(free)} are free there" if free is not None else "")
    return StorageError(f"{where}: {happened}{space}; {fix} and rerun the same command" if where else
                        f"{happened} while writing; {fix} and rerun the same command")


# Libraries that write model files report a failed write in their own words: safetensors as
# "... (os error 28)", torch.save as a RuntimeError of its zip writer with no errno at all.
_OS_ERROR_RE = re.compile(r"\(os error (\d+)\)")
_TORCH_WRITER_WORDS = ("PytorchStreamWriter", "inline_container")
NEARLY_FULL = 16 * 2**20  # free bytes under which a writer's wordless failure is taken for a full disk


@contextlib.contextmanager
def library_writes(folder: Path) -> Iterator[None]:
    """While libraries write model files into `folder` (checkpoints, saved students), a write that
    fails for lack of space or rights is one line naming the folder, like our own writers' failures;
    anything else propagates unchanged."""
    try:
        yield
    except Exception as e:
        error = _library_storage_error(e, folder)
        if error is None:
            raise
        raise error from None


def _library_storage_error(e: Exception, folder: Path) -> UserError | None:
    if isinstance(e, OSError):
        return storage_error(e, e.filename or folder)
    found = _OS_ERROR_RE.search(str(e))
    if found:
        code = int(found.group(1))
        return storage_error(OSError(code, os.strerror(code)), folder)
    free = _free_bytes(folder)
    if any(w in str(e) for w in _TORCH_WRITER_WORDS) and free is not None and free < NEARLY_FULL:
        return storage_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), folder)
    return None


def human_bytes(n: int) -> str:
    """1234567 -> "1.2 MB" (decimal units, as df -H and file managers show them)."""
    if n < 1000:
        return f"{n} bytes"
    size = float(n)
    for unit in ("kB", "MB", "GB", "TB"):
        size /= 1000
        if size < 1000:
            break
    return f"{size:.1f} {unit}"


def _free_bytes(path: Path) -> int | None:
    existing = _nearest_existing(path)
    try:
        return shutil.disk_usage(existing).free
    except OSError:
        return None


def _nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists (as anything: a file ancestor is what we report)."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _check_can_create(path: Path, parent: Path, option: str, what: str) -> None:
    """A missing `path` can be created when its nearest existing ancestor is a writable folder."""
    existing = _nearest_existing(parent)
    if not existing.is_dir():
        raise _refuse(path, what, option, f"it lies under {existing}, which is a file, not a folder")
    _check_writable(path, existing, option, what)


def _check_writable(path: Path, folder: Path, option: str, what: str) -> None:
    """`folder` (where the temporary and the rename happen) must take new files."""
    if os.access(folder, os.W_OK | os.X_OK):
        return
    read_only = hasattr(os, "statvfs") and bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    reason = f"{folder} is on a read-only file system" if read_only else f"{folder} is not writable by this user"
    raise _refuse(path, what, option, reason)


def _refuse(path: Path, what: str, option: str, reason: str) -> UserError:
    return UserError(f"{path}: cannot write the {what} ({reason}); choose another {option}")
