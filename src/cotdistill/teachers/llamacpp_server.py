"""llama-cpp-python's OpenAI-compatible server, started so that it runs on every x86 CPU.

    python -m cotdistill.teachers.llamacpp_server --model model.gguf --host 127.0.0.1 --port 8000

takes exactly the arguments of `python -m llama_cpp.server`, but first applies the CPU's safe
choice of llama.cpp's extra weight buffers (cpu.llama_extra_buffers: off on AMX CPUs, where the
stock server segfaults on its first request) and, for a GGUF given by --model, runs the same
child-process probe as the in-process teacher, so that a crash is a message, not a dead server.
Point a teacher at it with `openai:MODEL@http://127.0.0.1:8000/v1`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cotdistill.core.cpu import llama_extra_buffers
from cotdistill.core.errors import UserError


def _model_arg(argv: list[str]) -> Path | None:
    for i, arg in enumerate(argv):
        if arg == "--model" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--model="):
            return Path(arg.split("=", 1)[1])
    return None


def main(argv: list[str] | None = None) -> None:
    from cotdistill.core.hashing import file_sha256
    from cotdistill.teachers.llamacpp import import_llama_cpp
    from cotdistill.teachers.llamacpp_load import probe, use_extra_buffers

    argv = sys.argv[1:] if argv is None else argv
    import_llama_cpp()
    extra, why = llama_extra_buffers()
    print(f"cotdistill: llama.cpp extra weight buffers {'on' if extra else 'off'} ({why})", file=sys.stderr)
    model = _model_arg(argv)
    try:
        if model is not None and model.is_file():
            probe(model, file_sha256(model), extra)
    except UserError as e:
        sys.exit(f"error: {e}")
    use_extra_buffers(extra)
    from llama_cpp.server.__main__ import main as server_main

    sys.argv = ["llama_cpp.server", *argv]
    server_main()


if __name__ == "__main__":
    main()
