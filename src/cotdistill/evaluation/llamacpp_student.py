"""A fine-tuned causal student evaluated on llama.cpp (`evaluate.engine: llamacpp`): the engine and file
users deploy a small model with, so its accuracy is the deployed model's. The student is
exported once to a GGUF in its own folder (models/gguf.py: RUN/students/MODE/gguf/RUN-MODE-TYPE.gguf,
the file `cotdistill export --gguf` writes too), re-exported whenever the student's weights are newer than
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


def llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def exportable(folder: Path) -> str | None:
    """Why the student in `folder` cannot be evaluated on llama.cpp (naming the folder), None when it can."""
    from cotdistill.models.gguf import ARCHITECTURES, base_gguf_of, is_seq2seq

    if not ((folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()):
        return f"{folder} holds no trained model (no config.json or adapter_config.json)"
    if is_seq2seq(folder):
        return f"{folder}: a seq2seq (T5) student has no llama.cpp export; only causal students (Gemma3, Qwen2, Llama) do"
    try:
        base_gguf_of(folder)
    except UserError as e:
        return str(e)
    config = folder / "config.json"
    if config.is_file():
        model_type = read_json_object(config).get("model_type")
        if model_type not in ARCHITECTURES:
            return f"{folder}: a {model_type} student; the GGUF export supports {', '.join(sorted(ARCHITECTURES))}"
    return None


def resolve_engine(spec: str, options: EvalOptions) -> str:
    """torch or llamacpp for a transformers spec as `options.engine` says; the backend's kind for specs
    that name one (embedded, gguf, openai, vllm).
    An impossible explicit `llamacpp` is a UserError saying why."""
    if names_backend(spec):
        kind = spec.partition(":")[0]
        return LLAMACPP if kind in ("embedded", "gguf") else kind
    if options.engine == TORCH:
        return TORCH
    folder = student_folder(spec)
    if folder is None:
        raise UserError(f"--engine llamacpp: {spec} is not a fine-tuned student folder; llama.cpp evaluates "
                        "students exported to GGUF (for a GGUF file use gguf:PATH, for an embedded model embedded:NAME)")
    why = exportable(folder)
    if why is not None:
        raise UserError(f"--engine llamacpp: {why}; evaluate it with --engine torch")
    if not llama_cpp_installed():
        from cotdistill.core.errors import missing_extra

        raise missing_extra("llama-cpp-python", "llama")
    return LLAMACPP


def export_name(folder: Path, qtype: str) -> str:
    """RUN-MODE-TYPE for a student at RUN/students/MODE, the name `cotdistill export RUN --student MODE
    --gguf` gives its file, so that each reuses the other's export; FOLDER-TYPE elsewhere."""
    folder = folder.resolve()
    if folder.parent.name == "students":
        return f"{folder.parent.parent.name}-{folder.name}-{qtype}"
    return f"{folder.name}-{qtype}"


def eval_gguf(folder: Path, qtype: str, quiet: bool = True, base_gguf: Path | None = None) -> Path:
    """The student's current GGUF of type `qtype` (STUDENT/gguf/NAME.gguf, `export_name`), exported when
    there is none or it is older than the student's weights (a retrained student is never run stale).
    `base_gguf`: the GGUF the weights came from, where the folder does not record it (gguf.export_gguf)."""
    from cotdistill.core.locks import file_lock
    from cotdistill.models.gguf import current_exports, export_gguf

    out = folder / "gguf"
    path = out / f"{export_name(folder, qtype)}.gguf"
    out.mkdir(parents=True, exist_ok=True)
    with file_lock(out / f".{path.name}.lock", wait=True, note="evaluate: GGUF export"):  # two evaluations of one student export it once
        if path not in current_exports(folder):
            if not quiet:
                print(f"exporting {folder} to {path} for llama.cpp ...", flush=True)
            export_gguf(folder, out, qtype, name=path.stem, base_gguf=base_gguf)
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


