"""`run CONFIG.yaml`: every stage in order, each skipped when its outputs are up to date.

A stage is up to date when the manifest says it finished with the same fingerprint (a hash of
the config section that drives it and of its input files) and its outputs exist. Stages are
themselves resumable (the teacher cache, training checkpoints), so a crash anywhere costs at most
the work in flight: rerun the same command.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from rich.console import Console

from cotdistill.config import DataConfig, RunConfig, dump_config
from cotdistill.embedded import stream_sha256
from cotdistill.examples import Example, write_examples
from cotdistill.memory import PeakMemory
from cotdistill.rundir import RunDir

if TYPE_CHECKING:
    from cotdistill.annotate import AnnotateOptions
    from cotdistill.evaluate import EvalOptions
    from cotdistill.train import TrainConfig

console = Console(stderr=True)


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
    return stream_sha256(path) if path.exists() else "missing"


def run_stage(run: RunDir, name: str, fp: str, outputs: list[Path], fn: Callable[[], dict[str, Any] | None]) -> None:
    """Run `fn` unless the manifest shows this stage done with fingerprint `fp` and outputs exist."""
    done = run.read_manifest().get("stages", {}).get(name, {})
    if done.get("status") == "done" and done.get("fingerprint") == fp and all(p.exists() for p in outputs):
        console.print(f"[dim]{name}: up to date, skipped[/dim]")
        return
    console.rule(f"[bold]{name}")
    run.record_stage(name, status="running", fingerprint=fp)
    start = time.perf_counter()
    with PeakMemory() as memory:
        info = fn() or {}
    run.record_stage(name, **{**info, "status": "done", "fingerprint": fp,
                                "seconds": round(time.perf_counter() - start, 1), "peak_rss_gib": memory.gib})


# ------------------------------------------------------------------ stage: data


def prepare_data(cfg: DataConfig, run: RunDir) -> dict[str, Any]:
    """Write data/train.jsonl and data/test.jsonl: generated offline or loaded, overlap removed."""
    from cotdistill.overlap import remove_overlap

    if cfg.generate:
        from cotdistill.generators import generate_split

        train, test = generate_split(
            cfg.generate, cfg.n_train, cfg.n_test, seed=cfg.seed, split=cfg.split, **cfg.generate_options
        )
    else:
        train, test = _load_train_test(cfg)
    train, removed = remove_overlap(train, test)
    if removed:
        console.print(f"removed {removed} training question(s) that also appear in the test set")
    write_examples(run.train_data, train)
    write_examples(run.test_data, test)
    console.print(f"data: {len(train)} train, {len(test)} test → {run.train_data.parent}")
    return {"n_train": len(train), "n_test": len(test), "overlap_removed": removed}


def _load_train_test(cfg: DataConfig) -> tuple[list[Example], list[Example]]:
    from cotdistill.datasets import load_dataset

    train = load_dataset(cfg.train, format=cfg.format, mapping=cfg.mapping, split=cfg.train_split).examples
    if cfg.test:
        test = load_dataset(cfg.test, format=cfg.format, mapping=cfg.mapping, split=cfg.test_split).examples
        if cfg.n_test is not None:
            test = test[: cfg.n_test]
    else:  # hold out the LAST n_test questions of the train file
        train, test = train[: -cfg.n_test], train[-cfg.n_test :]
    if cfg.n_train is not None:
        train = train[: cfg.n_train]
    return train, test


# ------------------------------------------------------------------ stage: annotate


def annotate_options(config: RunConfig) -> "AnnotateOptions":
    from cotdistill.annotate import AnnotateOptions
    from cotdistill.filters import FilterOptions
    from cotdistill.prompts import PromptOptions

    t = config.teacher
    return AnnotateOptions(
        prompt=PromptOptions(hint=t.hint, zero_shot=t.zero_shot, n_exemplars=t.n_exemplars,
                             exemplars_path=Path(t.exemplars) if t.exemplars else None),
        filters=FilterOptions(**t.filters.model_dump()),
        samples=t.samples, temperature=t.temperature, max_tokens=t.max_tokens, seed=config.seed,
        batch_size=t.batch_size, no_gold=t.no_gold, quiet=config.quiet,
    )


def teacher_options(config: RunConfig) -> dict[str, Any]:
    opts = dict(config.teacher.options)
    if config.teacher.api_key_env:
        opts["api_key_env"] = config.teacher.api_key_env
    return opts


# ------------------------------------------------------------------ stage: train


def train_config(config: RunConfig, run: RunDir, mode: str) -> "TrainConfig":
    from cotdistill.train import TrainConfig

    s = config.student
    return TrainConfig(
        student=s.model, mode=mode, data=run.distill, out=run.student(mode), lora=s.lora, lora_r=s.lora_r,
        lora_dropout=s.lora_dropout, epochs=s.epochs, max_steps=s.max_steps, lr=s.lr, batch_size=s.batch_size,
        grad_accum=s.grad_accum, max_len=s.max_len, schedule=s.schedule, warmup=s.warmup, bf16=s.bf16, seed=config.seed,
        save_steps=s.save_steps, eval_fraction=s.eval_fraction, quiet=config.quiet,
    )


# ------------------------------------------------------------------ stage: evaluate


def evaluations(config: RunConfig, run: RunDir) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, model spec, EvalOptions overrides) for every model the results table compares."""
    e = config.evaluate
    models = [(f"student-{mode}", str(run.student(mode)), {}) for mode in config.student.modes]
    if e.few_shot_student:
        models.append(("student-few-shot", config.student.model, {"few_shot": e.few_shot}))
    if e.teacher:
        limits = [x for x in (e.limit, e.teacher_limit) if x is not None]
        models.append(("teacher-few-shot", config.teacher.model,
                       {"few_shot": e.few_shot, "teacher_options": teacher_options(config),
                        "limit": min(limits) if limits else None}))
    return models


