"""The report: report.md and a self-contained report.html for one run, or a comparison of several.

Everything is read from the run directory as the stages left it (manifest, annotations,
students/*/loss_curve.json, predictions/*), so `report` can run at any time: a stage whose outputs
are missing is shown as "not run". The HTML opens from disk with no network: inline CSS, figures as
base64 data URIs, every piece of model or user text HTML-escaped.

The content is built once as a list of blocks (heading, paragraph, table, image, code) and rendered
twice, to Markdown and to HTML, so the two reports always say the same thing. Model and teacher
names and the config copy are shown through cotdistill.core.secrets, so a teacher URL's password or
query key never reaches a report, even from a run directory written before they were masked there.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotdistill.core.baserates import above_majority, base_rates, majority_correct
from cotdistill.core.errors import UserError
from cotdistill.core.records import Example
from cotdistill.core.evalnames import DEV, STUDENT_FEW_SHOT, TEACHER_FEW_SHOT, EvalName
from cotdistill.core.fileio import read_json_object, write_files_atomic
from cotdistill.core.modes import ANSWER_ONLY, COT_K1, MODES
from cotdistill.core.paths import output_dir
from cotdistill.reporting.plots import accuracy_plot, funnel_plot, loss_plot
from cotdistill.reporting.blocks import (
    Browser,
    Code,
    Heading,
    Image,
    Para,
    Table,
    to_html,
    to_markdown,
)
from cotdistill.core.rundir import RunDir
from cotdistill.core.secrets import mask_spec, redact
from cotdistill.core.tasks import format_question

SAMPLES_SHOWN = 4
# Paper-style order: prompted baselines first, then students fine-tuned on answers, then on CoT.
METHOD_RANK = {"fine-tuned on answers only": 1, "fine-tuned on teacher CoT": 2}
STAGE_ORDER = ["data", "annotate", "train", "evaluate", "report", "run"]


def write_report(runs: list[RunDir], out: Path | None = None, labels: list[str] | None = None,
                 extra: list | None = None) -> tuple[Path, Path]:
    """Write report.md and report.html (default: into the run; several runs: RUNS_PARENT/comparison).
    `labels` name the runs (default: their directory names); `extra` blocks follow the comparison."""
    if not runs:
        raise UserError("give at least one run directory")
    for run in runs:
        if not run.root.is_dir():
            raise UserError(f"{run.root}: run directory not found")
    out = output_dir(out or (runs[0].root if len(runs) == 1 else runs[0].root.parent / "comparison"), "--out", "report folder")
    data = [RunData.load(run) for run in runs]
    for d, label in zip(data, labels or []):
        d.label = label
    title = f"cotdistill report: {data[0].label}" if len(data) == 1 else "cotdistill report: comparison of runs"
    blocks: list = [Heading(1, title), Para(f"Written {time.strftime('%Y-%m-%d %H:%M')} by cotdistill report.")]
    if len(data) > 1:
        blocks += comparison(data)
    blocks += extra or []
    for i, d in enumerate(data):
        blocks += run_section(d, prefix="" if len(data) == 1 else f"{i + 1}-{d.label}-", level=2)
    md, html = out / "report.md", out / "report.html"
    # One set: the plots, report.md and report.html are all replaced, or (a full disk) none is.
    files = {out / "plots" / b.filename: [b.png] for b in blocks if isinstance(b, Image)}
    write_files_atomic({**files, md: [to_markdown(blocks).encode("utf-8")], html: [to_html(title, blocks).encode("utf-8")]})
    return md, html


def summary_markdown(run: RunDir) -> str:
    """The results and timings tables of one run as Markdown: what `run` and `demo` print at the end."""
    d = RunData.load(run)
    return to_markdown([b for b in results(d, "", 2) + timings(d, 2) if not isinstance(b, Image)])


# ---------------------------------------------------------------- reading a run


@dataclass
class RunData:
    run: RunDir
    label: str
    manifest: dict[str, Any]
    evals: list[dict[str, Any]]

    @classmethod
    def load(cls, run: RunDir) -> RunData:
        manifest = run.read_manifest()  # torn or foreign: a UserError saying what to do, not a report of nothing
        return cls(run, run.root.resolve().name, manifest, _evaluations(run, manifest))

    @property
    def stages(self) -> dict[str, Any]:
        return self.manifest.get("stages", {})


def _evaluations(run: RunDir, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every evaluation's summary: predictions/NAME.summary.json, else the manifest's copy."""
    found = {
        stage.split(":", 1)[1]: {**info, "name": stage.split(":", 1)[1]}
        for stage, info in manifest.get("stages", {}).items()
        if stage.startswith("evaluate:") and "accuracy" in info
    }
    for path in sorted((run.root / "predictions").glob("*.summary.json")):
        found[path.name[: -len(".summary.json")]] = run.read_summary(path)
    for e in found.values():
        if "majority_rate" not in e:  # a summary from before base rates were recorded
            rates = base_rates(evaluated_examples(run, e))
            e.update(rates.to_dict() if rates else {"majority_rate": None})
    return sorted(found.values(), key=lambda e: (METHOD_RANK.get(e.get("method", ""), 0), e["name"]))