class LlamaCppGenerator:
    """A GGUF on llama.cpp's batched engine, asked as generation.generate_batched asks a transformers
    model: prompts as text, encoded by `tokenizer` (the student's), Generations back in prompt order."""

    def __init__(self, gguf: Path, tokenizer: Any, n_threads: int | None = None):
        import torch

        from cotdistill.core.cpu import physical_cores
        from cotdistill.core.hashing import file_sha256
        from cotdistill.teachers.llamacpp import import_llama_cpp
        from cotdistill.teachers.llamacpp_load import load_llama

        import_llama_cpp()
        self.gguf, self.tokenizer = gguf, tokenizer
        # As many threads as the torch path uses (torch's own setting, by default the physical cores):
        # the engines compare on equal terms, and a caller that limits torch limits llama.cpp too.
        self.n_threads = n_threads or torch.get_num_threads() or physical_cores()
        try:  # this context only carries the model; decoding runs in the batched engine's own context
            self.llm = load_llama(gguf, sha256=file_sha256(gguf), n_ctx=256, n_batch=256,
                                  n_threads=self.n_threads, n_threads_batch=self.n_threads, verbose=False)
        except ValueError as e:
            raise UserError(f"llama.cpp could not load {gguf} ({e}); delete it to export it again") from None

    def encode(self, prompt: str) -> list[int]:
        from cotdistill.evaluation.generation import _encode

        return _encode(self.tokenizer, prompt, seq2seq=False)

    def generate(self, prompts: list[str], *, max_new_tokens: int = 256, batch_size: int = 16, stop: tuple[str, ...] = (),
                 temperature: float = 0.0, seeds: list[int] | None = None,
                 on_batch: Callable[[list[int], list[Generation]], None] | None = None) -> list[Generation]:
        """Up to `batch_size` sequences decoding together (continuous slots, the prompts' common prefix
        evaluated once); with a temperature, prompt i samples from its own generator seeded `seeds[i]`."""
        from cotdistill.teachers.llamacpp_batch import BatchedEngine

        if not prompts:
            return []
        encoded = [self.encode(p) for p in prompts]
        need = max(len(p) for p in encoded) + max_new_tokens
        slots = min(batch_size, len(prompts))
        seeds = seeds if seeds is not None else [derive_seed(0, i) for i in range(len(prompts))]
        # sample=0: Request.seed then depends on the seed given alone, as the torch path's generator does
        requests = [Request(p, SamplingParams(temperature=temperature, max_tokens=max_new_tokens, stop=tuple(stop),
                                              seed=seed)) for p, seed in zip(prompts, seeds)]
        results: list[Generation | None] = [None] * len(prompts)

        def done(i: int, c) -> None:
            text = "" if c.finish_reason == PROMPT_TOO_LONG else finish_text(c.text, stop)
            results[i] = Generation(text, c.completion_tokens, c.finish_reason)
            if on_batch is not None:
                on_batch([i], [results[i]])

        n_ctx = max(need, min((slots + 1) * need, MAX_CTX))
        engine = BatchedEngine(self.llm, n_ctx=n_ctx, n_batch=min(512, n_ctx), n_parallel=slots, n_threads=self.n_threads)
        try:
            engine.generate(encoded, requests, done, until=answer_complete)
        finally:
            engine.close()
        return results  # type: ignore[return-value]

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None


class LlamaCppStudent:
    """A fine-tuned causal student, exported to GGUF, on llama.cpp's batched engine (see the module)."""

    engine = LLAMACPP
    dtype = None  # the GGUF's type is gguf_type

    def __init__(self, spec: str, options: EvalOptions):
        folder = student_folder(spec)
        assert folder is not None  # resolve_engine chose llamacpp for a student folder only
        self.options = options
        self.chat = False
        self.train_config = read_json_object(folder / "train_config.json")
        # The model is the student's weights (as for torch); the engine and GGUF type enter the
        # evaluation's fingerprint beside it (evaluate._fingerprint).
        self.name = f"{spec}@{fingerprint(*model_files(folder))}"
        self.gguf_type = options.gguf_type
        self.generator = LlamaCppGenerator(eval_gguf(folder, options.gguf_type, options.quiet), student_tokenizer(folder))

    def generate(self, jobs: list[GenerationJob], stop: tuple[str, ...],
                 on_batch: Callable[[list[GenerationJob], list[Generation]], None]) -> None:
        o = self.options
        self.generator.generate(
            [j.prompt for j in jobs], max_new_tokens=o.max_new_tokens, batch_size=o.batch_size, stop=stop,
            temperature=o.temperature,
            # As the torch path derives them: a function of (seed, sample, prompt) only.
            seeds=[derive_seed(o.seed, j.sample, j.prompt) for j in jobs],
            on_batch=lambda idx, gens: on_batch([jobs[i] for i in idx], gens),
        )

    def close(self) -> None:
        self.generator.close()
