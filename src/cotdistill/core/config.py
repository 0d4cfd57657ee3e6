"""The YAML config of a whole run, as pydantic models: one section per stage.

Errors name the file and the field (`demo.yaml: student.lora_r: Input should be a valid integer`).
`--set section.field=value` overrides let users change a shipped config without copying it.
Secrets never live here: HTTP teachers name the environment variable that holds the key.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cotdistill.core.errors import UserError
from cotdistill.core.fileio import read_text, write_text_atomic
from cotdistill.core.modes import ANSWER_ONLY, COT, StudentMode
from cotdistill.core.paths import expand
from cotdistill.core.secrets import MASK, is_secret_name, mask_data

# A path read from a config or an option: `~/x` means the home folder's x, never a folder named "~".
# (Hub dataset names never start with "~", so data.train can hold either.)
UserPath = Annotated[str, AfterValidator(os.path.expanduser)]

# Upper bounds on sizes: generous for real GPU work, small enough that a slip (`1e30`, a value in
# the wrong field) is refused naming the field before any work, not a stage that loops or
# allocates for ever.
MAX_QUESTIONS = 10_000_000  # questions in a split, a test set or a limit (GSM8K: 8.8k; the largest CoT sets: millions)
MAX_TOKENS = 1_048_576  # tokens in one sequence or completion: the longest context windows today (1M)
MAX_BATCH = 65_536  # sequences in one batch or gradient-accumulation group
MAX_SAMPLES = 1_000  # samples of one question, exemplars in one prompt
MAX_EPOCHS = 1_000
MAX_STEPS = 100_000_000  # optimizer steps: max_steps, warm-up steps, checkpoint interval
MAX_CHARS = 100_000_000  # characters of one CoT
MAX_LORA_RANK = 65_536  # no larger than the widest hidden size of today's models
MAX_NGRAM = 10_000  # words in a row shared with a held-out question

# numpy's seed range: transformers.set_seed seeds numpy, which refuses anything outside it.
Seed = Annotated[int, Field(ge=0, lt=2**32)]


def _finite_inside(value: Any, where: str = "") -> Any:
    """Free-form options (passed on to a backend or generator) hold no infinity or NaN at any depth:
    the typed fields refuse them through Section's `allow_inf_nan=False`, these by this check, which
    names the option (`timeout_s must be a finite number`)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, item in items:
        name = f"{where}.{key}" if where else str(key)
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{name} must be a finite number, got {item}")
        if isinstance(item, dict | list):
            _finite_inside(item, name)
    return value


Options = Annotated[dict[str, Any], AfterValidator(_finite_inside)]


