"""The evaluate stage: a model answers held-out questions; accuracy with a 95 % confidence interval.

Any model can be evaluated, so that the paper's baselines sit in the same table:
- a student fine-tuned here (a directory with train_config.json) reads the bare student input
  (prompts.student_input) and must write the answer format itself: strict extraction;
- any other model (the student before fine-tuning, the teacher) gets the teacher's few-shot CoT
  prompt WITHOUT the answer hint; a prompted model that ignores the format is read leniently
  (its last number / yes-no word), which favours the baselines, never the distilled student.

Transformers models ("hf:SPEC", a local directory, a hub name) run on our batched generation
(generation.py), or, for a causal student fine-tuned here and `engine: llamacpp`, on llama.cpp from
a GGUF export of it (llamacpp_student.py); other
specs ("embedded:NAME", "gguf:PATH", "openai:MODEL@URL", ...) run on a teacher backend
(teachers.load_teacher): `engine` does not change them. Self-consistency: K samples at
temperature T, majority vote of the extracted answers.

Outputs: predictions/NAME.jsonl (one row per question), predictions/NAME.summary.json and the
manifest stage "evaluate:NAME". Finished generations are appended to predictions/NAME.partial.jsonl
as they come, so a crash or Ctrl-C loses only the batch in flight: rerun the same command.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from cotdistill.core.answers import answers_match, extract_answer, majority
from cotdistill.core.baserates import BaseRates, base_rates
from cotdistill.core.config import MAX_SAMPLES, EvalSettings, EvaluateConfig, Options, Seed
from cotdistill.core.errors import UserError
from cotdistill.core.records import Example, write_jsonl
from cotdistill.data.load import load_examples
from cotdistill.core.fileio import ends_torn, jsonl_line, read_json_object, write_json_atomic
from cotdistill.evaluation.generation import Generation, finish_text
from cotdistill.core.hashing import fingerprint, model_files
from cotdistill.core.progress import progress_bar
from cotdistill.core.prompts import (
    COMPLETION_STOP,
    build_teacher_prompt,
    select_exemplars,
    student_prompt,
)
from cotdistill.core.modes import MODES
from cotdistill.core.rundir import RunDir
from cotdistill.core.secrets import mask_spec
from cotdistill.core.sampling import PROMPT_TOO_LONG, Prompt, Request, SamplingParams, derive_seed

if TYPE_CHECKING:
    from cotdistill.evaluation.llamacpp_student import LlamaCppStudent

Z_95 = 1.959963984540054  # two-sided 95 % normal quantile
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class EvalOptions(EvalSettings):
    """One evaluation: the shared settings (config.EvalSettings) plus what to score and how to label it."""

    data: Path | None = None  # default: RUN_DIR/data/test.jsonl; any format data.load reads
    data_format: str | None = None  # the format of `data` (default: detected)
    few_shot: int | None = Field(None, ge=0, le=MAX_SAMPLES)  # None: 0 for students fine-tuned here, else EvaluateConfig's
    exemplars: Path | None = None  # default: the project's exemplars for the answer type
    seed: Seed = 0
    strict: bool | None = None  # None: strict for fine-tuned students, lenient for prompted models
    method: str | None = None  # label in the report; default derived from the model and prompt
    teacher_options: Options = {}  # passed to load_teacher
    quiet: bool = False


@dataclass
class EvalSummary:
    name: str
    model: str  # what the report calls the model (a fine-tuned student: its base model)
    spec: str  # what was loaded, credentials masked (secrets.mask_spec)
    method: str
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    unparsed: int  # questions without a readable final answer
    truncated: int  # generations that hit max_new_tokens
    tokens_generated: int
    tokens_per_s: float | None  # generated tokens per second of generation in this invocation
    seconds: float
    few_shot: int
    samples: int
    temperature: float
    extraction: str  # strict | lenient
    data: str
    max_new_tokens: int | None = None
    data_format: str | None = None  # as given to evaluate --format (None: detected from the file)
    prompt: str = ""  # the prompt format, in words (the report's protocol card)
    # What always giving the most common gold answer scores on these questions, and uniform guessing
    # (baserates.py): None where the answers are open and no answer is common.
    majority_answer: str | None = None
    majority_rate: float | None = None
    chance_rate: float | None = None
    # What ran the model: torch (transformers, in `dtype`), llamacpp (from a GGUF of `gguf_type`), or a
    # teacher backend's kind (openai, vllm); None in summaries written before engines were recorded.
    engine: str | None = None
    gguf_type: str | None = None
    dtype: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson_interval(correct: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion: sound at 0 % and 100 % and for small n, unlike the
    normal approximation (which gives [0, 0] for 0 of 10)."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The exact bounds at 0 and n (rounding would leave e.g. 0.9999999999 for 10 of 10).
    return (0.0 if correct == 0 else centre - half), (1.0 if correct == n else centre + half)


# ---------------------------------------------------------------- models


@dataclass
class GenerationJob:
    index: int  # which example
    sample: int
    prompt: Prompt


def eval_dtype(setting: str) -> str:
    """The dtype a transformers model is loaded in: `auto` is bfloat16 where that is faster here.
    `setting` is EvalSettings.dtype, which the schema already restricts to auto/float32/bfloat16."""
    if setting == "auto":
        from cotdistill.core.cpu import bf16_is_faster

        return "bfloat16" if bf16_is_faster()[0] else "float32"
    return setting


class HFModel:
    """A transformers model on our batched generation."""

    engine = "torch"
    gguf_type = None

    def __init__(self, spec: str, options: EvalOptions):
        import torch

        from cotdistill.models.students import load_student, resolve

        source = resolve(spec, quiet=options.quiet)
        self.dtype = eval_dtype(options.dtype)
        self.model, self.tokenizer, _ = load_student(spec, dtype=getattr(torch, self.dtype), quiet=options.quiet)
        if torch.cuda.is_available():
            self.model.to("cuda")
        self.model.eval()
        self.chat = False  # base and fine-tuned students complete text; they are not chat models
        self.train_config = read_json_object(Path(source) / "train_config.json")
        self.name = f"{spec}@{fingerprint(*model_files(Path(source)))}"  # retrained or replaced: another model
        self.options = options

    def generate(self, jobs: list[GenerationJob], stop: tuple[str, ...], on_batch: Callable[[list[GenerationJob], list[Generation]], None]) -> None:
        from cotdistill.evaluation.generation import generate_batched

        generate_batched(
            self.model, self.tokenizer, [j.prompt for j in jobs], max_new_tokens=self.options.max_new_tokens,
            batch_size=self.options.batch_size, stop=stop, temperature=self.options.temperature,
            # A function of (seed, sample, prompt) only, so a resumed evaluation draws what an
            # uninterrupted one would, and questions and samples draw independently.
            seeds=[derive_seed(self.options.seed, j.sample, j.prompt) for j in jobs],
            on_batch=lambda idx, gens: on_batch([jobs[i] for i in idx], gens),
        )

    def close(self) -> None:
        self.model = None


class TeacherModel:
    """Any teacher backend (llama.cpp, HTTP, vLLM), asked `batch_size` requests at a time."""

    def __init__(self, spec: str, options: EvalOptions):
        from cotdistill.evaluation.llamacpp_student import LLAMACPP, file_type_name, resolve_engine
        from cotdistill.teachers import load_teacher

        self.teacher = load_teacher(spec, **options.teacher_options)
        self.chat = self.teacher.chat
        self.engine = resolve_engine(spec, options)  # the backend the spec names: llamacpp, openai, vllm
        llm = getattr(self.teacher, "llm", None)  # llama.cpp: the GGUF's own weight type
        self.gguf_type = file_type_name(llm.metadata.get("general.file_type")) if self.engine == LLAMACPP and llm else None
        self.dtype = None
        self.train_config: dict[str, Any] = {}
        self.name = self.teacher.name
        self.options = options

    def generate(self, jobs: list[GenerationJob], stop: tuple[str, ...], on_batch: Callable[[list[GenerationJob], list[Generation]], None]) -> None:
        o = self.options
        params = SamplingParams(temperature=o.temperature, max_tokens=o.max_new_tokens, stop=stop, seed=o.seed)
        for first in range(0, len(jobs), o.batch_size):
            chunk = jobs[first : first + o.batch_size]
            done = self.teacher.generate([Request(j.prompt, params, sample=j.sample) for j in chunk])
            # A prompt that does not fit the context gets no answer (its text only says why).
            on_batch(chunk, [Generation("" if c.finish_reason == PROMPT_TOO_LONG else finish_text(c.text, stop),
                                        c.completion_tokens, c.finish_reason) for c in done])

    def close(self) -> None:
        self.teacher.close()


def open_model(spec: str, options: EvalOptions) -> HFModel | TeacherModel | LlamaCppStudent:
    """"hf:X", an existing path or a hub name ("org/model") → transformers, or llama.cpp for a student
    as `options.engine` decides (llamacpp_student.resolve_engine); other "kind:..." → teacher."""
    from cotdistill.evaluation.llamacpp_student import LLAMACPP, LlamaCppStudent, names_backend, resolve_engine

    if not names_backend(spec) and resolve_engine(spec, options) == LLAMACPP:
        return LlamaCppStudent(spec[3:] if spec.startswith("hf:") else spec, options)
    if spec.startswith("hf:"):
        return HFModel(spec[3:], options)
    if Path(spec).expanduser().exists() or ":" not in spec:
        return HFModel(spec, options)
    return TeacherModel(spec, options)


# ---------------------------------------------------------------- prompts and answers


class Prompter:
    """Builds each question's prompt: the bare student input, or the few-shot teacher prompt (no hint)."""

    def __init__(self, few_shot: int, chat: bool, exemplars: Path | None, mode: str | None):
        self.few_shot, self.chat, self.exemplars, self.mode = few_shot, chat, exemplars, mode
        self._shots: dict[str, list] = {}

    def __call__(self, e: Example) -> Prompt:
        if self.few_shot == 0:
            return student_prompt(e.question, e.choices, self.mode)
        if e.answer_type not in self._shots:
            self._shots[e.answer_type] = select_exemplars(e.answer_type, self.few_shot, self.exemplars)
        return build_teacher_prompt(e.question, e.answer_type, self._shots[e.answer_type], chat=self.chat, choices=e.choices)

    def describe(self) -> str:
        if self.few_shot == 0:
            return "the bare question, 'Q: <question>\\nA:' (the format it was trained on)"
        fmt = "chat template, exemplars as turns" if self.chat else "plain text 'Q: ... A: ...' blocks, stop at the next 'Q:'"
        return f"{self.few_shot} CoT exemplars ({self.exemplars or 'cotdistill/exemplars/, per answer type'}), no hint; {fmt}"

    @property
    def stop(self) -> tuple[str, ...]:
        # A base model prompted with exemplars goes on to write the next "Q:"; the student stops by itself.
        return COMPLETION_STOP if self.few_shot and not self.chat else ()


