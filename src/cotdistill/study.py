"""`cotdistill study CONFIG.yaml`: the paper's ablations as variants of one run.

    study:
      variants:
        - {name: quarter, set: [data.n_train=100]}
        - {name: one-sample, set: [teacher.samples=1]}
        - {name: answer-filter-only, set: [teacher.filters.leak=false, teacher.filters.underived=false,
                                           teacher.filters.steps=false]}

Each variant is the config with its `set` overrides, run in RUN_DIR/variants/NAME. All variants
share the base run's teacher cache, and keep its seed (so its data split: a smaller `n_train` is a
subset of the same questions), so a variant only pays the teacher for questions or prompts no run
has asked yet. The base config itself runs first as variant `base`; its baselines (the prompted
student and teacher) are scored once there, not again per variant. The study ends with one report
comparing every variant (accuracy ± 95 % CI per evaluation), the variant each student would ship
with when chosen on the dev split (with its test figure, which played no part in the choice) and,
when variants differ in training set size, a plot of accuracy against it.
"""

from __future__ import annotations

from pathlib import Path

from cotdistill.progress import readable_console
from cotdistill.config import RunConfig, load_config
from cotdistill.errors import UserError
from cotdistill.evalnames import DEV, EvalName
from cotdistill.rundir import RunDir

console = readable_console(stderr=True)


def variant_configs(path: str | Path, overrides: list[str] | None = None) -> list[tuple[str, RunConfig]]:
    """(name, config) of the base run and each variant, in order."""
    base = load_config(path, overrides)
    if not base.study.variants:
        raise UserError(f"{path}: study.variants is empty; list the variants to compare (see `cotdistill study --help`)")
    root = base.run_path
    out = [("base", base)]
    for v in base.study.variants:
        sets = [*(overrides or []), f"teacher.cache={root / 'cache.sqlite'}", f"run_dir={root / 'variants' / v.name}",
                "evaluate.teacher=false", "evaluate.few_shot_student=false", *v.set]
        out.append((v.name, load_config(path, sets)))
    return out


def run_study(path: str | Path, overrides: list[str] | None = None) -> Path:
    from cotdistill.pipeline import run_pipeline
    from cotdistill.reporting.report import write_report

    variants = variant_configs(path, overrides)
    runs = []
    for name, config in variants:
        console.rule(f"[bold]study variant: {name}")
        runs.append(run_pipeline(config))
    base = runs[0]
    md, html = write_report(runs, base.root / "study", labels=[name for name, _ in variants],
                            extra=dev_choice(runs, [name for name, _ in variants]) + size_plot(runs, [name for name, _ in variants]))
    console.print(f"[bold green]study report:[/bold green] {html.resolve()}\n              {md.resolve()}")
    return html


def size_plot(runs: list[RunDir], names: list[str]) -> list:
    """Accuracy of each fine-tuned student against the number of training questions, when the
    variants train on different numbers of them (the paper's data-size figure)."""
    from cotdistill.reporting.plots import size_curve_plot
    from cotdistill.reporting.report import Heading, Image, Para, RunData

    points: dict[str, list[tuple[int, float, float, float]]] = {}
    for run in runs:
        d = RunData.load(run)
        n_train = d.stages.get("data", {}).get("n_train")
        if n_train is None:
            continue
        for e in d.evals:
            name = EvalName.parse(e["name"])
            if name.student_mode is not None and name.split is None:
                points.setdefault(e["name"], []).append((int(n_train), e["accuracy"], e["ci_low"], e["ci_high"]))
    sizes = {n for pts in points.values() for n, *_ in pts}
    if len(sizes) < 2:
        return []
    return [Heading(2, "Accuracy against training-set size"),
            Image("accuracy-vs-size.png", size_curve_plot(points), "accuracy of each student against training questions"),
            Para("Each point is one variant's test accuracy with its 95 % CI; variants differ in data.n_train "
                 "(the same seed: smaller sets are subsets of the larger ones).")]



def dev_choice(runs: list[RunDir], names: list[str]) -> list:
    """For each fine-tuned student, the variant with the best dev accuracy and that variant's test
    accuracy: settings chosen on dev, reported on test (ties go to the earlier variant)."""
    from cotdistill.reporting.report import Heading, Para, RunData, Table, accuracy_cell, pct

    best: dict[str, tuple[float, str, dict, dict | None]] = {}
    for run, name in zip(runs, names):
        evals = {e["name"]: e for e in RunData.load(run).evals}
        for dev_name, dev in evals.items():
            parsed = EvalName.parse(dev_name)
            student = str(parsed.on(None))
            if parsed.split != DEV or parsed.student_mode is None or (student in best and best[student][0] >= dev["accuracy"]):
                continue
            best[student] = (dev["accuracy"], name, dev, evals.get(student))
    if not best:
        return []
    rows = [[student, name, f"{pct(dev['accuracy'])} (n={dev['n']})",
             accuracy_cell(test) if test else "–"]
            for student, (_, name, dev, test) in best.items()]
    return [Heading(2, "Chosen on dev"),
            Table(["student", "variant chosen", "dev accuracy %", "its test accuracy % [95 % CI]"], rows),
            Para("Each student's variant is the one with the highest accuracy on the dev split; the test figure "
                 "beside it is what that choice scores on questions no choice looked at.")]