def evaluated_examples(run: RunDir, e: dict[str, Any]) -> list[Example]:
    """The questions an evaluation scored: the first n of its data file (evaluate's --limit takes the first)."""
    return list(_examples(evaluated_data(run, e), e.get("data_format")).values())[: e["n"]]


def evaluated_data(run: RunDir, e: dict[str, Any]) -> Path:
    """The data file an evaluation scored: as recorded; else, when the run directory was moved or is
    reported from another folder (the recorded path is relative to where evaluate ran), the file
    of the same name under this run's data/."""
    recorded = Path(e.get("data") or run.test_data)
    if recorded.exists() or "data" not in recorded.parts:
        return recorded
    parts = recorded.parts
    inside = run.root.joinpath(*parts[len(parts) - 1 - parts[::-1].index("data"):])
    return inside if inside.exists() else recorded


def _loss_curves(run: RunDir) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """students/<mode>/loss_curve.json: {"train": [{step, loss}], "eval": [{step, loss}]}."""
    curves = {}
    for path in sorted((run.root / "students").glob("*/loss_curve.json")):
        raw = read_json_object(path)  # torn or foreign: no curve, like a run without one
        curve = {k: [(r["step"], r["loss"]) for r in (raw[k] if isinstance(raw.get(k), list) else []) if isinstance(r, dict)
                     and isinstance(r.get("step"), (int, float)) and isinstance(r.get("loss"), (int, float))]
                 for k in ("train", "eval")}
        if curve["train"] or curve["eval"]:
            curves[path.parent.name] = curve
    return curves


def _yield(run: RunDir, stages: dict[str, Any]) -> tuple[dict[str, int], int] | None:
    """Verdict counts of the teacher's samples: the manifest's annotate table, else annotations.jsonl."""
    from cotdistill.core.verdicts import VERDICTS

    table = stages.get("annotate", {}).get("yield")
    if isinstance(table, dict) and "verdicts" in table:
        counts, total = {v: int(c["count"]) for v, c in table["verdicts"].items()}, int(table["samples"])
    else:
        rows = run.read_annotations()
        if not rows:
            return None
        counts, total = dict(Counter(str(r.get("verdict")) for r in rows)), len(rows)
    # The filters' order (kept, wrong, unparsed, ...), not the manifest's alphabetical one.
    order = {v: i for i, v in enumerate(VERDICTS)}
    return dict(sorted(counts.items(), key=lambda kv: order.get(kv[0], len(order)))), total


