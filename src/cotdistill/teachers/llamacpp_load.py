"""Loading a GGUF into llama.cpp so that it runs on every x86 CPU, or says why it cannot.

On Intel CPUs with AMX (Sapphire Rapids and later) llama.cpp puts Q4_K weights in its AMX buffer
type and the first decode segfaults (llama.cpp #20824): no message, the whole run gone. So:
  * `cpu.llama_extra_buffers` decides from the CPU's flags whether the extra buffer types (AMX,
    repacked Q4) are used; `load_llama` applies that to the model parameters;
  * before a model first runs in-process on a CPU, `probe` loads it in a child process and decodes
    a few tokens. A crash there becomes a one-line error naming the cause and the fix, instead of
    killing the user's run. The verdict is remembered per (model, CPU, llama.cpp version, setting),
    so the probe costs one extra model load once.
`python -m cotdistill.teachers.llamacpp_server` starts llama-cpp-python's OpenAI-compatible server
with the same setting (see that module).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from cotdistill.core.cpu import EXTRA_BUFFERS_ENV, cpu, llama_extra_buffers
from cotdistill.core.errors import UserError

_PATCH_LOCK = threading.Lock()
PROBE_TIMEOUT_S = 600


def use_extra_buffers(extra: bool) -> None:
    """Make every model this process loads from now on use (or not) the extra buffer types.

    llama-cpp-python builds its model parameters from `llama_model_default_params()` and offers no
    argument for this field, so the default itself is wrapped."""
    import llama_cpp.llama_cpp as lib

    original = getattr(lib.llama_model_default_params, "cotdistill_original", lib.llama_model_default_params)

    def default_params():
        params = original()
        params.use_extra_bufts = extra
        return params

    default_params.cotdistill_original = original  # type: ignore[attr-defined]
    lib.llama_model_default_params = default_params


@contextlib.contextmanager
def _extra_buffers(extra: bool):
    import llama_cpp.llama_cpp as lib

    with _PATCH_LOCK:
        before = lib.llama_model_default_params
        use_extra_buffers(extra)
        try:
            yield
        finally:
            lib.llama_model_default_params = before


def load_llama(path: Path, *, sha256: str, check: bool = True, **kwargs):
    """A `llama_cpp.Llama` for `path` with the extra buffer types this CPU tolerates.
    `check` runs the child-process probe first (once per model and CPU)."""
    from llama_cpp import Llama

    extra, _ = llama_extra_buffers()
    if check:
        probe(path, sha256, extra)
    with _extra_buffers(extra):
        return Llama(model_path=str(path), **kwargs)


# ---------------------------------------------------------------- the probe


def _probe_key(sha256: str, extra: bool) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        llama_version = version("llama-cpp-python")
    except PackageNotFoundError:
        llama_version = "?"
    info = cpu()
    flags = hashlib.sha256(" ".join(sorted(info.flags)).encode()).hexdigest()[:12]
    return f"{sha256[:16]}|{info.model}|{flags}|llama-cpp-python {llama_version}|extra_buffers={extra}"


def _probe_file() -> Path:
    from cotdistill.models.embedded import cache_dir

    return cache_dir() / "llamacpp-probes.json"


def _read_probes(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def probe(path: Path, sha256: str, extra: bool) -> None:
    """Run the model once in a child process unless this model, CPU and setting passed before."""
    file = _probe_file()
    key = _probe_key(sha256, extra)
    if _read_probes(file).get(key) == "ok":
        return
    cmd = [sys.executable, "-m", "cotdistill.teachers.llamacpp_load", str(path), "on" if extra else "off"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, errors="replace")
    except subprocess.TimeoutExpired:
        raise UserError(f"llama.cpp did not finish a 4-token test decode of {path.name} in {PROBE_TIMEOUT_S} s") from None
    if done.returncode < 0:
        raise UserError(crash_message(path, -done.returncode, extra))
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-2:])[-300:]
        raise UserError(f"llama.cpp could not run {path} ({tail or f'exit code {done.returncode}'}); is it a valid GGUF file?")
    probes = _read_probes(file)
    probes[key] = "ok"
    from cotdistill.core.fileio import write_json_atomic

    write_json_atomic(file, probes)


def crash_message(path: Path, signum: int, extra: bool) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    info = cpu()
    fix = (
        f"set {EXTRA_BUFFERS_ENV}=off to load it without llama.cpp's AMX/repacked weight buffers"
        if extra
        else "this happens with the extra buffer types already off: try another GGUF quantisation or a newer llama-cpp-python"
    )
    return f"llama.cpp crashed ({name}) running {path.name} on this CPU ({info.describe()}); {fix}"


def _child(path: str, extra: str) -> None:
    """The probe's child: load, decode a short prompt, sample a few tokens greedily."""
    llm = load_llama(Path(path), sha256="", check=False, n_ctx=128, n_batch=64, verbose=False)
    llm.create_completion("The answer is", max_tokens=4, temperature=0.0)
    llm.close()


if __name__ == "__main__":
    os.environ[EXTRA_BUFFERS_ENV] = sys.argv[2]
    _child(sys.argv[1], sys.argv[2])
