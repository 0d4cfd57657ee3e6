"""`run CONFIG.yaml`: every stage in order, each skipped when its outputs are up to date.

A stage is up to date when the manifest says it finished with the same fingerprint (a hash of
the config section that drives it and of its input files) and its outputs exist. Stages are
themselves resumable (the teacher cache, training checkpoints), so a crash anywhere costs at most
the work in flight: rerun the same command.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from cotdistill.core.progress import readable_console
from cotdistill.core.config import EvalSettings, RunConfig, dump_config
from cotdistill.core.errors import UserError
from cotdistill.core.hashing import fingerprint, model_files
from cotdistill.core.records import example_rows, write_jsonl, write_jsonl_files
from cotdistill.core.evalnames import DEV, STUDENT_FEW_SHOT, TEACHER_FEW_SHOT, EvalName
from cotdistill.core.modes import COT, MODES
from cotdistill.core.rundir import RunDir, main_process
from cotdistill.core.secrets import mask_spec

if TYPE_CHECKING:
    from cotdistill.evaluation.evaluate import EvalOptions
    from cotdistill.core.sampling import Record
    from cotdistill.training.teacher_targets import TargetSettings
    from cotdistill.training.train import TrainConfig

console = readable_console(stderr=True)


@contextlib.contextmanager
def held_stage(run: RunDir, name: str | None = None, **known: Any) -> Iterator[dict[str, Any]]:
    """The one way a stage runs, in `run` and alone (`cotdistill annotate`, `train`, `evaluate`):
    `with held_stage(run, "annotate") as done: done.update(stage_fn(...))` holds the run directory
    (RunDir.lock, re-entrant) and records the stage's outcome in its manifest (RunDir.stage, with
    `known`). `name` None: hold it only (a whole run, the work before a stage starts, or a folder
    that is not a run directory). Only the main process holds and records; the other ranks of a
    distributed launch get a `done` nobody reads."""
    if not main_process():
        yield {}
    elif name is None:
        with run.lock():
            yield {}
    else:
        with run.lock(), run.stage(name, **known) as done:
            yield done


def run_stage(run: RunDir, name: str, fp: str, outputs: list[Path], fn: Callable[[], dict[str, Any]]) -> None:
    """Run `fn` unless the manifest shows this stage done with fingerprint `fp` and outputs exist."""
    previous = run.read_manifest().get("stages", {}).get(name, {})
    if previous.get("status") == "done" and previous.get("fingerprint") == fp and all(p.exists() for p in outputs):
        console.print(f"[dim]{name}: up to date, skipped[/dim]")
        return
    console.rule(f"[bold]{name}")
    with held_stage(run, name, fingerprint=fp) as done:
        done.update(fn())


# ------------------------------------------------------------------ stage: data


def prepare_data(config: RunConfig, run: RunDir) -> dict[str, Any]:
    """Write data/train.jsonl, dev.jsonl, test.jsonl and data/tests/NAME.jsonl (see splits.py)."""
    from cotdistill.data.splits import make_splits

    splits = make_splits(config.data, config.data_seed)
    for note in splits.notes:
        console.print(note)
    write_jsonl_files({run.train_data: example_rows(splits.train), run.dev_data: example_rows(splits.dev),
                       run.test_data: example_rows(splits.test), run.decontamination: splits.dropped,
                       **{run.extra_test(name): example_rows(examples) for name, examples in splits.extra_tests.items()}})
    extra = "".join(f", {len(v)} {k}" for k, v in splits.extra_tests.items())
    console.print(f"data: {len(splits.train)} train, {len(splits.dev)} dev, {len(splits.test)} test{extra} → {run.train_data.parent}")
    return {**splits.counts, "notes": splits.notes, "seed": config.data_seed}


# ------------------------------------------------------------------ stage: annotate


# ------------------------------------------------------------------ stage: train


def first_samples(run: RunDir) -> Path:
    """distill.jsonl restricted to sample 0 of each question: what one teacher call per question
    would have given: the data of the first-sample-only mode (cot-k1, modes.py)."""
    path = run.root / "distill-k1.jsonl"
    write_jsonl(path, (r for r in run.read_distill() if r.get("sample", 0) == 0))
    return path


def target_settings(config: RunConfig) -> "TargetSettings | None":
    """What the teacher-targets stage scores with, when the students distill token by token."""
    from cotdistill.training.teacher_targets import TargetSettings

    s = config.student
    if s.distill == "off":
        return None
    return TargetSettings(config.teacher.model, s.distill_temperature, s.distill_tokens, config.seed, s.distill_context)


def recording(config: RunConfig) -> "Record | None":
    """What the teacher records as it writes: its probabilities, when the students distill in that context."""
    from cotdistill.core.sampling import Record

    s = config.student
    if s.distill == "off" or s.distill_context != "written":
        return None
    return Record(s.distill_temperature, s.distill_tokens)


def check_distill_source(config: RunConfig) -> None:
    """Before the teacher is paid for anything: can the students learn from its probabilities? A
    teacher that runs here is checked token by token against the student's vocabulary; a server
    records only its top logprobs as it writes (teachers/openai_compat.py), whose tokens are checked
    as they are aligned to the student's (teacher_targets.align_written)."""
    from cotdistill.training.teacher_targets import check_pair

    s = config.student
    if s.distill_context == "written" and config.teacher.model.startswith("openai:"):
        if s.distill == "sampled":
            raise UserError(f"student.distill: sampled needs draws from the teacher's whole distribution; "
                            f"{mask_spec(config.teacher.model)} (a server) returns its top logprobs only: use "
                            "student.distill: top-k with it, or a teacher that runs here (embedded:, gguf:, hf:)")
        return
    check_pair(config.teacher.model, s.model, s.max_len, config.quiet)


