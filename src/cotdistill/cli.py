"""The `cotdistill` command line: one command per stage, each a thin wrapper over a module.

Errors a user can cause are `UserError`s: printed as one line, exit code 2, no traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional, TextIO

import typer

from cotdistill.core import stopping
from cotdistill.core.errors import Interrupted, UserError
from cotdistill.core.fileio import input_file
from cotdistill.core.paths import expand, output_dir, output_file, storage_error
from cotdistill.core.secrets import redact

app = typer.Typer(
    help="Teach small language models to reason: annotate with a teacher, filter, fine-tune a student, evaluate, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect and prepare datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


# ------------------------------------------------------------------ data

from cotdistill.data.load import format_names  # noqa: E402  (light: no heavy imports)
from cotdistill.cli_options import SectionOptions, default, with_sections  # noqa: E402
from cotdistill.core.config import (  # noqa: E402
    DataConfig, EvalSettings, EvaluateConfig, RunConfig, StudentConfig, TeacherConfig, TrainSettings, from_options,
)
from cotdistill.core.modes import COT, TRAINING_MODES, normalise_mode  # noqa: E402

# The options of a config section are generated from its class (cli_options), and every other
# option that the config also has takes its default from there: one place for each.
SEED_OPTION = typer.Option(default(RunConfig, "seed"), "--seed")

FORMAT_OPTION = typer.Option(None, "--format", "-f", help=f"Dataset format (default: detected). One of: {format_names()}.")
MAP_OPTION = typer.Option(
    [], "--map", help="Field mapping for generic jsonl/csv/parquet/hub data, KEY=FIELD (repeatable): "
    "question=, answer=, answer_type=number|yes_no|choice|text, and optional id=, choices=, source=, config=.",
)
SPLIT_OPTION = typer.Option(None, "--split", help="Hub split, or the file in a dataset folder whose name contains it.")


def _data_mapping(items: list[str]) -> dict[str, str] | None:
    """--map KEY=FIELD strings to a mapping dict (values kept as text: they are field names)."""
    mapping = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserError(f"--map {item!r}: expected KEY=FIELD, e.g. --map question=problem")
        mapping[key.strip()] = value.strip()
    return mapping or None


@data_app.command("stats")
def data_stats(
    path: str = typer.Argument(..., help="Dataset file, folder, or Hugging Face hub name."),
    format: Optional[str] = FORMAT_OPTION,
    limit: Optional[int] = typer.Option(None, "--limit", help="Read only the first N examples."),
    split: Optional[str] = SPLIT_OPTION,
    map_items: list[str] = MAP_OPTION,
) -> None:
    """Format, record count, answer types, and every skipped record with its reason."""
    from rich import box
    from rich.table import Table

    from cotdistill.data.load import load_dataset
    from cotdistill.core.progress import readable_console

    result = load_dataset(path, format=format, mapping=_data_mapping(map_items), split=split, limit=limit)
    table = Table(box=box.SIMPLE_HEAD, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("dataset", path)
    table.add_row("format", result.format)
    table.add_row("examples", str(len(result.examples)))
    for answer_type, count in sorted(result.answer_types().items()):
        table.add_row(f"answer type {answer_type}", str(count))
    table.add_row("skipped", str(len(result.skipped)))
    readable_console().print(table)
    # Plain lines, not a table: reasons and file paths must never be truncated.
    for reason, count, first in result.skip_summary():
        print(f"  skipped {count} × {reason}  (first at {first})")


@data_app.command("show")
def data_show(
    path: str = typer.Argument(..., help="Dataset file, folder, or Hugging Face hub name."),
    n: int = typer.Option(3, "-n", "--n", help="How many records to print."),
    format: Optional[str] = FORMAT_OPTION,
    split: Optional[str] = SPLIT_OPTION,
    map_items: list[str] = MAP_OPTION,
) -> None:
    """Print the first N normalised records as JSON."""
    import json

    from cotdistill.data.load import load_dataset

    result = load_dataset(path, format=format, mapping=_data_mapping(map_items), split=split, limit=n)
    for example in result.examples:
        print(json.dumps(example.to_dict(), indent=2, ensure_ascii=False))


@data_app.command("generate")
def data_generate(
    task: str = typer.Argument(..., help="gsm_symbolic | last_letters | coin_flip"),
    n_train: int = typer.Option(..., "--n-train", help="Training problems."),
    n_test: int = typer.Option(..., "--n-test", help="Test problems."),
    n_dev: int = typer.Option(default(DataConfig, "n_dev"), "--n-dev", help="Dev problems (from the training templates), to choose settings on."),
    seed: int = SEED_OPTION,
    split: str = typer.Option(
        default(DataConfig, "split"), "--split", help="template: test problems come from templates (or names) never seen "
        "in training; same-template: a random split.",
    ),
    out: Path = typer.Option(..., "--out", help="Folder: writes train.jsonl, test.jsonl (and dev.jsonl with --n-dev)."),
    test_fraction: Optional[float] = typer.Option(None, "--test-fraction", help="Share of templates/names held out (default 0.2)."),
    n_words: Optional[int] = typer.Option(None, "--n-words", help="last_letters: words per question (default 4)."),
    n_flips: Optional[int] = typer.Option(None, "--n-flips", help="coin_flip: people per question (default 4)."),
) -> None:
    """Generate seeded train/test (and dev) sets offline and write DIR/train.jsonl, DIR/test.jsonl."""
    from cotdistill.core.records import example_rows, write_jsonl_files
    from cotdistill.data.generators import generate_split

    out = output_dir(out, "--out")
    opts = {k: v for k, v in (("test_fraction", test_fraction), ("n_words", n_words), ("n_flips", n_flips)) if v is not None}
    train, dev, test = generate_split(task, n_train, n_test, seed, split=split, n_dev=n_dev, **opts)
    splits = {"train": train, "test": test, **({"dev": dev} if dev else {})}
    write_jsonl_files({out / f"{name}.jsonl": example_rows(examples) for name, examples in splits.items()})
    print(f"wrote {len(train)} train, {len(dev)} dev and {len(test)} test {task} problems ({split} split, seed {seed}) to {out}")


NGRAM_OPTION = typer.Option(default(DataConfig, "decontamination_ngram"), "--ngram", min=1,
                             help="Words in a row shared with a held-out question that make a training question contaminated.")


@data_app.command("prepare")
def data_prepare(
    path: str = typer.Argument(..., help="Dataset file, folder, or Hugging Face hub name."),
    out: Path = typer.Option(..., "--out", help="Normalised jsonl to write."),
    format: Optional[str] = FORMAT_OPTION,
    limit: Optional[int] = typer.Option(None, "--limit", help="Keep only the first N examples."),
    split: Optional[str] = SPLIT_OPTION,
    map_items: list[str] = MAP_OPTION,
    exclude: list[Path] = typer.Option([], "--exclude", help="Decontaminate against this dataset (e.g. the test set); repeatable."),
    ngram: int = NGRAM_OPTION,
) -> None:
    """Write a dataset as normalised jsonl {id, question, answer, answer_type, choices?, source}."""
    from cotdistill.data.load import load_dataset
    from cotdistill.core.records import write_examples

    out = output_file(out, "--out")
    result = load_dataset(path, format=format, mapping=_data_mapping(map_items), split=split, limit=limit)
    examples = _decontaminate(result.examples, exclude, ngram, None)
    write_examples(out, examples)
    print(f"wrote {len(examples)} examples to {out} (format {result.format})")
    if result.skipped:
        reasons = "; ".join(f"{n} × {r}" for r, n, _ in result.skip_summary())
        print(f"skipped {len(result.skipped)} records: {reasons}  (details: cotdistill data stats {path})")


@data_app.command("decontaminate")
def data_decontaminate(
    path: str = typer.Argument(..., help="Training dataset: file, folder, or hub name."),
    against: list[Path] = typer.Argument(..., help="Held-out datasets (test sets, benchmarks) in any supported format."),
    out: Path = typer.Option(..., "--out", help="The training set without contaminated questions (normalised jsonl)."),
    dropped: Optional[Path] = typer.Option(None, "--dropped", help="Also write each dropped question, what it matched and the shared words (jsonl)."),
    format: Optional[str] = FORMAT_OPTION,
    ngram: int = NGRAM_OPTION,
) -> None:
    """Drop every training question that shares NGRAM consecutive words (normalised) with a held-out one."""
    from cotdistill.data.load import load_dataset
    from cotdistill.core.records import write_examples

    out = output_file(out, "--out")
    dropped = output_file(dropped, "--dropped") if dropped else None
    examples = load_dataset(path, format=format).examples
    kept = _decontaminate(examples, against, ngram, dropped)
    write_examples(out, kept)
    print(f"wrote {len(kept)} of {len(examples)} examples to {out}")


def _decontaminate(examples: list, against: list[Path], ngram: int, dropped_path: Optional[Path]) -> list:
    """`examples` without those sharing `ngram` words with any file of `against`; says how many went."""
    from cotdistill.data.load import load_dataset
    from cotdistill.core.records import write_jsonl
    from cotdistill.data.overlap import decontaminate

    all_dropped = []
    for other in against:
        examples, dropped = decontaminate(examples, load_dataset(str(other)).examples, ngram)
        all_dropped += [{**d, "held_out": str(other)} for d in dropped]
        print(f"decontamination: dropped {len(dropped)} question(s) sharing {ngram} consecutive words with {other}")
    if dropped_path is not None:
        write_jsonl(dropped_path, all_dropped)
    return examples


# ------------------------------------------------------------------ annotate


def _parse_assignments(items: list[str], option: str, example: str) -> dict:
    """KEY=VALUE strings to a dict; values read as YAML (4 -> int, true -> bool) by config.parse_value.
    A KEY given twice is refused, as in a config file: which one was meant cannot be known."""
    from cotdistill.core.config import parse_assignment

    out: dict = {}
    for key, value in (parse_assignment(option, item, example) for item in items):
        if key in out:
            raise UserError(f"{option} {key}: given twice ({out[key]!r} and {value!r}); give it once")
        out[key] = value
    return out


DRY_RUN_OPTION = typer.Option(False, "--dry-run", help="Print the teacher's estimated requests, tokens, time and "
                              "cost (measured on its first batch, which is cached) and stop.")


TEACHER_OPTIONS = SectionOptions(
    TeacherConfig, required=frozenset({"model"}), skip=frozenset({"api_key_env"}),  # a key's variable: --teacher-option api_key_env=NAME
    flags={"model": "--teacher", "zero_shot": "--zero-shot", "n_exemplars": "--exemplars", "exemplars": "--exemplar-file",
           "no_gold": "--no-gold", "options": "--teacher-option", "max_chars": "--max-cot-chars",
           "leak": "--leak-filter/--no-leak-filter", "underived": "--underived-filter/--no-underived-filter",
           "steps": "--step-filter/--no-step-filter"},
)


@app.command()
@with_sections
def annotate(
    out: Path = typer.Option(..., "--out", help="Run directory: writes annotations.jsonl, distill.jsonl, cache.sqlite."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset file (default: RUN_DIR/data/train.jsonl)."),
    data_format: Optional[str] = typer.Option(None, "--format", help="Dataset format (default: detected from the file)."),
    teacher: dict = TEACHER_OPTIONS,
    seed: int = SEED_OPTION,
    limit: Optional[int] = typer.Option(None, "--limit", help="Annotate only the first N questions."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar or table."),
    dry_run: bool = DRY_RUN_OPTION,
) -> None:
    """Annotate a dataset with teacher CoTs and filter them (resumable: rerun to continue)."""
    from cotdistill.annotation.annotate import annotate as annotate_examples
    from cotdistill.data.load import load_examples
    from cotdistill.pipeline import held_stage
    from cotdistill.core.rundir import RunDir
    from cotdistill.teachers import load_teacher

    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    run = RunDir(output_dir(out, "--out", "run directory"))
    if teacher["cache"] is not None:
        teacher["cache"] = str(output_file(teacher["cache"], "--cache", "teacher cache"))
    if teacher["exemplars"] is not None:
        teacher["exemplars"] = str(input_file(teacher["exemplars"]))
    teacher["options"] = _parse_assignments(teacher["options"], "--teacher-option", "n_ctx=8192")
    teacher["budget"] = _parse_assignments(teacher["budget"], "--budget", "minutes=30")
    config = from_options(TeacherConfig, flags=TEACHER_OPTIONS.names, **teacher)
    if data is None and not run.train_data.exists():
        raise UserError(f"no --data given and {run.train_data} does not exist; give --data PATH")
    examples = load_examples(data or run.train_data, data_format)
    if not examples:
        raise UserError(f"{data or run.train_data}: no examples to annotate")
    with held_stage(run):  # before the teacher loads: a busy or unwritable --out fails at once
        run.read_manifest()  # and so does a torn or foreign manifest
        backend = load_teacher(config.model, **config.backend_options())
        try:
            with held_stage(run, "annotate") as done:
                done.update(annotate_examples(examples, backend, run, config, seed=seed, limit=limit, quiet=quiet,
                                              dry_run=dry_run), data=str(data or run.train_data))
        finally:
            backend.close()


# ------------------------------------------------------------------ train


def _bf16_option(value: str) -> bool | str:
    if value.lower() in ("auto", "true", "false"):
        return {"auto": "auto", "true": True, "false": False}[value.lower()]
    raise UserError(f"--bf16 {value!r}: expected auto, true or false")


TRAIN_OPTIONS = SectionOptions(TrainSettings, flags={"lora": "--lora/--full", "merge_lora": "--merge/--no-merge"})


@app.command()
@with_sections
def train(
    run: Optional[Path] = typer.Option(None, "--run", help="Run directory: reads RUN/distill.jsonl, writes RUN/students/MODE."),
    student: str = typer.Option(default(StudentConfig, "model"), "--student", help="Model directory, hub name, or embedded:NAME."),
    mode: str = typer.Option(COT, "--mode", help=f"{' | '.join(TRAINING_MODES)} (multitask: rationale and answer as two tasks)."),
    data: Optional[Path] = typer.Option(None, "--data", help="distill.jsonl to train on (default: RUN/distill.jsonl)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory (default: RUN/students/MODE)."),
    distill_targets: Optional[Path] = typer.Option(None, "--distill-targets", help="With --distill: the teacher's "
                                                   "targets (RUN/teacher-targets/*.jsonl, written by `cotdistill run`)."),
    settings: dict = TRAIN_OPTIONS,
    seed: int = SEED_OPTION,
    restart: bool = typer.Option(False, "--restart", help="Discard checkpoints or a model of another configuration in --out."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Fine-tune a student on distilled CoTs (resumable: rerun the same command after a crash).

    Data parallel: accelerate launch --multi_gpu --num_processes N -m cotdistill.cli train ...
    or torchrun --nproc_per_node N -m cotdistill.cli train ... (GPUs, or CPUs over gloo).
    """

    mode = normalise_mode(mode)
    if run is None and (data is None or out is None):
        raise UserError("give --run RUN_DIR, or both --data and --out")
    run = output_dir(run, "--run", "run directory") if run else None
    out = output_dir(out, "--out", "run directory") if out else None  # it holds the lock, as a run directory
    data = input_file(data) if data else None
    from cotdistill.pipeline import held_stage
    from cotdistill.core.rundir import RunDir
    from cotdistill.training.train import TrainConfig, train_fingerprint, train_student

    config = from_options(
        TrainConfig, flags=TRAIN_OPTIONS.names,
        **{**settings, "bf16": _bf16_option(settings["bf16"])}, student=student, mode=mode,
        data=data or run / "distill.jsonl", out=out or run / "students" / mode, seed=seed, restart=restart, quiet=quiet,
        distill_targets=input_file(distill_targets) if distill_targets else None,
    )
    # In a run directory the stage is recorded as `cotdistill run` records it (so `run` sees it up
    # to date); a student folder outside one is held only.
    held = held_stage(RunDir(run), f"train:{mode}", fingerprint=train_fingerprint(config)) if run else held_stage(RunDir(out))
    with held as done:
        result = train_student(config)
        done["metrics"] = result.metrics
    m = result.metrics
    if result.already_trained:
        print(f"already trained with this configuration: {result.out_dir} (pass --restart to train again)")
        return
    if result.main_process:
        tps = m.get("tokens_per_s") or 0.0
        print(
            f"trained {m['steps']} steps in {m['train_s']:.0f} s ({tps:.0f} tokens/s, padding "
            f"{m['padding_fraction']:.1%}); train loss {m['first_train_loss']:.3f} → {m['final_train_loss']:.3f}"
            + (f", eval loss {m['final_eval_loss']:.3f}" if m.get("final_eval_loss") is not None else "")
            + f"\nstudent: {result.out_dir}"
        )


