"""Content hashes: "has this input changed?" for stages (fingerprint), files of any size
(stream_sha256), and large files hashed once per (path, size, mtime) (file_sha256).

`fingerprint` is the one change fingerprint: the pipeline's stages, training and evaluation's
resumption all use it, and it reads files by content, never by name or date, so a run directory
that was copied or restored (new mtimes, same bytes) is up to date everywhere, and a file whose
bytes changed is not, even at the same size. Files of BLOCK bytes or more (weights) are hashed once
per (path, size, mtime) through file_sha256's cache; smaller ones are read each time, which costs
less than the cache and cannot be fooled by two writes within one timestamp tick.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cotdistill.core.errors import StorageError
from cotdistill.core.fileio import read_json_object, write_json_atomic

BLOCK = 8 * 1024 * 1024
CARD = "README.md"  # a saved model's card: the name the hub and `huggingface_hub.ModelCard.load` look for


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
    """A file's sha256 for `fingerprint` ("missing" when absent)."""
    if not path.exists():
        return "missing"
    return file_sha256(path) if path.stat().st_size >= BLOCK else stream_sha256(path)


def model_files(model_dir: Path) -> list[Path]:
    """Every file that makes up a saved model (weights in one file or shards, a LoRA adapter,
    tokenizer, config), so that retraining it in any form changes its fingerprint.
    Checkpoints, TensorBoard logs, lock files, the model card (written from the evaluations) and
    the GGUF exports in gguf/ (written from the model, e.g. by an evaluation on llama.cpp) are not
    the model. A hub name or embedded spec has no files here."""
    if not model_dir.is_dir():
        return []
    return sorted(p for p in model_dir.rglob("*")
                  if p.is_file() and not {"checkpoints", "tensorboard", "gguf"} & set(p.relative_to(model_dir).parts)
                  and not p.name.startswith(".") and p.relative_to(model_dir) != Path(CARD))


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