class Section(BaseModel):
    # No infinity or NaN in any float field: `lr: .inf`, `temperature: .nan` are typos, never settings.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TestSet(Section):
    """An extra test set: evaluated, never trained on (its questions are removed from training)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
    path: UserPath
    format: str | None = None
    limit: int | None = Field(None, ge=1, le=MAX_QUESTIONS)

    @model_validator(mode="after")
    def not_dev(self) -> "TestSet":
        if self.name in ("dev", "test"):
            raise ValueError(f"data.extra_tests: '{self.name}' names the run's own split; give the test set another name")
        return self


class DataConfig(Section):
    """Either generated offline (`generate: coin_flip`) or loaded from files / hub names.

    `train` is one file or a list of files (each in its authors' format, detected); they are pooled,
    questions that repeat across files are dropped (counted), and, without a `test` file, `n_test`
    and then `n_dev` questions are drawn from the pool at random (`seed`) and held out. Training
    and dev questions that share `decontamination_ngram` consecutive words (normalised) with a
    question of `test` or `extra_tests` are dropped (counted, listed in the report), and only then
    are the first `n_train` of the rest taken. `format`, when
    given, applies to every file; leave it out to detect each file's own."""

    generate: str | None = None  # gsm_symbolic | coin_flip | last_letters
    generate_options: Options = {}
    split: Literal["template", "same-template"] = "template"  # for gsm_symbolic
    train: UserPath | list[UserPath] | None = None
    test: UserPath | None = None
    extra_tests: list[TestSet] = []
    format: str | None = None
    mapping: dict[str, str] | None = None
    train_split: str | None = None  # hub datasets / folders: which split (e.g. train, test)
    test_split: str | None = None
    n_train: int | None = Field(None, ge=1, le=MAX_QUESTIONS)
    n_dev: int = Field(0, ge=0, le=MAX_QUESTIONS)  # held out to choose settings on (data/dev.jsonl), never the test set
    n_test: int | None = Field(None, ge=1, le=MAX_QUESTIONS)
    # A training (or dev) question sharing this many consecutive words with a held-out one is dropped.
    decontamination_ngram: int = Field(8, ge=1, le=MAX_NGRAM)
    seed: Seed | None = None  # default: the run's seed, so one `seed` changes everything

    @model_validator(mode="after")
    def one_source(self) -> "DataConfig":
        if (self.generate is None) == (self.train is None):
            raise ValueError("give exactly one of data.generate (offline generator) or data.train (a file)")
        if self.generate and (self.n_train is None or self.n_test is None):
            raise ValueError("data.generate needs data.n_train and data.n_test")
        if self.train and not self.test and self.n_test is None:
            raise ValueError("data.train without data.test needs data.n_test (held out from the train file)")
        return self

    @property
    def train_files(self) -> list[str]:
        return [self.train] if isinstance(self.train, str) else list(self.train or [])


class FiltersConfig(Section):
    """Which filters drop teacher CoTs (filters.py); wrong and unparsed answers are always dropped."""

    leak: bool = True
    underived: bool = True
    steps: bool = Field(True, description="Drop CoTs with a false step (arithmetic, coin state, last letter).")
    dedupe: bool = True
    dedupe_similarity: float = Field(0.9, gt=0, le=1, description="Samples of a question this alike (word-level, 0-1) count as duplicates.")
    max_per_question: int | None = Field(None, ge=1, le=MAX_SAMPLES, description="Keep at most N samples per question.")
    max_chars: int | None = Field(None, ge=1, le=MAX_CHARS, description="Drop CoTs longer than this ('too_long').")
    # The kept CoTs of questions the teacher then gets wrong are counted as hint-dependent in the
    # yield table, since the hint may have let it rationalise an answer it could not find.
    hint_check: bool = Field(False, description="Also ask each question once without the hint, greedy (one more request each): "
                             "the share of kept CoTs whose question the teacher misses unhinted.")
    # The others get the verdict hint_dependent.
    hint_independent: bool = Field(False, description="Keep only the CoTs of questions the teacher answers right without "
                                   "the hint (implies hint_check).")


BUDGET_LIMITS = ("tokens", "usd", "minutes")


def budget_limits(items: dict) -> dict[str, float]:
    """The teacher budget's limits in `items` (tokens / usd / minutes), each a positive finite number
    (tokens whole); a UserError for anything else, whose caller names where they came from. Here,
    beside the field it checks; budget.Budget is made from what it returns."""
    unknown = sorted(set(items) - set(BUDGET_LIMITS))
    if unknown:
        raise UserError(f"unknown limit {', '.join(unknown)}; use tokens, usd or minutes (e.g. minutes=30)")
    out: dict[str, float] = {}
    for k, v in items.items():
        try:
            limit = float(v)
        except (TypeError, ValueError):
            raise UserError(f"{k}={v!r} is not a number") from None
        # NaN compares false with everything: a NaN limit would never stop anything.
        if not math.isfinite(limit) or limit <= 0:
            raise UserError(f"{k} must be positive and finite, got {v!r}")
        out[k] = int(limit) if k == "tokens" else limit
    return out


class TeacherConfig(Section):
    """The annotate stage's options: which teacher, how it is asked and sampled, what is kept.
    `cotdistill annotate`'s options are this class."""

    model: str = Field("embedded:qwen2.5-0.5b", description="embedded:NAME | gguf:/path | openai:MODEL@URL | hf:PATH")
    hint: bool = Field(True, description="Give the gold answer before the CoT (the paper's rationalisation).")
    zero_shot: bool = Field(False, description="No exemplars; 'Let's think step by step.'")
    n_exemplars: int = Field(8, ge=0, le=MAX_SAMPLES, description="Number of few-shot exemplars.")
    exemplars: UserPath | None = Field(None, description="JSON list of {question, rationale, answer}, or a text prompt.")
    samples: int = Field(1, ge=1, le=MAX_SAMPLES, description="CoTs per question.")
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, ge=1, le=MAX_TOKENS, description="Teacher output limit; longer CoTs are 'truncated'.")
    batch_size: int = Field(8, ge=1, le=MAX_BATCH, description="Requests per teacher call (each answer is cached as it arrives).")
    no_gold: bool = Field(False, description="Unlabelled data: the majority answer across samples is the label.")
    filters: FiltersConfig = FiltersConfig()
    api_key_env: str | None = None  # name of the environment variable, never the key itself
    cache: UserPath | None = Field(None, description="Teacher cache (default: RUN_DIR/cache.sqlite); share it between "
                                   "runs (`study` variants share one).")
    options: Options = Field({}, description="Backend options KEY=VALUE, e.g. n_ctx=8192.")
    budget: dict[str, float] = Field({}, description="Stop cleanly once this run has spent tokens=N, usd=X or minutes=M on "
                                     "the teacher; rerun to continue.")  # not part of the fingerprint

    @field_validator("budget", mode="before")
    @classmethod
    def known_limits(cls, value: Any) -> Any:
        if isinstance(value, dict):
            try:
                budget_limits(value)
            except UserError as e:
                raise ValueError(str(e)) from None  # so that the error names the field: teacher.budget, --budget
        return value

    @model_validator(mode="after")
    def vote_needs_samples(self) -> "TeacherConfig":
        if self.no_gold and self.samples < 2:
            raise ValueError("no_gold (--no-gold) votes across samples: give samples (--samples) 3 or more, "
                             "and a temperature above 0")
        return self

    def backend_options(self) -> dict[str, Any]:
        """What load_teacher gets besides the model: `options`, and the name of the key's variable."""
        return {**self.options, **({"api_key_env": self.api_key_env} if self.api_key_env else {})}