def train_config(config: RunConfig, run: RunDir, mode: str) -> "TrainConfig":
    from cotdistill.training.train import TrainConfig

    s, m = config.student, MODES[mode]
    data = first_samples(run) if m.first_sample_only else run.distill
    targets = target_settings(config)
    return TrainConfig(**s.model_dump(exclude={"model", "modes"}), student=s.model, mode=m.training_mode,
                       data=data, out=run.student(mode), seed=config.seed, quiet=config.quiet,
                       distill_targets=targets.file(run.root) if targets else None)


def teacher_targets_stage(config: RunConfig, run: RunDir) -> None:
    """With student.distill on: the teacher's sparse probabilities on every training sequence of
    every student (teacher_targets.py), before any is trained: scored by the teacher in the student's
    context, or taken from what it recorded as it wrote (written.jsonl)."""
    from cotdistill.training.teacher_targets import align_written, score_training_data

    settings = target_settings(config)
    if settings is None:
        return
    sources = [(tc.data, tc.mode) for tc in (train_config(config, run, mode) for mode in config.student.modes)]
    out = settings.file(run.root)
    s = config.student
    written = settings.context == "written"
    inputs = [Path(d) for d, _ in sources] + ([run.written] if written else [])
    make = ((lambda: align_written(sources, s.model, s.max_len, run.written, out, config.quiet)) if written else
            (lambda: score_training_data(sources, s.model, settings, s.max_len, out, config.quiet)))
    run_stage(run, "teacher-targets", fingerprint(settings.__dict__, s.model, s.max_len, *inputs, [m for _, m in sources]),
              [out], make)


# ------------------------------------------------------------------ stage: evaluate