def _examples(path: Path, format: str | None = None) -> dict[str, Example]:
    """The questions of a data file in any format evaluate reads (a run's normalised jsonl, or the
    GSM8K, SVAMP, ... file given to `evaluate --data`)."""
    from cotdistill.data.load import load_dataset

    try:
        return {e.id: e for e in load_dataset(path, format=format).examples} if path.exists() else {}
    except (UserError, OSError):  # a report must not fail on a damaged data file: its samples are just skipped
        return {}


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def accuracy_cell(e: dict[str, Any]) -> str:
    """One evaluation as `accuracy [95 % CI] (n=N)`, the form comparison tables use."""
    return f"{accuracy_mark(e)} [{pct(e['ci_low'])}–{pct(e['ci_high'])}] (n={e['n']})"


def accuracy_mark(e: dict[str, Any]) -> str:
    """The accuracy, marked `≤ maj.` when its 95 % CI does not clear the set's majority rate."""
    return pct(e["accuracy"]) + (" ≤ maj." if above_majority(e["ci_low"], e.get("majority_rate")) is False else "")


def base_rate_cells(e: dict[str, Any]) -> list[str]:
    """`majority %` (with the answer) and `chance %` cells of one evaluation."""
    if e.get("majority_rate") is None:
        return ["–", "–"]
    chance = e.get("chance_rate")
    return [f"{pct(e['majority_rate'])} ({e['majority_answer']})", pct(chance) if chance is not None else "–"]


def teacher_warning(d: RunData) -> list:
    """One plain sentence when the teacher, asked without the hint, is not above the majority rate:
    then its hinted CoTs mostly explain answers it could not have found, and the student cannot learn
    the task from them (the gold filter removes little on label sets: any label can be rationalised)."""
    evals = {e["name"]: e for e in d.evals}
    teacher = evals.get(str(TEACHER_FEW_SHOT)) or evals.get(str(TEACHER_FEW_SHOT.on(DEV)))
    if teacher is None or above_majority(teacher["ci_low"], teacher.get("majority_rate")) is not False:
        return []
    found = _yield(d.run, d.stages)
    kept = f" while it kept {found[0].get('kept', 0)} of its {found[1]} hinted CoTs" if found else ""
    split = EvalName.parse(teacher["name"]).test_set
    return [Para(f"Warning: the teacher without the hint scores {accuracy_cell(teacher)} on the {split} questions, not above "
                 f"always answering {teacher['majority_answer']!r} ({pct(teacher['majority_rate'])} %){kept}. Its CoTs are "
                 "likely rationalisations of the given answers, and a student cannot learn the task from them: "
                 "use a stronger teacher, or check the task.")]


# ---------------------------------------------------------------- sections


def comparison(data: list[RunData]) -> list:
    """One row per evaluation name, one column per run: accuracy [95 % CI] (n)."""
    names: list[str] = []
    for d in data:
        names += [e["name"] for e in d.evals if e["name"] not in names]
    blocks: list = [Heading(2, "Comparison across runs")]
    if not names:
        return blocks + [Para("evaluate: not run in any of these runs.")]
    rows, rates = [], False
    for name in names:
        found = [next((e for e in d.evals if e["name"] == name), None) for d in data]
        rated = next((e for e in found if e and e.get("majority_rate") is not None), None)
        rates = rates or rated is not None
        rows.append([name] + [accuracy_cell(e) if e else "not run" for e in found] + [base_rate_cells(rated or {})])
    header = ["evaluation"] + [d.label for d in data]
    if rates:
        rows = [row[:-1] + row[-1] for row in rows]
        header += ["majority %", "chance %"]
    else:
        rows = [row[:-1] for row in rows]
    return blocks + [Table(header, rows),
                     Para("Accuracy % [95 % Wilson confidence interval] (number of held-out questions)."
                          + (" Majority and chance: what always giving the most common gold answer, and guessing, score "
                             "on the first run's questions; ≤ maj.: the CI reaches the majority rate." if rates else ""))]