# ------------------------------------------------------------------ models

models_app = typer.Typer(help="The embedded teacher/student models shipped as PyPI packages.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """Show the embedded models: kind, size, whether installed (packages) and cached (assembled)."""
    from rich import box
    from rich.table import Table

    from cotdistill.models import embedded
    from cotdistill.core.catalogue import list_models
    from cotdistill.core.progress import readable_console

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("name", no_wrap=True, min_width=21)
    for column in ("kind", "size", "installed", "cached", "extra"):
        table.add_column(column, no_wrap=True)
    for m in list_models():
        table.add_row(
            m.spec, m.kind, f"{m.size / 1e6:.0f} MB",
            "yes" if embedded.is_installed(m) else "no",
            "yes" if embedded.is_cached(m) else "no",
            m.extra,
        )
    readable_console().print(table)
    print("install: pip install 'cotdistill[EXTRA]'  or  cotdistill models install NAME")
    print(f"cache: {embedded.cache_dir()}")


@models_app.command("install")
def models_install(
    name: str = typer.Argument(..., help="e.g. embedded:qwen2.5-0.5b"),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """pip-install a model's packages if missing, then assemble and verify its GGUF; prints the path."""
    from cotdistill.models import embedded
    from cotdistill.core.catalogue import get_model

    model = get_model(name)
    if not quiet:
        print(f"{model.spec}: {model.description}\nlicence/provenance: {model.provenance}")
    print(embedded.install(name, quiet=quiet))


@models_app.command("path")
def models_path(name: str = typer.Argument(..., help="e.g. embedded:gemma-3-270m")) -> None:
    """Print the path of the assembled, verified GGUF (assembling it on first use)."""
    from cotdistill.models import embedded

    print(embedded.model_path(name))


# ------------------------------------------------------------------ evaluate


@app.command()
@with_sections
def evaluate(
    run: Path = typer.Option(..., "--run", help="Run directory: reads RUN/data/test.jsonl, writes RUN/predictions/NAME.*"),
    model: str = typer.Option(..., "--model", help="A student directory (RUN/students/cot), hf:PATH_OR_HUB_NAME, or a "
                              "teacher spec (embedded:NAME, gguf:/path, openai:MODEL@URL)."),
    name: str = typer.Option(..., "--name", help="Name of this evaluation in the report, e.g. cot, answer-only, teacher."),
    data: Optional[Path] = typer.Option(None, "--data", help="Questions to answer, in any format `data stats` reads "
                                        "(GSM8K jsonl, SVAMP json, ASDiv xml, ...; default: RUN/data/test.jsonl)."),
    data_format: Optional[str] = FORMAT_OPTION,
    few_shot: Optional[int] = typer.Option(None, "--few-shot", help="Exemplars in the prompt (no hint). Default: 0 for "
                                           f"students fine-tuned here (bare question), {default(EvaluateConfig, 'few_shot')} for other models."),
    exemplars: Optional[Path] = typer.Option(None, "--exemplar-file", help="Exemplars for --few-shot (default: the project's)."),
    settings: dict = SectionOptions(EvalSettings),
    seed: int = SEED_OPTION,
    strict: Optional[bool] = typer.Option(None, "--strict/--lenient", help="Only a 'The answer is X.' sentence counts "
                                          "(default for fine-tuned students), or also the last number (default for prompted models)."),
    method: Optional[str] = typer.Option(None, "--method", help="Method label for the report (default: derived)."),
    teacher_option: list[str] = typer.Option([], "--teacher-option", help="Teacher backend option KEY=VALUE (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Accuracy (95 % Wilson CI) of a model on held-out questions; resumable: rerun to continue."""
    from cotdistill.core.baserates import rates_note
    from cotdistill.evaluation.evaluate import EvalOptions, evaluate_model
    from cotdistill.pipeline import held_stage
    from cotdistill.core.rundir import RunDir

    run = output_dir(run, "--run", "run directory")
    data = expand(data) if data else None
    exemplars = input_file(exemplars) if exemplars else None
    options = from_options(
        EvalOptions,
        **settings, data=data, data_format=data_format, few_shot=few_shot, exemplars=exemplars, seed=seed, strict=strict, method=method,
        teacher_options=_parse_assignments(teacher_option, "--teacher-option", "n_ctx=8192"), quiet=quiet,
    )
    with held_stage(RunDir(run), f"evaluate:{name}") as done:
        s = evaluate_model(RunDir(run), model, name, options)
        done["summary"] = s.to_dict()
    speed = f", {s.tokens_per_s:.1f} tokens/s" if s.tokens_per_s else ""
    speed += f" on {s.engine}" + (f" ({s.gguf_type} GGUF)" if s.gguf_type else "") if s.engine else ""
    print(
        f"{name}: accuracy {100 * s.accuracy:.1f} % (95 % CI {100 * s.ci_low:.1f}–{100 * s.ci_high:.1f}), "
        f"{s.correct}/{s.n} correct, {s.unparsed} without an answer{rates_note(s.to_dict())}; {s.method}; {s.seconds:.0f} s{speed}\n"
        f"predictions: {RunDir(run).predictions(name)}"
    )


# ------------------------------------------------------------------ report


@app.command()
def report(
    runs: list[Path] = typer.Argument(..., help="Run directories; several: a comparison across runs."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for report.md / report.html (default: the run "
                                       "directory; with several runs, RUNS_PARENT/comparison)."),
) -> None:
    """Write report.md and a self-contained report.html (opens offline) for one or several runs."""
    from cotdistill.reporting.report import write_report
    from cotdistill.core.rundir import RunDir

    md, html = write_report([RunDir(expand(r)) for r in runs], out)
    print(f"report: {html}\n        {md}")


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run directory with a distill.jsonl (or, with --gguf, a trained student)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the Hugging Face dataset (parquet + README.md "
                                       "card); with --gguf, for the GGUF (default RUN/students/MODE/gguf)."),
    student: Optional[str] = typer.Option(None, "--student", help="With --gguf: the student to export (a folder of "
                                          "RUN/students/, e.g. cot)."),
    gguf: bool = typer.Option(False, "--gguf", help="Export the student as a GGUF for llama.cpp / Ollama, with a "
                              "Modelfile and the llama-cli line beside it."),
    type_: str = typer.Option("f16", "--type", help="GGUF tensor type: f16 or q8_0 (norms and biases stay f32)."),
    base_gguf: Optional[Path] = typer.Option(None, "--base-gguf", help="The base model's GGUF, for a student whose "
                                             "base is not an embedded model (its tokenizer is copied from it)."),
) -> None:
    """The distilled set as a Hugging Face dataset: load it with datasets.load_dataset(OUT).
    With --student MODE --gguf: the fine-tuned student as a GGUF that llama.cpp and Ollama load."""
    from cotdistill.core.rundir import RunDir

    run = RunDir(expand(run_dir))
    if gguf or student:
        _export_gguf(run, student, gguf, output_dir(out, "--out", "GGUF folder") if out else None, type_,
                     expand(base_gguf) if base_gguf else None)
        return
    if out is None:
        raise UserError("export: give --out DIR (the folder for the dataset), or --student MODE --gguf for a GGUF")
    from cotdistill.reporting.cards import export_dataset

    export_dataset(run, output_dir(out, "--out", "dataset folder"))
    print(f"dataset: {out} (datasets.load_dataset('{out}'))")


def _export_gguf(run, mode: Optional[str], gguf: bool, out: Optional[Path], type_: str, base_gguf: Optional[Path]) -> None:
    """`export --student MODE --gguf`: the GGUF, Modelfile and RUN.txt; the student's model card says how to run it."""
    from cotdistill.core.records import read_examples
    from cotdistill.models.gguf import card_sections, export_gguf
    from cotdistill.reporting.cards import write_model_cards

    if not gguf or not mode:
        raise UserError("export: a student is exported with --student MODE --gguf (both)")
    folder = run.student(mode)
    if not folder.is_dir():
        trained = sorted(p.name for p in (run.root / "students").glob("*") if p.is_dir())
        raise UserError(f"{folder}: no student '{mode}' in this run (students: {', '.join(trained) or 'none'})")
    held_out = read_examples(run.test_data) if run.test_data.exists() else []
    result = export_gguf(folder, out or folder / "gguf", type_, name=f"{run.root.name}-{mode}-{type_}",
                         base_gguf=base_gguf, example=held_out[0].question if held_out else None)
    if out is None and run.config.exists():
        write_model_cards(run, [mode], card_sections(run, [mode]))  # its card gains the "Run it with llama.cpp / Ollama" section
    print(f"gguf: {result.gguf} ({result.gguf.stat().st_size / 1e6:.0f} MB, {type_}, {result.tensors} tensors)\n"
          f"run it: {result.llama_cli}\n"
          f"Ollama: {result.modelfile}; all commands: {result.run_txt}")


# ------------------------------------------------------------------ run / demo


@app.command()
def run(
    config: Path = typer.Argument(..., help="The run's YAML config (see configs/)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config field: section.field=value (repeatable)."),
    dry_run: bool = DRY_RUN_OPTION,
) -> None:
    """All stages in order (data, annotate, train, evaluate, report); each skipped when up to date.
    teacher.budget in the config (tokens, usd, minutes) stops the teacher cleanly; rerun to continue."""
    from cotdistill.core.config import load_config
    from cotdistill.pipeline import run_pipeline

    run_config = load_config(config, set_)
    output_dir(run_config.run_path, "run_dir", "run directory")
    run_pipeline(run_config, dry_run=dry_run)


@app.command()
def study(
    config: Path = typer.Argument(..., help="A run config with a study.variants list."),
    set_: list[str] = typer.Option([], "--set", help="Override a field of every variant: section.field=value (repeatable)."),
    only: list[str] = typer.Option([], "--only", help="Run the base and this variant only (repeatable), e.g. --only kd-sampled."),
) -> None:
    """Ablations: the config's run, then each study variant (same data and teacher cache), one comparison report.

    Variants are listed in the config (configs/cpu-math.yaml has two), e.g.
      study: {variants: [{name: half, set: \\[data.n_train=200]}, {name: k1, set: \\[teacher.samples=1]}]}

    The report shows each variant's accuracy, the variant each student would ship with when chosen on dev, and accuracy against training-set size.
    """
    from cotdistill.study import run_study

    run_study(config, set_, only)


@app.command()
def demo(
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/demo)."),
    set_: list[str] = typer.Option([], "--set", help="Override a field of the demo config: section.field=value."),
) -> None:
    """The whole method on the embedded default models, on this CPU (README: how long on which CPU)."""
    from importlib import resources

    from cotdistill.core.config import load_config
    from cotdistill.pipeline import run_pipeline

    overrides = list(set_) + ([f"run_dir={out}"] if out else [])
    with resources.as_file(resources.files("cotdistill") / "configs" / "demo.yaml") as path:
        config = load_config(path, overrides)
        output_dir(config.run_path, "--out" if out else "run_dir", "run directory")
        run_pipeline(config)


INTERRUPTED = "interrupted: rerun the same command to resume"
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def main() -> None:
    """The console script: a user's mistake, an output that cannot be written, or a stop signal
    ends in one line on stderr, never a traceback.

    Exit codes: 0 done, 2 a UserError, 128 + the signal's number when Ctrl-C (130), SIGTERM (143)
    or SIGHUP (129) stopped the command (what a shell reports for a process that signal killed)."""
    if sys.stdout is None:  # started with stdout closed (`>&-`): its file descriptor would be reused by our files
        print("error: standard output is closed; redirect it to a file or /dev/null", file=sys.stderr)
        sys.exit(2)
    with _stop_signals(), _library_noise_hidden(), _checked_stdout():
        try:
            try:
                app()
            finally:
                sys.stdout.flush()  # a full disk shows here, while the error can still be reported
        except UserError as e:
            print(f"error: {redact(str(e))}", file=sys.stderr)  # a last safety net: no key reaches a terminal
            sys.exit(2)
        except OSError as e:  # a full disk or a read-only place the writers did not name (e.g. in a library)
            error = storage_error(e)
            if error is None:
                raise
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except Interrupted as e:
            print(INTERRUPTED, file=sys.stderr)
            sys.exit(128 + e.signum)
        except BrokenPipeError:  # the reader left (`| head`) before our last flush: quiet, as typer has it
            sys.exit(1)


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP raise Interrupted in the main thread, once.

    The stage in flight then unwinds as from any error: every teacher answer already returned is
    in the cache (committed one by one), and the manifest records the stage as "interrupted". An
    HTTP teacher's requests in flight, which are paid for, are first finished and kept
    (stopping.py); a second signal stops without waiting for them. Later signals are ignored until the process
    exits, so that this cleanup finishes and the message is printed once, however often Ctrl-C
    is pressed. A signal ignored when we start (nohup, a background job) stays ignored."""
    previous: dict[int, Any] = {}
    stopped = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopped
        if stopped:  # a second signal that was already pending
            return
        if stopping.defer(signum):  # paid requests in flight: they finish first (a second signal: now)
            print("stopping: waiting for the teacher's answers in flight (paid for already) to keep them; "
                  "press Ctrl-C again to stop at once", file=sys.stderr)
            return
        stopped = True
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    in_main_thread = threading.current_thread() is threading.main_thread()  # where handlers can be set
    for s in STOP_SIGNALS if in_main_thread else ():
        if signal.getsignal(s) is not signal.SIG_IGN:
            previous[s] = signal.signal(s, stop)
    try:
        yield
    finally:
        if not stopped:  # in-process callers (tests) get their handlers back
            for s, handler in previous.items():
                signal.signal(s, handler)


@contextlib.contextmanager
def _library_noise_hidden() -> Iterator[None]:
    """Users of the command see cotdistill's messages only: the libraries' warnings (transformers'
    FutureWarnings, torch's UserWarnings) are for developers, and their progress bars (loading
    weights, downloads) would be raw carriage returns in a log file. Only the CLI hides them, so
    that a program importing cotdistill keeps Python's defaults; -W or PYTHONWARNINGS show them."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # transformers' own logger warnings
    if sys.stderr is None or not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read by huggingface_hub and transformers
    if sys.warnoptions:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class _CheckedStdout:
    """sys.stdout while a command runs: a write that fails is one line (a UserError) naming why, not
    a traceback or a silent exit 0: a full disk (`> /dev/full`), or a character the output's
    encoding lacks (PYTHONIOENCODING=ascii). A reader that went away (`| head`) ends the command
    quietly, as typer does (exit 1)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except UnicodeEncodeError as e:
            raise UserError(
                f"standard output ({e.encoding}) cannot show the character {e.object[e.start:e.end]!a}; "
                "use a UTF-8 terminal or set PYTHONIOENCODING=utf-8"
            ) from None
        except OSError as e:
            raise self._failed(e) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as e:
            raise self._failed(e) from None

    def _failed(self, e: OSError) -> OSError | UserError:
        """Drop what could not be written (so that Python's final flush does not fail again)."""
        with contextlib.suppress(OSError, ValueError, AttributeError):  # not a real file (in-process tests)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        if isinstance(e, BrokenPipeError):
            return e
        return UserError(f"cannot write to standard output ({e.strerror or e}); free space or redirect it elsewhere")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _checked_stdout() -> Iterator[None]:
    stream = sys.stdout
    sys.stdout = _CheckedStdout(stream)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout = stream


if __name__ == "__main__":
    from cotdistill.__main__ import onto_jemalloc

    onto_jemalloc()  # as the console script does (core/allocator.py)
    main()