def evaluations(config: RunConfig, run: RunDir) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, model spec, EvalOptions overrides) for every model the results table compares."""
    e = config.evaluate
    k = config.teacher.samples
    methods = {mode: m.method for mode, m in MODES.items() if m.first_sample_only}
    if k > 1:
        methods[COT] = f"{MODES[COT].method}, {k} samples per question"
    models = [(EvalName.student(mode), str(run.student(mode)), {"method": methods[mode]} if mode in methods else {})
              for mode in config.student.modes]
    # `engine: llamacpp` is for the students fine-tuned here; a baseline keeps its own backend
    # (embedded:NAME runs its GGUF on llama.cpp, a hub model runs on transformers).
    baseline = {"engine": "torch"}
    if e.few_shot_student:
        models.append((STUDENT_FEW_SHOT, config.student.model, {"few_shot": e.few_shot, **baseline}))
    if e.teacher:
        limits = [x for x in (e.limit, e.teacher_limit) if x is not None]
        models.append((TEACHER_FEW_SHOT, config.teacher.model,
                       {"few_shot": e.few_shot, "teacher_options": config.teacher.backend_options(),
                        "limit": min(limits) if limits else None, **baseline}))
    # Every model again on each extra test set: NAME.TESTSET, data/tests/TESTSET.jsonl.
    extra = [(name.on(t.name), spec, {**overrides, "data": run.extra_test(t.name)})
             for t in config.data.extra_tests for name, spec, overrides in models]
    # The fine-tuned students on the dev split too (NAME.dev): the figures settings are chosen on.
    dev = [(name.on(DEV), spec, {**overrides, "data": run.dev_data})
           for name, spec, overrides in models[:len(config.student.modes)]] if e.dev and config.data.n_dev else []
    return [(str(name), spec, overrides) for name, spec, overrides in models + extra + dev]


def evaluate_options(config: RunConfig, overrides: dict[str, Any]) -> "EvalOptions":
    from cotdistill.evaluation.evaluate import EvalOptions

    e = config.evaluate
    options = {**e.model_dump(include=set(EvalSettings.model_fields)), "seed": config.seed, "quiet": config.quiet}
    return EvalOptions(**{**options, **overrides})


def evaluate_stage(config: RunConfig, run: RunDir, name: str, spec: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The stage evaluate:NAME (skipped when up to date); returns the evaluation's summary."""
    from cotdistill.evaluation.evaluate import eval_dtype, evaluate_model
    from cotdistill.evaluation.llamacpp_student import resolve_engine

    opts = evaluate_options(config, overrides)
    inputs = [opts.data or run.test_data] + model_files(Path(spec))
    # dtype "auto" as resolved on this machine, and the engine this spec runs on
    settings = {**opts.model_dump(), "dtype": eval_dtype(opts.dtype), "engine": resolve_engine(spec, opts)}
    run_stage(run, f"evaluate:{name}", fingerprint(spec, settings, *inputs), [run.predictions(name)],
              lambda: {"summary": evaluate_model(run, spec, name, opts).to_dict()})
    return run.read_manifest()["stages"][f"evaluate:{name}"]["summary"]


TEACHER_CHECK = str(TEACHER_FEW_SHOT.on(DEV))


def check_teacher(config: RunConfig, run: RunDir) -> None:
    """Before annotation, on a set of labels: the teacher's unhinted accuracy on the first
    `evaluate.teacher_check` dev questions, against always giving the majority answer. A teacher that
    does not beat it writes CoTs that rationalise the hinted answer, and the gold filter keeps them
    (any label can be explained): say so before hours are spent on them (`run --dry-run` too)."""
    from cotdistill.core.baserates import LABEL_TYPES, above_majority, rates_note
    from cotdistill.core.records import read_examples

    e = config.evaluate
    if not (e.teacher_check and e.teacher and run.dev_data.exists()):
        return
    dev = read_examples(run.dev_data)
    if not dev or not all(x.answer_type in LABEL_TYPES for x in dev):
        return
    summary = evaluate_stage(config, run, TEACHER_CHECK, config.teacher.model,
                             {"few_shot": e.few_shot, "teacher_options": config.teacher.backend_options(),
                              "limit": e.teacher_check, "data": run.dev_data,
                              "engine": "torch"})
    console.print(f"teacher check: {100 * summary['accuracy']:.1f} % without the hint on {summary['n']} dev questions"
                  f"{rates_note(summary)}", markup=False, highlight=False)
    if above_majority(summary["ci_low"], summary.get("majority_rate")) is False:
        console.print("[bold yellow]warning:[/bold yellow] the teacher is not shown to know this task better than always "
                      f"answering {summary['majority_answer']!r}: its hinted CoTs are likely rationalisations, and a "
                      "student cannot learn the task from them. Consider a stronger teacher before annotating.")