def run_section(d: RunData, prefix: str, level: int) -> list:
    blocks: list = [Heading(level, f"Run {d.label}"), Para(f"Directory: {d.run.root}")]
    blocks += results(d, prefix, level + 1)
    blocks += data_section(d, level + 1)
    blocks += annotation(d, prefix, level + 1)
    blocks += training(d, prefix, level + 1)
    blocks += samples(d, level + 1)
    blocks += timings(d, level + 1)
    blocks.append(Heading(level + 1, "Config"))
    config = d.run.config.read_text(encoding="utf-8") if d.run.config.exists() else None
    blocks.append(Code(redact(config)) if config else Para("No config.yaml (stages were run one by one)."))
    env = d.manifest.get("environment", {})
    if env:
        blocks += [Heading(level + 1, "Environment"), Table(["", "version"], [[k, str(v)] for k, v in env.items()])]
    return blocks


def results(d: RunData, prefix: str, level: int) -> list:
    blocks: list = [Heading(level, "Results")]
    if not d.evals:
        return blocks + [Para("evaluate: not run.")]
    rates = any(e.get("majority_rate") is not None for e in d.evals)
    rows = [
        [test_set(e), e["name"], mask_spec(str(e.get("model", ""))), str(e.get("method", "")), accuracy_mark(e),
         f"{pct(e['ci_low'])}–{pct(e['ci_high'])}", str(e["n"])]
        + (base_rate_cells(e) if rates else [])
        + [str(e.get("unparsed", "")), str(e.get("extraction", "")), f"{e['tokens_per_s']:.1f}" if e.get("tokens_per_s") else "–"]
        for e in sorted(d.evals, key=lambda e: test_set(e) != "test")  # the run's own test set first (stable)
    ]
    blocks.append(Table(["test set", "evaluation", "model", "method", "accuracy %", "95 % CI", "n"]
                        + (["majority %", "chance %"] if rates else [])
                        + ["no answer", "answers read", "tokens/s"], rows))
    blocks.append(Para("95 % CI: Wilson score interval. Answers read strictly: only a final 'The answer is X.' sentence "
                       "counts; leniently: otherwise the last number or yes/no (prompted baselines)."
                       + (" Majority: the accuracy of always giving the set's most common gold answer (named); chance: "
                          "guessing uniformly among the options. An accuracy marked ≤ maj. has a 95 % CI that reaches "
                          "the majority rate: it is not shown to be above it." if rates else "")))
    blocks += teacher_warning(d)
    blocks += paired_table(d)
    blocks += protocol_card(d)
    blocks.append(Image(f"{prefix}accuracy.png", accuracy_plot(d.evals), "accuracy per evaluation with 95 % CI"))
    return blocks


BASELINES = (EvalName.student(ANSWER_ONLY), STUDENT_FEW_SHOT, EvalName.student(COT_K1), TEACHER_FEW_SHOT)


def paired_table(d: RunData) -> list:
    """Each fine-tuned CoT student against each baseline on the same questions (exact McNemar)."""
    from cotdistill.reporting.paired import compare

    correct = {e["name"]: {r["example_id"]: bool(r.get("correct")) for r in d.run.read_predictions(e["name"])}
               for e in d.evals}
    rows = []
    for e in d.evals:
        name = EvalName.parse(e["name"])
        if name.student_mode not in MODES or MODES[name.student_mode].baseline:
            continue
        for baseline in BASELINES:
            other = str(baseline.on(name.split))
            if other not in correct or other == e["name"] or not correct[other]:
                continue
            p = compare(correct[e["name"]], correct[other])
            rows.append([test_set(e), e["name"], other, str(p.n), str(p.only_first), str(p.only_second), f"{p.p_value:.2g}"])
        if e.get("majority_rate") is not None and correct[e["name"]]:
            constant = majority_correct(evaluated_examples(d.run, e), e["majority_answer"])
            p = compare(correct[e["name"]], constant)
            rows.append([test_set(e), e["name"], f"always {e['majority_answer']!r}", str(p.n), str(p.only_first),
                         str(p.only_second), f"{p.p_value:.2g}"])
    if not rows:
        return []
    return [Table(["test set", "model", "against", "paired n", "only model right", "only other right", "McNemar p"], rows),
            Para("Paired comparison on the questions both were asked: the exact McNemar test on the questions where "
                 "exactly one of the two is right (two-sided p).")]


