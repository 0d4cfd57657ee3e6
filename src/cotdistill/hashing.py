"""Content hashes: "has this input changed?" for stages (fingerprint), files of any size
(stream_sha256), and large files hashed once per (path, size, mtime) (file_sha256)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cotdistill.errors import StorageError
from cotdistill.fileio import read_json_object, write_json_atomic

BLOCK = 8 * 1024 * 1024


def cache_root() -> Path:
    """cotdistill's own cache: $COTDISTILL_CACHE, default ~/.cache/cotdistill."""
    return Path(os.environ.get("COTDISTILL_CACHE") or Path.home() / ".cache" / "cotdistill").expanduser()


def stamp(path: Path) -> dict:
    """What tells a file changed without reading it."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def fingerprint(*parts: Any) -> str:
    """Hash of config sections and input files (files by content) deciding if a stage must rerun."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            h.update(file_digest(part).encode())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def file_digest(path: Path) -> str:
    return stream_sha256(path) if path.exists() else "missing"


def stream_sha256(path: Path) -> str:
    """The sha256 of a file of any size, read in blocks (models, data files)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """The sha256 of any file (e.g. a user's GGUF, for a teacher's cache key), remembered in the
    cache under its (path, size, mtime) so that loading a large model does not re-hash it."""
    path = Path(path).resolve()
    key = hashlib.sha256(str(path).encode()).hexdigest()[:32]
    record = cache_root() / "hashes" / f"{key}.json"
    current = {"path": str(path), **stamp(path)}
    recorded = read_json_object(record)  # {} when missing, torn or foreign: hashed again
    if {k: recorded.get(k) for k in current} == current and isinstance(recorded.get("sha256"), str):
        return recorded["sha256"]
    sha = stream_sha256(path)
    try:
        write_json_atomic(record, {**current, "sha256": sha})
    except (OSError, StorageError):
        pass  # a read-only or full cache only costs a re-hash next time
    return sha