# ------------------------------------------------------------------ the whole run


def run_pipeline(config: RunConfig, dry_run: bool = False) -> RunDir:
    """Run every stage of `config` in order; each is skipped when its outputs are up to date.
    `dry_run`: the data stage, then the teacher's cost estimate (annotate.annotate), and stop."""
    run = RunDir(config.run_path)
    with held_stage(run):
        return _run_stages(config, run, dry_run)


def _run_stages(config: RunConfig, run: RunDir, dry_run: bool = False) -> RunDir:
    from cotdistill.annotation.annotate import annotate
    from cotdistill.data.load import load_examples
    from cotdistill.reporting.cards import write_model_cards
    from cotdistill.models.gguf import card_sections
    from cotdistill.reporting.report import summary_markdown, write_report
    from cotdistill.teachers import load_teacher
    from cotdistill.training.train import train_fingerprint, train_student

    dump_config(config, run.config)
    t0 = time.perf_counter()

    data_outputs = [run.train_data, run.dev_data, run.test_data, run.decontamination] + [run.extra_test(t.name) for t in config.data.extra_tests]
    run_stage(run, "data", fingerprint(config.data.model_dump(), config.data_seed), data_outputs,
              lambda: prepare_data(config, run))

    check_teacher(config, run)
    if config.student.distill != "off" and not dry_run and not run.distill.exists():
        check_distill_source(config)

    def do_annotate() -> dict[str, Any]:
        teacher = load_teacher(config.teacher.model, **config.teacher.backend_options())
        try:
            return annotate(load_examples(run.train_data), teacher, run, config.teacher, seed=config.seed,
                            quiet=config.quiet, dry_run=dry_run, record=recording(config))
        finally:
            teacher.close()

    if dry_run:
        with held_stage(run, "annotate") as done:
            done.update(do_annotate())
        return run
    record = recording(config)
    annotate_fp = [config.teacher.model_dump(exclude={"budget"}), config.seed, run.train_data]
    run_stage(run, "annotate", fingerprint(*annotate_fp, *([record.key()] if record else [])),
              [run.annotations, run.distill] + ([run.written] if record else []), do_annotate)

    teacher_targets_stage(config, run)
    for mode in config.student.modes:
        tc, stage = train_config(config, run, mode), f"train:{mode}"
        fp = train_fingerprint(tc)
        # Same fingerprint as a crashed attempt: resume its checkpoints. A changed config or
        # distill set: the old checkpoints belong to another model, start afresh.
        previous = run.read_manifest().get("stages", {}).get(stage, {}).get("fingerprint")
        tc.restart = previous is not None and previous != fp
        run_stage(run, stage, fp, [run.student(mode) / "config.json"],
                  lambda tc=tc: {"metrics": train_student(tc).metrics})

    for name, spec, overrides in evaluations(config, run):
        evaluate_stage(config, run, name, spec, overrides)

    peaks = [info.get("peak_rss_gib") or 0 for info in run.read_manifest()["stages"].values()]
    run.record_stage("run", seconds=round(time.perf_counter() - t0, 1), peak_rss_gib=max(peaks, default=None))
    write_model_cards(run, config.student.modes, card_sections(run, config.student.modes))
    md, html = write_report([run])  # after the run's own row, so the report's timings end with it
    console.print(summary_markdown(run), markup=False, highlight=False)
    console.print(f"[bold green]report:[/bold green] {html.resolve()}\n        {md.resolve()}")
    return run
