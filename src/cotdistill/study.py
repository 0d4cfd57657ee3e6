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
student and teacher) are scored once there, not again per variant; `--only NAME` runs the base and
the named variants alone. The study ends with one report comparing the variants (reporting/study.py).
"""

from __future__ import annotations

from pathlib import Path

from cotdistill.core.progress import readable_console
from cotdistill.core.config import RunConfig, load_config
from cotdistill.core.errors import UserError

console = readable_console(stderr=True)


def variant_configs(path: str | Path, overrides: list[str] | None = None,
                    only: list[str] | None = None) -> list[tuple[str, RunConfig]]:
    """(name, config) of the base run and each variant, in order; `only`: the base and these variants."""
    base = load_config(path, overrides)
    if not base.study.variants:
        raise UserError(f"{path}: study.variants is empty; list the variants to compare (see `cotdistill study --help`)")
    names = [v.name for v in base.study.variants]
    unknown = [name for name in only or [] if name not in names]
    if unknown:
        raise UserError(f"{path}: no study variant named {', '.join(unknown)}; its variants: {', '.join(names)}")
    root = base.run_path
    out = [("base", base)]
    for v in base.study.variants:
        if only and v.name not in only:
            continue
        sets = [*(overrides or []), f"teacher.cache={root / 'cache.sqlite'}", f"run_dir={root / 'variants' / v.name}",
                "evaluate.teacher=false", "evaluate.few_shot_student=false", *v.set]
        out.append((v.name, load_config(path, sets)))
    return out


def run_study(path: str | Path, overrides: list[str] | None = None, only: list[str] | None = None) -> Path:
    from cotdistill.pipeline import run_pipeline
    from cotdistill.reporting.study import write_study_report

    variants = variant_configs(path, overrides, only)
    runs = []
    for name, config in variants:
        console.rule(f"[bold]study variant: {name}")
        runs.append(run_pipeline(config))
    md, html = write_study_report(runs, [name for name, _ in variants], runs[0].root / "study")
    console.print(f"[bold green]study report:[/bold green] {html.resolve()}\n              {md.resolve()}")
    return html