class TrainSettings(Section):
    """How a student is fine-tuned: the one definition of these options, their bounds and defaults.
    The config's `student` section, `cotdistill train`'s options and training.train.TrainConfig
    are all this class (plus what each adds)."""

    lora: bool = Field(True, description="LoRA adapters (default) or full fine-tuning.")
    lora_r: int = Field(16, ge=1, le=MAX_LORA_RANK, description="LoRA rank.")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA adapters' input (0.05 is common; it costs "
                                "CPU time: docs/benchmarks.md).")  # 0: PEFT's and torchtune's default
    merge_lora: bool = Field(True, description="Save LoRA merged into the model (default: loadable anywhere) or the adapter alone.")
    epochs: float = Field(3.0, gt=0, le=MAX_EPOCHS)
    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="Stop after N optimizer steps (overrides epochs).")
    lr: float = Field(2e-4, gt=0, description="Peak learning rate (2e-4 suits LoRA; try 2e-5 for full fine-tuning).")
    batch_size: int = Field(8, ge=1, le=MAX_BATCH, description="Examples per micro-batch and process (memory grows with it).")
    grad_accum: int = Field(1, ge=1, le=MAX_BATCH, description="Micro-batches per optimizer step: batch_size 4 with "
                            "grad_accum 2 trains like batch_size 8 in about half the memory.")
    max_len: int = Field(384, ge=8, le=MAX_TOKENS, description="Longer examples are dropped (counted), never cut before their answer.")
    gradient_checkpointing: bool = Field(False, description="Recompute each layer's activations during the backward pass: "
                                         "the same model in far less memory, for about a third more time.")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="cosine | linear | constant, after a linear warm-up.")
    warmup: float = Field(0.05, ge=0, le=MAX_STEPS, description="Warm-up: a fraction of the steps (< 1) or a number of steps.")
    bf16: bool | Literal["auto"] = Field("auto", description="auto (bf16 autocast where this CPU/GPU computes bf16 faster) | true | false.")
    save_steps: int = Field(50, ge=1, le=MAX_STEPS, description="Checkpoint (and eval) every N steps; rerun to resume.")
    eval_fraction: float = Field(0.05, ge=0, lt=1, description="Questions held out for the eval loss.")
    # Token-level distillation (training/teacher_targets.py): the teacher's probabilities on each
    # training sequence, scored before training, enter the loss beside the cross-entropy.
    distill: Literal["off", "sampled", "top-k"] = Field("off", description="Token-level distillation from the teacher's "
                                                          "probabilities: off | sampled (unbiased, random-sampling KD) | "
                                                          "top-k (biased; for comparison).")
    distill_weight: float = Field(0.5, ge=0, le=1, description="Share of the distillation term: (1-w) cross-entropy + w KD.")
    distill_temperature: float = Field(1.0, gt=0, le=100, description="Temperature of teacher and student in the KD term.")
    distill_tokens: int = Field(12, ge=1, le=MAX_SAMPLES, description="Teacher tokens kept per position: draws (sampled) "
                                "or k (top-k).")
    distill_context: Literal["student", "written"] = Field(
        "student", description="Whose context the teacher's probabilities come from: student (the teacher re-reads each "
        "training sequence as the student sees it: the bare question) | written (recorded while the teacher wrote the CoT, "
        "exemplars and answer hint in view; llama.cpp and hf: teachers, and openai: servers for distill: top-k). "
        "`cotdistill train` only records it: its "
        "--distill-targets file holds the targets of one context.")


