"""A fine-tuned causal student evaluated on llama.cpp (`evaluate.engine: llamacpp`, or auto on a CPU).

On a CPU llama.cpp decodes a small student several times faster than transformers. The student is
exported once to a GGUF in its own folder (models/gguf.py: STUDENT/gguf/NAME-TYPE.gguf, the file
`cotdistill export --gguf` writes too), re-exported whenever the student's weights are newer than
the file (gguf.current_exports), and run on the teacher's batched engine (teachers/llamacpp_batch.py:
continuous slots, a shared prompt prefix evaluated once, k samples of one prompt sharing one prefill).

What the torch path does, this does too, so that only the arithmetic differs:
  * the prompts are the same text, encoded by the student's own tokenizer exactly as the torch path
    encodes them (generation._encode: its own BOS behaviour, no trailing EOS), and handed to llama.cpp
    as token ids: llama.cpp's tokenizer is never asked, so BOS and pre-tokenisation cannot differ;
  * a sequence ends at EOS (the export sets the GGUF's EOS to the student's), at a stop string, or
    as soon as its first final-answer sentence is complete (generation.answer_complete), and its text
    is read by generation.finish_text;
  * greedy decoding is the argmax; with a temperature, samples are seeded from (seed, sample).
`tokens` counts generated tokens without the EOS that ended a sequence (the torch path counts it).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotdistill.core.errors import UserError
from cotdistill.core.fileio import read_json_object
from cotdistill.core.hashing import fingerprint, model_files
from cotdistill.core.sampling import PROMPT_TOO_LONG, Request, SamplingParams, derive_seed
from cotdistill.evaluation.generation import Generation, answer_complete, finish_text

if TYPE_CHECKING:
    from cotdistill.evaluation.evaluate import EvalOptions, GenerationJob

TORCH, LLAMACPP = "torch", "llamacpp"
# Specs that name their backend themselves: evaluate.engine does not apply to them.
BACKEND_KINDS = ("embedded", "gguf", "openai", "vllm")
MAX_CTX = 32768  # KV cells of the batched context at most (admission waits for room beyond that)


def student_folder(spec: str) -> Path | None:
    """The local model folder a transformers spec names ("hf:PATH" or PATH), None for anything else."""
    path = Path(spec[3:] if spec.startswith("hf:") else spec).expanduser()
    return path if path.is_dir() else None


def names_backend(spec: str) -> bool:
    kind, sep, _ = spec.partition(":")
    return bool(sep) and kind in BACKEND_KINDS and not Path(spec).expanduser().exists()


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def exportable(folder: Path) -> str | None:
    """Why the student in `folder` cannot be evaluated on llama.cpp, None when it can."""
    from cotdistill.models.gguf import ARCHITECTURES, base_gguf_of, is_seq2seq

    if not ((folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()):
        return f"{folder} holds no trained model (no config.json or adapter_config.json)"
    if is_seq2seq(folder):
        return "a seq2seq (T5) student has no llama.cpp export; only causal students (Gemma3, Qwen2, Llama) do"
    try:
        base_gguf_of(folder)
    except UserError as e:
        return str(e)
    config = folder / "config.json"
    if config.is_file():
        model_type = read_json_object(config).get("model_type")
        if model_type not in ARCHITECTURES:
            return f"a {model_type} student; the GGUF export supports {', '.join(sorted(ARCHITECTURES))}"
    return None


def resolve_engine(spec: str, options: EvalOptions) -> str:
    """torch or llamacpp for a transformers spec as `options.engine` decides on this machine (auto
    resolved); the backend's kind for specs that name one (embedded, gguf, openai, vllm).
    An impossible explicit `llamacpp` is a UserError saying why."""
    if names_backend(spec):
        kind = spec.partition(":")[0]
        return LLAMACPP if kind in ("embedded", "gguf") else kind
    if options.engine == TORCH:
        return TORCH
    folder = student_folder(spec)
    if options.engine == LLAMACPP:
        if folder is None:
            raise UserError(f"--engine llamacpp: {spec} is not a fine-tuned student folder; llama.cpp evaluates "
                            "students exported to GGUF (for a GGUF file use gguf:PATH, for an embedded model embedded:NAME)")
        why = exportable(folder)
        if why is not None:
            raise UserError(f"--engine llamacpp: {folder}: {why}; evaluate it with --engine torch")
        if not llama_cpp_installed():
            from cotdistill.core.errors import missing_extra

            raise missing_extra("llama-cpp-python", "llama")
        return LLAMACPP
    # auto: llama.cpp only where it is the faster engine and can run this student.
    if folder is None or cuda_available() or not llama_cpp_installed() or exportable(folder) is not None:
        return TORCH
    return LLAMACPP


def eval_gguf(folder: Path, qtype: str, quiet: bool = True) -> Path:
    """The student's current GGUF of type `qtype` (STUDENT/gguf/NAME-TYPE.gguf), exported when there
    is none or it is older than the student's weights (a retrained student is never run stale)."""
    from cotdistill.core.locks import file_lock
    from cotdistill.models.gguf import current_exports, export_gguf

    out = folder / "gguf"
    path = out / f"{folder.name}-{qtype}.gguf"
    out.mkdir(parents=True, exist_ok=True)
    with file_lock(out / f".{path.name}.lock", wait=True, note="evaluate: GGUF export"):  # two evaluations of one student export it once
        if path not in current_exports(folder):
            if not quiet:
                print(f"exporting {folder} to {path} for llama.cpp ...", flush=True)
            export_gguf(folder, out, qtype, name=path.stem)
    return path