def score_question(e: Example, outputs: list[dict[str, Any]], strict: bool) -> dict[str, Any]:
    """The prediction row of one question; with several samples, the majority answer wins
    (ties: the answer seen first) and the row shows a sample that gave it."""
    extractions = [extract_answer(o["output"], e.answer_type, e.choices, fallback_last=not strict) for o in outputs]
    predicted, votes = majority([x.value for x in extractions])
    shown = next((i for i, x in enumerate(extractions) if x.value == predicted), 0)
    row: dict[str, Any] = {
        "example_id": e.id, "output": outputs[shown]["output"], "predicted": predicted, "gold": e.answer,
        "correct": answers_match(predicted, e.answer, e.answer_type),
        "tokens": sum(o["tokens"] for o in outputs), "finish_reason": outputs[shown]["finish_reason"],
    }
    if predicted is None:
        row["reason"] = Counter(x.reason for x in extractions).most_common(1)[0][0]
    if len(outputs) > 1:
        row["votes"] = votes
        row["samples"] = [o["output"] for o in outputs]
    return row


# ---------------------------------------------------------------- the stage


def evaluate_model(run: RunDir, model_spec: str, name: str, options: EvalOptions | None = None) -> EvalSummary:
    """Evaluate `model_spec` on the run's test questions; writes predictions and their summary
    (the caller records the stage: RunDir.stage)."""
    options = options or EvalOptions()
    examples, data = _examples(run, name, options)
    t0 = time.perf_counter()
    model = open_model(model_spec, options)
    try:
        tc = model.train_config
        few_shot = options.few_shot if options.few_shot is not None else (0 if tc else EvaluateConfig.model_fields["few_shot"].default)
        strict = options.strict if options.strict is not None else few_shot == 0
        prompter = Prompter(few_shot, model.chat, options.exemplars, tc.get("mode"))
        fp = _fingerprint(model.name, few_shot, options, data, engine_label(model))
        partial = run.predictions(name).with_suffix(".partial.jsonl")
        logged = run.read_generations(name)
        done = {(r["example_id"], r["sample"]): r for r in logged if r.get("fp") == fp}
        if len(done) < len(logged) or ends_torn(partial):  # another model's or setting's rows, or a torn one: drop them
            write_jsonl(partial, done.values())
        jobs = [GenerationJob(i, s, prompter(e)) for i, e in enumerate(examples) for s in range(options.samples)
                if (e.id, s) not in done]
        new_tokens, gen_seconds = 0, 0.0
        partial.parent.mkdir(parents=True, exist_ok=True)
        with progress_bar(options.quiet) as bar, partial.open("a", encoding="utf-8") as log:
            task = bar.add_task(f"evaluate {name}", total=len(examples) * options.samples, completed=len(done))
            t_gen = time.perf_counter()

            def on_batch(batch: list[GenerationJob], gens: list[Generation]) -> None:
                nonlocal new_tokens
                for j, g in zip(batch, gens):
                    row = {"fp": fp, "example_id": examples[j.index].id, "sample": j.sample, "output": g.text,
                           "tokens": g.tokens, "finish_reason": g.finish_reason}
                    done[(row["example_id"], j.sample)] = row
                    log.write(jsonl_line(row))
                    new_tokens += g.tokens
                log.flush()
                bar.advance(task, len(batch))

            if jobs:
                model.generate(jobs, prompter.stop, on_batch)
            gen_seconds = time.perf_counter() - t_gen
    finally:
        model.close()
    rows = [score_question(e, [done[(e.id, s)] for s in range(options.samples)], strict) for e in examples]
    summary = _summarise(name, model_spec, tc, few_shot, strict, options, data, rows,
                         new_tokens, gen_seconds, time.perf_counter() - t0, prompter.describe(), base_rates(examples))
    summary.engine, summary.gguf_type, summary.dtype = model.engine, model.gguf_type, model.dtype
    write_jsonl(run.predictions(name), rows)
    write_json_atomic(run.predictions(name).with_suffix(".summary.json"), summary.to_dict())
    partial.unlink(missing_ok=True)
    return summary