class StudentConfig(TrainSettings):
    model: str = "embedded:gemma-3-270m"
    modes: list[StudentMode] = [COT, ANSWER_ONLY]  # modes.py says what each trains


class EvalSettings(Section):
    """How a model is scored: the one definition of these options and defaults, shared by the
    config's `evaluate` section, `cotdistill evaluate`'s options and evaluate.EvalOptions."""

    batch_size: int = Field(16, ge=1, le=MAX_BATCH, description="Sequences generated together.")
    max_new_tokens: int = Field(256, ge=1, le=MAX_TOKENS)
    limit: int | None = Field(None, ge=1, le=MAX_QUESTIONS, description="Only the first N questions.")
    samples: int = Field(1, ge=1, le=MAX_SAMPLES, description="Self-consistency: majority vote over K samples (needs a temperature above 0).")
    temperature: float = Field(0.0, ge=0, description="0: greedy.")
    # float32 is the reference numerics; bfloat16 is faster only where the CPU or GPU has a bf16 path
    # (docs/benchmarks.md); auto decides as cpu.bf16_is_faster, as training's bf16 "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = Field("auto", description="transformers models: auto (bfloat16 where "
                                                          "it is the faster dtype here, e.g. CPUs with AVX512-BF16/AMX) | "
                                                          "float32 | bfloat16 (greedy outputs may differ between them).")
    # What runs a fine-tuned student: transformers (our batched generation), or llama.cpp from a GGUF
    # export of it, the file users deploy. torch by default because it was the faster one where both
    # were measured: on GSM8K's 500 test questions (Intel Xeon with AMX, 2 cores, bf16 torch) llama.cpp
    # answered 41-42 questions/min (f16 and q8_0 alike) against torch's 82 (docs/benchmarks.md §4);
    # on AVX2 without bf16 (emulated there) llama.cpp decoded 1.0-1.26x as fast as torch in fp32.
    # Specs that name a backend (embedded:NAME, gguf:PATH, openai:..., vllm:...) keep it.
    engine: Literal["torch", "llamacpp"] = Field("torch", description="fine-tuned students: torch (transformers) "
                                                 "| llamacpp (from the student's GGUF export).")
    # The GGUF a fine-tuned student is evaluated from on llama.cpp. f16 by default: an evaluation
    # measures the trained student, and f16 keeps 11 significant bits of every weight (bfloat16, which
    # the torch path already uses on such CPUs, keeps 8), so greedy outputs stay those of the fp32
    # weights on nearly every question; q8_0 halves the bytes read per decoding step (faster where
    # decoding is memory-bound, i.e. few sequences at a time) at the cost of a per-block rounding
    # that can flip a near-tie token and with it a whole chain of thought on a small student (README:
    # on 20 held-in questions f16 wrote the torch student's tokens on 20 of 20, q8_0 on 19 and 20 of 20).
    gguf_type: Literal["f16", "q8_0"] = Field("f16", description="engine llamacpp: the GGUF type of the student's "
                                              "export, f16 (as trained, nearly) | q8_0 (smaller, faster decoding).")


class EvaluateConfig(EvalSettings):
    few_shot_student: bool = True  # baseline: the student before fine-tuning, few-shot CoT prompted
    teacher: bool = True  # baseline: the teacher's own few-shot accuracy (no hint)
    teacher_limit: int | None = Field(None, ge=1, le=MAX_QUESTIONS)  # the teacher is the slowest model to score: the first N test questions
    few_shot: int = Field(8, ge=0, le=MAX_SAMPLES)
    dev: bool = True  # also score each fine-tuned student on the dev split (NAME.dev), to choose settings on
    # Before the teacher annotates a set of labels (yes/no, multiple choice): its own accuracy, without
    # the hint, on this many dev questions (teacher-few-shot.dev), with a warning when it is not above
    # always giving the majority answer: its hinted CoTs would then be rationalisations. 0: no check.
    teacher_check: int = Field(20, ge=0, le=MAX_QUESTIONS)


def _directory_name(value: str) -> str:
    """A run or variant name is one directory name under runs/ (or a study's variants/): no `/`, no `..`."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise ValueError("a name is used as a directory name: letters, digits, '.', '_' and '-', "
                         "starting with a letter or digit")
    return value


Name = Annotated[str, AfterValidator(_directory_name)]


class Variant(Section):
    """One variant of a study: the run's config with these `section.field=value` overrides."""

    name: Name
    set: list[str] = []


class StudyConfig(Section):
    variants: list[Variant] = []