def engine_words(e: dict[str, Any]) -> str:
    """What ran the model: "llama.cpp, f16 GGUF", "transformers, bfloat16", a backend's kind, "–" if unrecorded."""
    engine = e.get("engine")
    if engine == "llamacpp":
        return f"llama.cpp, {e['gguf_type']} GGUF" if e.get("gguf_type") else "llama.cpp"
    if engine == "torch":
        return f"transformers, {e['dtype']}" if e.get("dtype") else "transformers"
    return engine or "–"


def protocol_card(d: RunData) -> list:
    """How each figure was measured, so it can be compared with other harnesses' numbers: shots,
    prompt format, answer reading, decoding, token limit, questions, and the engine that ran it."""
    rows = []
    for e in d.evals:
        decoding = "greedy" if not e.get("temperature") else f"T={e['temperature']}, {e.get('samples', 1)} samples, majority vote"
        reading = ("strict: only a final 'The answer is X.' counts" if e.get("extraction") == "strict"
                   else "lenient: 'The answer is X.', else the last number / yes-no / option")
        rows.append([e["name"], str(e.get("few_shot", "–")), e.get("prompt") or "–", reading, decoding,
                     str(e.get("max_new_tokens") or "–"), f"{e['n']} of {Path(e.get('data', d.run.test_data)).name}",
                     engine_words(e)])
    return [Table(["evaluation", "shots", "prompt", "answer read", "decoding", "max new tokens", "questions", "engine"], rows),
            Para("Evaluation protocol: numbers from harnesses that differ in any column are not comparable.")]


def test_set(e: dict[str, Any]) -> str:
    """Which test set an evaluation used: 'test' (the run's own), 'dev' or an extra one (NAME.TESTSET)."""
    return EvalName.parse(e["name"]).test_set


def data_section(d: RunData, level: int, shown: int = 20) -> list:
    """Split sizes, what the data stage removed or clamped, and the decontaminated questions."""
    info = d.stages.get("data")
    if not info:
        return []
    sizes = [f"{info.get(k, 0)} {label}" for k, label in (("n_train", "train"), ("n_dev", "dev"), ("n_test", "test"))]
    sizes += [f"{n} {name}" for name, n in (info.get("extra_tests") or {}).items()]
    blocks: list = [Heading(level, "Data"), Para("Questions: " + ", ".join(sizes) + ".")]
    blocks += [Para(note) for note in info.get("notes", [])]
    dropped = d.run.read_decontamination()
    if dropped:
        rows = [[r.get("split", ""), r.get("held_out", ""), r.get("question", ""), r.get("matched_question", ""),
                 r.get("shared", "")] for r in dropped[:shown]]
        blocks.append(Table(["dropped from", "held-out set", "question", "matched held-out question", "shared words"], rows))
        if len(dropped) > shown:
            blocks.append(Para(f"… {len(dropped) - shown} more in {d.run.decontamination}."))
    return blocks


def annotation(d: RunData, prefix: str, level: int) -> list:
    blocks: list = [Heading(level, "Annotation yield")]
    found = _yield(d.run, d.stages)
    if found is None:
        return blocks + [Para("annotate: not run.")]
    verdicts, total = found
    info = d.stages.get("annotate", {})
    rows = [[v, str(c), f"{100 * c / total:.1f}" if total else "–"] for v, c in verdicts.items()]
    blocks.append(Table(["verdict", "teacher samples", "%"], rows))
    facts = [f"teacher: {mask_spec(str(info['teacher']))}" if info.get("teacher") else None,
             f"questions with a kept CoT: {info['yield']['questions_with_kept']} of {info['yield']['questions']}"
             if isinstance(info.get("yield"), dict) and "questions" in info["yield"] else None]
    if any(facts):
        blocks.append(Para("; ".join(f for f in facts if f) + "."))
    check = info.get("yield", {}).get("hint_check") if isinstance(info.get("yield"), dict) else None
    if check:
        from cotdistill.core.verdicts import hint_check_line

        blocks.append(Para(hint_check_line(check) + "."))
    blocks += cost_table(info)
    blocks.append(Image(f"{prefix}yield.png", funnel_plot(verdicts, total), "annotation yield funnel"))
    return blocks + annotations_browser(d, level + 1)


