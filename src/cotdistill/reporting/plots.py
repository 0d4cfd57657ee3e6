"""The report's matplotlib figures, each returned as PNG bytes (written to plots/ and embedded).

Figures are built with `matplotlib.figure.Figure`, not pyplot: no global state, no GUI backend,
safe in any process (the report may run inside a training job or a notebook).
"""

from __future__ import annotations

import io
from typing import Any

from matplotlib.figure import Figure

KEPT_COLOUR = "#2e7d32"
LOST_COLOUR = "#c62828"
BAR_COLOUR = "#1565c0"


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def accuracy_plot(evals: list[dict[str, Any]]) -> bytes:
    """Accuracy per evaluation with its 95 % Wilson interval as error bars."""
    labels = [f"{e['name']}\n{e.get('method', '')}" for e in evals]
    acc = [100 * e["accuracy"] for e in evals]
    # max(0, ...): at 0 % or 100 % rounding can put the bound a hair inside the point estimate.
    low = [max(0.0, 100 * (e["accuracy"] - e["ci_low"])) for e in evals]
    high = [max(0.0, 100 * (e["ci_high"] - e["accuracy"])) for e in evals]
    fig = Figure(figsize=(7, 0.7 * len(evals) + 1.2))
    ax = fig.subplots()
    y = list(range(len(evals)))[::-1]
    ax.barh(y, acc, xerr=[low, high], color=BAR_COLOUR, alpha=0.85, capsize=4, ecolor="black")
    for yi, e in zip(y, evals):  # the label right of the interval, where no bar or bar end hides it
        ax.text(100 * e["ci_high"] + 1.5, yi, f"{100 * e['accuracy']:.1f} % (n={e['n']})", va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(0, 122)  # room for the labels right of a 100 % interval
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel("accuracy on held-out questions (%), 95 % CI")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def funnel_plot(verdicts: dict[str, int], samples: int) -> bytes:
    """Where the teacher's CoTs went: all samples, then each verdict (kept in green)."""
    names = ["all samples"] + list(verdicts)
    counts = [samples] + list(verdicts.values())
    colours = ["#757575"] + [KEPT_COLOUR if v == "kept" else LOST_COLOUR for v in verdicts]
    fig = Figure(figsize=(7, 0.38 * len(names) + 1.2))
    ax = fig.subplots()
    y = list(range(len(names)))[::-1]
    ax.barh(y, counts, color=colours)
    for yi, c in zip(y, counts):
        ax.text(c, yi, f" {c} ({100 * c / samples:.0f} %)" if samples else f" {c}", va="center", fontsize=8)
    ax.set_yticks(y, names, fontsize=9)
    ax.set_xlim(0, max(counts + [1]) * 1.2)
    kept = verdicts.get("kept", 0)
    ax.set_title(f"annotation yield: {kept} of {samples} teacher CoTs kept", fontsize=10)
    return _png(fig)


def loss_plot(curves: dict[str, dict[str, list[tuple[float, float]]]]) -> bytes:
    """Training (solid) and held-out (dashed) loss per optimizer step, one colour per student."""
    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    for i, (mode, curve) in enumerate(curves.items()):
        colour = f"C{i}"
        if curve["train"]:
            ax.plot(*zip(*curve["train"]), color=colour, label=f"{mode} train")
        if curve["eval"]:
            ax.plot(*zip(*curve["eval"]), color=colour, linestyle="--", marker="o", label=f"{mode} eval")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (target tokens)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def size_curve_plot(points: dict[str, list[tuple[int, float, float, float]]]) -> bytes:
    """Accuracy (with its 95 % CI) of each student against the number of training questions."""
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for name, pts in sorted(points.items()):
        pts = sorted(pts)
        n = [p[0] for p in pts]
        acc = [100 * p[1] for p in pts]
        err = [[max(0.0, 100 * (p[1] - p[2])) for p in pts], [max(0.0, 100 * (p[3] - p[1])) for p in pts]]
        ax.errorbar(n, acc, yerr=err, marker="o", capsize=4, label=name)
    ax.set_xlabel("training questions")
    ax.set_ylabel("test accuracy (%), 95 % CI")
    top = max(100 * p[3] for pts in points.values() for p in pts)
    ax.set_ylim(0, min(100, max(10, 1.25 * top)))  # low accuracies stay readable
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)