def student_tokenizer(folder: Path) -> Any:
    """The tokenizer training encoded the student's prompts with (an adapter folder without one: its base's)."""
    from transformers import AutoTokenizer

    from cotdistill.models.gguf import student_base
    from cotdistill.models.students import resolve

    seen: set[Path] = set()
    while not (folder / "tokenizer_config.json").is_file():
        base = student_base(folder)
        if base is None or folder in seen:
            raise UserError(f"{folder}: no tokenizer, and no base model recorded to take it from")
        seen.add(folder)
        folder = Path(resolve(base, quiet=True))
    return AutoTokenizer.from_pretrained(str(folder))


def file_type_name(file_type: Any) -> str | None:
    """A GGUF's general.file_type (an int, or its text as llama-cpp-python's metadata holds it) in
    llama.cpp's words: f16, q8_0, q4_k_m."""
    try:
        from gguf import LlamaFileType

        return LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_").lower()
    except (ImportError, TypeError, ValueError):  # no gguf package, no or an unknown type: the card says nothing
        return None


class LlamaCppStudent:
    """A fine-tuned causal student, exported to GGUF, on llama.cpp's batched engine (see the module)."""

    engine = LLAMACPP

    def __init__(self, spec: str, options: EvalOptions):
        from cotdistill.core.cpu import physical_cores
        from cotdistill.teachers.llamacpp import import_llama_cpp

        import_llama_cpp()
        folder = student_folder(spec)
        assert folder is not None  # resolve_engine chose llamacpp for a student folder only
        self.folder, self.options = folder, options
        self.chat = False
        self.train_config = read_json_object(folder / "train_config.json")
        # The model is the student's weights (as for torch); the engine and GGUF type enter the
        # evaluation's fingerprint beside it (evaluate._fingerprint).
        self.name = f"{spec}@{fingerprint(*model_files(folder))}"
        self.gguf_type = options.gguf_type
        self.gguf = eval_gguf(folder, options.gguf_type, options.quiet)
        self.tokenizer = student_tokenizer(folder)
        self.n_threads = physical_cores()
        self.llm = self._load()

    def _load(self) -> Any:
        from cotdistill.core.hashing import file_sha256
        from cotdistill.teachers.llamacpp_load import load_llama

        try:  # this context only carries the model; decoding runs in the batched engine's own context
            return load_llama(self.gguf, sha256=file_sha256(self.gguf), n_ctx=256, n_batch=256,
                              n_threads=self.n_threads, n_threads_batch=self.n_threads, verbose=False)
        except ValueError as e:
            raise UserError(f"llama.cpp could not load {self.gguf} ({e}); delete it to export it again") from None

    def encode(self, prompt: Any) -> list[int]:
        from cotdistill.evaluation.generation import _encode

        return _encode(self.tokenizer, prompt, seq2seq=False)

    def generate(self, jobs: list[GenerationJob], stop: tuple[str, ...],
                 on_batch: Callable[[list[GenerationJob], list[Generation]], None]) -> None:
        from cotdistill.teachers.llamacpp_batch import BatchedEngine

        o = self.options
        prompts = [self.encode(j.prompt) for j in jobs]
        need = max(len(p) for p in prompts) + o.max_new_tokens
        slots = min(o.batch_size, len(jobs))
        engine = BatchedEngine(self.llm, n_ctx=max(need, min((slots + 1) * need, MAX_CTX)), n_batch=512,
                               n_parallel=slots, n_threads=self.n_threads)
        # Seeds as the torch path derives them: a function of (seed, sample, prompt) only.
        requests = [Request(j.prompt, SamplingParams(temperature=o.temperature, max_tokens=o.max_new_tokens, stop=stop,
                                                     seed=derive_seed(o.seed, j.sample, j.prompt)), sample=j.sample)
                    for j in jobs]

        def done(i: int, c) -> None:
            text = "" if c.finish_reason == PROMPT_TOO_LONG else finish_text(c.text, stop)
            on_batch([jobs[i]], [Generation(text, c.completion_tokens, c.finish_reason)])

        try:
            engine.generate(prompts, requests, done, until=answer_complete)
        finally:
            engine.close()

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None