def cost_table(info: dict[str, Any]) -> list:
    """The teacher's cost as estimated from its first batch, beside what it actually took."""
    est = info.get("estimate")
    if not isinstance(est, dict):
        return []
    actual = [info.get("teacher_calls"), (info.get("prompt_tokens") or 0) + (info.get("completion_tokens") or 0),
              (info.get("teacher_seconds") or 0) / 60, info.get("cost_usd") or 0.0]
    estimate = [est["requests"], est["prompt_tokens"] + est["completion_tokens"], est["seconds"] / 60, est["usd"]]
    rows = [[name, f"{e:,.{digits}f}", f"{a:,.{digits}f}" if a is not None else "–",
             f"{a / e:.2f}" if a is not None and e else "–"]
            for name, e, a, digits in zip(("requests", "tokens", "minutes", "USD"), estimate, actual, (0, 0, 1, 2))]
    return [Table(["teacher cost", f"estimated (first {est['measured_on']} requests)", "actual", "actual / estimate"], rows)]


def annotations_browser(d: RunData, level: int) -> list:
    """Every teacher sample with its verdict, the gold answer and why it was dropped: the data the
    method lives on, to read before trusting any accuracy (searchable and filterable in HTML)."""
    annotations = d.run.read_annotations()
    if not annotations:
        return []
    train = _examples(d.run.train_data)
    rows = []
    for a in annotations:
        e = train.get(a.get("example_id"))
        rows.append([str(a.get("verdict")), format_question(e.question, e.choices) if e else str(a.get("example_id")),
                     e.answer if e else "", a.get("text", ""), str(a.get("predicted")), str(a.get("reason") or ""),
                     f"{a.get('example_id')} #{a.get('sample', 0)}"])
    return [Heading(level, "Every teacher sample"),
            Browser(["verdict", "question", "gold", "teacher CoT", "teacher's answer", "why dropped", "id"], rows, 0,
                    f"{len(rows)} teacher samples with their verdicts: browse, search and filter them in report.html "
                    f"(open it with #filter=wrong to see the wrong ones), or read {d.run.annotations}.")]


def training(d: RunData, prefix: str, level: int) -> list:
    blocks: list = [Heading(level, "Training")]
    students = sorted(p for p in (d.run.root / "students").glob("*") if p.is_dir())
    curves = _loss_curves(d.run)
    if not students and not curves:
        return blocks + [Para("train: not run.")]
    rows = []
    for s in students:
        m = read_json_object(s / "train_metrics.json")
        rows.append([s.name, loss_label(m), str(m.get("steps", "–")), num(m.get("first_train_loss")),
                     num(m.get("final_train_loss")), num(m.get("final_eval_loss")), num(m.get("tokens_per_s"), 0),
                     num(m.get("wall_s"), 0)])
    if rows:
        blocks.append(Table(["student", "loss", "steps", "first train loss", "final train loss", "final eval loss (CE)",
                             "tokens/s", "seconds"], rows))
    if curves:
        blocks.append(Image(f"{prefix}loss.png", loss_plot(curves), "training loss curves"))
    else:
        blocks.append(Para("No loss_curve.json in students/*/."))
    return blocks


