"""The study's comparison report (`cotdistill study`): every variant side by side (accuracy ± 95 % CI
per evaluation), the variant each student would ship with when chosen on the dev split (with its
test figure, which played no part in the choice) and, when variants differ in training set size,
a plot of accuracy against it. study.py runs the variants; this module only reads what they wrote.
"""

from __future__ import annotations

from pathlib import Path

from cotdistill.core.evalnames import DEV, EvalName
from cotdistill.reporting.plots import size_curve_plot
from cotdistill.reporting.blocks import Heading, Image, Para, Table
from cotdistill.reporting.report import RunData, accuracy_cell, pct, write_report
from cotdistill.core.rundir import RunDir


def write_study_report(runs: list[RunDir], names: list[str], out: Path) -> tuple[Path, Path]:
    """report.md and report.html in `out`, comparing `runs` (the variants `names`, in order)."""
    return write_report(runs, out, labels=names, extra=dev_choice(runs, names) + size_plot(runs, names))


def size_plot(runs: list[RunDir], names: list[str]) -> list:
    """Accuracy of each fine-tuned student against the number of training questions, when the
    variants train on different numbers of them (the paper's data-size figure)."""
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