def _examples(run: RunDir, name: str, options: EvalOptions) -> tuple[list[Example], Path]:
    if not NAME_RE.fullmatch(name):
        raise UserError(f"--name {name!r}: use letters, digits, '.', '_' or '-' (it names predictions/{name}.jsonl)")
    if options.samples < 1 or options.batch_size < 1 or options.max_new_tokens < 1:
        raise UserError("--samples, --batch-size and --max-new-tokens must be at least 1")
    if options.samples > 1 and options.temperature <= 0:
        raise UserError(f"--samples {options.samples}: self-consistency needs --temperature > 0 (e.g. 0.7); greedy samples are identical")
    data = Path(options.data) if options.data else run.test_data
    if not data.exists():
        hint = "pass --data PATH" if options.data else "prepare the run's data first (`cotdistill run CONFIG`) or pass --data PATH"
        raise UserError(f"{data}: test questions not found; {hint}")
    examples = load_examples(data, options.data_format, every_record=True)[: options.limit]
    if not examples:
        raise UserError(f"{data}: no questions to evaluate")
    return examples, data


def engine_label(model: HFModel | TeacherModel | LlamaCppStudent) -> str:
    """What computed the generations besides the model: "torch", "llamacpp:f16", ..."""
    return f"{model.engine}:{model.gguf_type}" if model.gguf_type else model.engine