def loss_label(metrics: dict[str, Any]) -> str:
    """What a student was trained with, from its train_metrics.json: the cross-entropy on the
    teacher's tokens, or that mixed with token-level distillation from its probabilities."""
    kind = metrics.get("distill") or "off"
    if kind == "off":
        return "cross-entropy"
    w = metrics.get("distill_weight")
    written = ", recorded as the teacher wrote" if metrics.get("distill_context") == "written" else ""
    return (f"{num(1 - w, 2) if isinstance(w, (int, float)) else '?'} CE + {num(w, 2)} {kind} KD "
            f"(T {metrics.get('distill_temperature')}, {metrics.get('distill_tokens')} teacher tokens per position{written})")


def num(x: Any, digits: int = 3) -> str:
    """A metric to `digits` places, or a dash when it is missing."""
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) else "–"


def samples(d: RunData, level: int) -> list:
    """Held-out questions with every model's answer side by side, then the teacher's training CoTs."""
    blocks: list = [Heading(level, "Samples: held-out questions")]
    # The first evaluation's questions (the test set), answered by every model scored on that file: a
    # dev or extra test set's evaluations ask other questions.
    first = evaluated_data(d.run, d.evals[0]) if d.evals else None
    shown = [e for e in d.evals if evaluated_data(d.run, e) == first]
    preds = {e["name"]: {r["example_id"]: r for r in d.run.read_predictions(e["name"])} for e in shown}
    test = _examples(first, d.evals[0].get("data_format")) if first else {}
    ids = [i for i in test if all(i in p for p in preds.values())]
    # Questions where the models disagree show the method's effect: they come first.
    ids.sort(key=lambda i: len({p[i].get("correct") for p in preds.values()}) == 1)
    if not ids:
        blocks.append(Para("evaluate: not run." if not d.evals else "No predictions to show."))
    for i in ids[:SAMPLES_SHOWN]:
        e = test[i]
        blocks.append(Para(f"Question {i}: {format_question(e.question, e.choices)}"))
        rows = [[name, p[i].get("output", ""), str(p[i].get("predicted")), "✓" if p[i].get("correct") else "✗"] for name, p in preds.items()]
        blocks.append(Table(["model", f"output (gold: {e.answer})", "predicted", "verdict"], rows))
    blocks.append(Heading(level, "Samples: teacher CoTs for training questions"))
    annotations = d.run.read_annotations()
    if not annotations:
        return blocks + [Para("annotate: not run.")]
    train = _examples(d.run.train_data)
    rows, seen = [], set()
    for a in annotations:  # one sample of each verdict: what each filter caught
        if a.get("verdict") in seen:
            continue
        seen.add(a.get("verdict"))
        e = train.get(a.get("example_id"))
        rows.append([format_question(e.question, e.choices) if e else str(a.get("example_id")), e.answer if e else "", a.get("text", ""),
                     str(a.get("predicted")), ("✓ " if a.get("verdict") == "kept" else "✗ ") + str(a.get("verdict"))])
    return blocks + [Table(["question", "gold", "teacher CoT", "teacher's answer", "verdict"], rows)]


def _stage_rank(stage: str) -> int:
    """Pipeline order (data, annotate, train, evaluate:*, run) instead of the manifest's alphabetical one."""
    kind = stage.split(":")[0]
    return STAGE_ORDER.index(kind) if kind in STAGE_ORDER else len(STAGE_ORDER)


def timings(d: RunData, level: int) -> list:
    blocks: list = [Heading(level, "Timings")]
    rows = []
    # pipeline order, then the order the stages finished in (train:cot ran before train:answer-only)
    for stage, info in sorted(d.stages.items(), key=lambda kv: (_stage_rank(kv[0]), str(kv[1].get("updated", "")))):
        secs = next((info[k] for k in ("seconds", "wall_s", "train_s") if isinstance(info.get(k), (int, float))), None)
        rows.append([stage, str(info.get("status", "")), num(secs, 1), num(info.get("peak_rss_gib"), 2),
                     str(info.get("updated", ""))])
    if not rows:
        return blocks + [Para("No manifest.json: no stage has run.")]
    return blocks + [Table(["stage", "status", "seconds", "peak memory (GiB)", "updated"], rows)]