class RunConfig(Section):
    name: Name
    run_dir: UserPath | None = None  # default: runs/<name>
    seed: Seed = 0
    quiet: bool = False
    data: DataConfig
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    study: StudyConfig = StudyConfig()

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir or f"runs/{self.name}")

    @property
    def data_seed(self) -> int:
        return self.seed if self.data.seed is None else self.data.seed


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing a key given twice in one mapping: YAML's "the last one
    wins" silently drops the first (`epochs: 3` ... `epochs: 30`), which is always a mistake here."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: SafeLoader's own error names it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str) -> Any:
    """`text` as plain YAML data (no tags that build Python objects; no duplicate keys).
    Raises ValueError with YAML's complaint (`line L, column C: ...` where it knows the place), or
    the constructor's own ValueError for a scalar YAML's patterns match but cannot build (`0b_`,
    `2001-13-01`)."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())  # some span lines: ours is one
        raise ValueError(f"{where}{problem}") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse_value(option: str, text: str) -> Any:
    """A value given on the command line (`--set a.b=TEXT`, `--teacher-option k=TEXT`,
    `--budget k=TEXT`) read as YAML, as the config file would read it (`4` -> 4, `true` -> True,
    `[a, b]` -> a list): the one place command-line text becomes a typed value, so that anything
    unreadable is one line naming `option`."""
    try:
        return read_yaml(text)
    except ValueError as e:
        raise UserError(f"{option}: not a value YAML can read ({e}); give a number, true/false, "
                        "[a, list] or text in quotes") from None


def parse_assignment(option: str, assignment: str, example: str, form: str = "KEY=VALUE") -> tuple[str, Any]:
    """`KEY=VALUE` (given to `option`) as (KEY, its typed value); `example` shows the form. KEY is
    a name, or dotted names (`student.epochs`): field and option names, never free text."""
    key, sep, value = assignment.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", key):
        raise UserError(f"{option} {assignment!r}: expected {form}, e.g. {option} {example}")
    return key, parse_value(f"{option} {key}", value)


def _apply_override(raw: dict[str, Any], assignment: str) -> None:
    key, value = parse_assignment("--set", assignment, "student.epochs=2", "section.field=value")
    *parents, leaf = key.split(".")
    node = raw
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {assignment!r}: {p} is not a section")
    node[leaf] = value


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    path = expand(path)
    if not path.exists():
        raise UserError(f"{path}: config file not found")
    text = read_text(path)
    try:
        raw = read_yaml(text) or {}
    except ValueError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections (name, data, teacher, student, evaluate)")
    for assignment in overrides or []:
        _apply_override(raw, assignment)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise validation_error(e, f"{path}: ", ".") from None


M = TypeVar("M", bound=BaseModel)


def from_options(cls: type[M], flags: dict[str, str] | None = None, **options: Any) -> M:
    """`cls` built from command-line values: a value out of bounds is a one-line error naming the
    option (`--field-name`, or `flags[field]` where the command spells it otherwise)."""
    try:
        return cls(**options)
    except ValidationError as e:
        raise validation_error(e, "", "--", flags) from None


def validation_error(e: ValidationError, prefix: str, style: str, flags: dict[str, str] | None = None) -> UserError:
    """pydantic's first complaint as one line naming the field: `a.b` (style ".") for configs,
    `--a-b` (style "--") for command-line options (a nested field is named by its own option)."""
    err = e.errors()[0]
    if style == "--":
        field = str(err["loc"][-1]) if err["loc"] else None
        where = (flags or {}).get(field) or ("--" + field.replace("_", "-") if field else "options")
    else:
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    got = f", got {_shown_input(err['loc'], err['input'])}" if err.get("input") is not None and not isinstance(err["input"], dict) else ""
    msg = err["msg"].removeprefix("Value error, ")  # pydantic's wording for a validator's ValueError
    return UserError(f"{prefix}{where}: {msg}{got}{more}")


def _shown_input(loc: tuple, value: Any) -> str:
    """A rejected value as the error may show it: masked when it sits under teacher options or a
    key-like name (a key pasted into the wrong field must not be echoed), else redacted."""
    if "options" in loc or any(is_secret_name(str(p)) for p in loc):
        return MASK
    return repr(mask_data(value))


def dump_config(config: RunConfig, path: Path) -> None:
    """Write the resolved config, with credentials masked (a teacher URL's password or query key,
    key-like options; cotdistill.core.secrets): config.yaml is a record to share, not to rerun with."""
    write_text_atomic(path, yaml.safe_dump(mask_data(config.model_dump()), sort_keys=False))