def _fingerprint(model_name: str, few_shot: int, o: EvalOptions, data: Path, engine: str) -> str:
    """What decides a generation: finished ones are reused only when all of it is unchanged. Files
    count by content (hashing.fingerprint), so a copied or restored run directory resumes as it would."""
    return fingerprint(model_name, few_shot, str(o.exemplars), o.temperature, o.max_new_tokens, o.seed, o.dtype,
                       data, o.data_format, engine)


def _summarise(name: str, spec: str, train_config: dict, few_shot: int, strict: bool, o: EvalOptions, data: Path,
               rows: list[dict[str, Any]], new_tokens: int, gen_seconds: float, seconds: float, prompt: str,
               rates: BaseRates | None) -> EvalSummary:
    n, correct = len(rows), sum(r["correct"] for r in rows)
    low, high = wilson_interval(correct, n)
    if o.method:
        method = o.method
    elif train_config:
        mode = MODES.get(train_config.get("mode", ""))
        method = mode.method if mode else f"fine-tuned ({train_config.get('mode')})"
    else:
        method = f"{few_shot}-shot CoT prompting" if few_shot else "zero-shot"
    if o.samples > 1:
        method += f", self-consistency ({o.samples} samples, T={o.temperature:g})"
    return EvalSummary(
        name=name, model=mask_spec(str(train_config.get("student", spec)) if train_config else spec), spec=mask_spec(spec),
        method=method,
        n=n, correct=correct, accuracy=correct / n, ci_low=low, ci_high=high,
        unparsed=sum(r["predicted"] is None for r in rows),
        truncated=sum(r["finish_reason"] == "length" for r in rows),
        tokens_generated=sum(r["tokens"] for r in rows),
        tokens_per_s=round(new_tokens / gen_seconds, 2) if new_tokens and gen_seconds > 0 else None,
        seconds=round(seconds, 1), few_shot=few_shot, samples=o.samples, temperature=o.temperature,
        extraction="strict" if strict else "lenient", data=str(data), data_format=o.data_format, max_new_tokens=o.max_new_tokens,
        prompt=prompt, **(rates.to_dict() if rates else {}),
    )