def evaluate_options(config: RunConfig, overrides: dict[str, Any]) -> "EvalOptions":
    from cotdistill.evaluate import EvalOptions

    e = config.evaluate
    options = dict(batch_size=e.batch_size, max_new_tokens=e.max_new_tokens, limit=e.limit, samples=e.samples,
                   temperature=e.temperature, seed=config.seed, quiet=config.quiet)
    return EvalOptions(**{**options, **overrides})


# ------------------------------------------------------------------ the whole run


def run_pipeline(config: RunConfig) -> RunDir:
    """Run every stage of `config` in order; each is skipped when its outputs are up to date."""
    from cotdistill.annotate import annotate, load_examples
    from cotdistill.evaluate import evaluate_model
    from cotdistill.report import summary_markdown, write_report
    from cotdistill.teachers import load_teacher
    from cotdistill.train import train_student

    run = RunDir(config.run_path)
    run.root.mkdir(parents=True, exist_ok=True)
    dump_config(config, run.config)
    t0 = time.perf_counter()

    run_stage(run, "data", fingerprint(config.data.model_dump()), [run.train_data, run.test_data],
              lambda: prepare_data(config.data, run))

    def do_annotate() -> dict[str, Any]:
        teacher = load_teacher(config.teacher.model, **teacher_options(config))
        try:
            return annotate(load_examples(run.train_data), teacher, run, annotate_options(config))
        finally:
            teacher.close()

    run_stage(run, "annotate", fingerprint(config.teacher.model_dump(), config.seed, run.train_data),
              [run.annotations, run.distill], do_annotate)

    for mode in config.student.modes:
        tc, stage = train_config(config, run, mode), f"train:{mode}"
        fp = fingerprint(tc.__dict__, run.distill)
        # Same fingerprint as a crashed attempt: resume its checkpoints. A changed config or
        # distill set: the old checkpoints belong to another model, start afresh.
        previous = run.read_manifest().get("stages", {}).get(stage, {}).get("fingerprint")
        tc.restart = previous is not None and previous != fp
        run_stage(run, stage, fp, [run.student(mode) / "config.json"],
                  lambda tc=tc: {"metrics": train_student(tc).metrics})

    for name, spec, overrides in evaluations(config, run):
        opts = evaluate_options(config, overrides)
        inputs = [run.test_data] + ([Path(spec) / "model.safetensors"] if Path(spec).is_dir() else [])
        run_stage(run, f"evaluate:{name}", fingerprint(spec, opts.__dict__, *inputs), [run.predictions(name)],
                  lambda name=name, spec=spec, opts=opts: {"summary": evaluate_model(run, spec, name, opts).to_dict()})

    peaks = [info.get("peak_rss_gib") or 0 for info in run.read_manifest()["stages"].values()]
    run.record_stage("run", seconds=round(time.perf_counter() - t0, 1), peak_rss_gib=max(peaks, default=None))
    md, html = write_report([run])  # after the run's own row, so the report's timings end with it
    console.print(summary_markdown(run), markup=False, highlight=False)
    console.print(f"[bold green]report:[/bold green] {html.resolve()}\n        {md.resolve()}")
    return run
