"""The report on a small real run directory: tables, figures, samples, escaping, no network."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cotdistill.annotation.annotate import yield_table
from cotdistill.evaluation.evaluate import wilson_interval
from cotdistill.core.records import Example, write_examples, write_jsonl
from cotdistill.reporting.report import write_report
from cotdistill.core.rundir import RunDir
from cotdistill.training.train import loss_curve

EVIL = "<script>alert('x')</script> | pipe"


def make_run(root: Path, cot_correct: int = 6, with_answer_only: bool = True) -> RunDir:
    """A run directory with every stage's files in the formats the stages write."""
    run = RunDir(root)
    test = [Example(f"t{i}", f"What is {i} plus {i}?", str(2 * i), "number", "tiny") for i in range(10)]
    train = [Example(f"q{i}", f"Tom has {i} apples and buys {i}. How many?", str(2 * i), "number", "tiny") for i in range(4)]
    write_examples(run.test_data, test)
    write_examples(run.train_data, train)
    run.config.write_text("name: tiny\nstudent:\n  model: embedded:gemma-3-270m\n", encoding="utf-8")
    run.record_stage("data", status="done", seconds=0.5, n_train=4, n_test=10)

    verdicts = ["kept", "wrong", "leak", "kept"]
    texts = [f"{i} + {i} = {2 * i}. The answer is {2 * i}." for i in range(4)]
    texts[1], texts[2] = "1 + 1 = 3. The answer is 3.", f"As given by the hint {EVIL}. The answer is 4."
    annotations = [
        {"example_id": f"q{i}", "sample": 0, "prompt_hash": "h", "text": texts[i], "predicted": "3" if i == 1 else str(2 * i),
         "verdict": v, "usage": {"completion_tokens": 12}}
        for i, v in enumerate(verdicts)
    ]
    write_jsonl(run.annotations, annotations)
    run.record_stage("annotate", status="done", seconds=42.0, teacher="llamacpp:qwen", teacher_calls=4, teacher_seconds=36.0,
                     prompt_tokens=800, completion_tokens=48, cost_usd=0.0,
                     estimate={"requests": 4, "cached": 0, "prompt_tokens": 760, "completion_tokens": 40, "seconds": 30.0,
                               "usd": 0.0, "measured_on": 2},
                     **{"yield": yield_table(annotations, 4)})

    for mode, losses in (("cot", [2.0, 1.2, 0.7]), ("answer-only", [1.5, 0.9, 0.8])):
        student = run.student(mode)
        student.mkdir(parents=True)
        (student / "config.json").write_text("{}")
        history = [{"step": 10 * (k + 1), "loss": v, "learning_rate": 1e-4} for k, v in enumerate(losses)]
        history.append({"step": 30, "eval_loss": losses[-1] + 0.1})
        (student / "loss_curve.json").write_text(json.dumps(loss_curve(history)))
        (student / "train_metrics.json").write_text(json.dumps({"steps": 30, "final_train_loss": losses[-1], "wall_s": 60.0}))
        run.record_stage(f"train:{mode}", status="done", seconds=60.0)

    evals = [("cot", "fine-tuned on teacher CoT", cot_correct)]
    if with_answer_only:
        evals.append(("answer-only", "fine-tuned on answers only", 2))
    for name, method, correct in evals:
        rows = []
        for k, e in enumerate(test):
            ok = k < correct
            out = f"{k} + {k} = {e.answer if ok else 0}. The answer is {e.answer if ok else 0}."
            rows.append({"example_id": e.id, "output": out + (f" {EVIL}" if k == 9 else ""), "predicted": e.answer if ok else "0",
                         "gold": e.answer, "correct": ok, "tokens": 14, "finish_reason": "stop"})
        write_jsonl(run.predictions(name), rows)
        low, high = wilson_interval(correct, 10)
        summary = {"name": name, "model": "embedded:gemma-3-270m", "spec": f"runs/x/students/{name}", "method": method,
                   "n": 10, "correct": correct, "accuracy": correct / 10, "ci_low": low, "ci_high": high, "unparsed": 0,
                   "truncated": 0, "tokens_generated": 140, "tokens_per_s": 55.5, "seconds": 3.0, "few_shot": 0,
                   "samples": 1, "temperature": 0.0, "extraction": "strict", "data": str(run.test_data),
                   "max_new_tokens": 64, "prompt": "the bare question",
                   # one summary says what ran it, the other is as summaries were before engines were recorded
                   **({"engine": "llamacpp", "gguf_type": "f16"} if name == "cot" else {})}
        run.predictions(name).with_suffix(".summary.json").write_text(json.dumps(summary))
        run.record_stage(f"evaluate:{name}", status="done", **summary)
    return run


@pytest.fixture
def run(tmp_path) -> RunDir:
    return make_run(tmp_path / "tiny")


def test_the_results_table_shows_accuracy_confidence_interval_and_n(run):
    md, html = write_report([run])
    text = md.read_text()
    low, high = wilson_interval(6, 10)
    assert f"| cot | embedded:gemma-3-270m | fine-tuned on teacher CoT | 60.0 | {100 * low:.1f}–{100 * high:.1f} | 10 |" in text
    assert "| answer-only | embedded:gemma-3-270m | fine-tuned on answers only | 20.0 |" in text
    assert text.index("| answer-only |") < text.index("| cot |")  # paper order: baselines before CoT
    assert "60.0" in html.read_text() and md.parent == run.root


def test_the_evaluation_protocol_is_stated_per_evaluation(run):
    text = write_report([run])[0].read_text()
    assert "| evaluation | shots | prompt | answer read | decoding | max new tokens | questions | engine |" in text
    assert ("| cot | 0 | the bare question | strict: only a final 'The answer is X.' counts | greedy | 64 | 10 of test.jsonl "
            "| llama.cpp, f16 GGUF |") in text
    assert "| answer-only | 0 | the bare question |" in text and "| 10 of test.jsonl | – |" in text


def test_the_html_is_self_contained_with_figures_as_data_uris(run):
    _, html = write_report([run])
    page = html.read_text()
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert {alt for alt, _ in images} == {"accuracy per evaluation with 95 % CI", "annotation yield funnel", "training loss curves"}
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)|url\(|@import|<link|<script[^>]""", page, re.IGNORECASE)
    assert page.count("<script>") == 1  # one inline script: the annotation browser's filter
    for name in ("accuracy.png", "yield.png", "loss.png"):
        assert (run.root / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_text_is_escaped_in_html_and_markdown(run):
    md, html = write_report([run])
    page = html.read_text()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page and "<script>alert" not in page
    text = md.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text and "\\| pipe" in text


def test_samples_put_each_models_answer_side_by_side_with_the_verdict(run):
    text = write_report([run])[0].read_text()
    # t2..t5: the CoT student is right, the answer-only student wrong: these are shown first.
    assert "Question t2: What is 2 plus 2?" in text
    assert "| cot | 2 + 2 = 4. The answer is 4. | 4 | ✓ |" in text
    assert "| answer-only | 2 + 2 = 0. The answer is 0. | 0 | ✗ |" in text
    # the teacher's training CoTs: one per verdict
    assert "| ✓ kept |" in text and "| ✗ wrong |" in text and "| ✗ leak |" in text


def test_samples_are_shown_when_a_dev_set_was_scored_too(run):
    dev = [Example(f"d{i}", f"What is {i} times {i}?", str(i * i), "number", "tiny") for i in range(3)]
    write_examples(run.dev_data, dev)
    rows = [{"example_id": e.id, "output": f"The answer is {e.answer}.", "predicted": e.answer, "gold": e.answer,
             "correct": True, "tokens": 5, "finish_reason": "stop"} for e in dev]
    write_jsonl(run.predictions("cot.dev"), rows)
    summary = {"name": "cot.dev", "model": "embedded:gemma-3-270m", "method": "fine-tuned on teacher CoT", "n": 3,
               "correct": 3, "accuracy": 1.0, "ci_low": 0.44, "ci_high": 1.0, "data": str(run.dev_data), "few_shot": 0}
    run.predictions("cot.dev").with_suffix(".summary.json").write_text(json.dumps(summary))
    run.record_stage("evaluate:cot.dev", status="done", **summary)
    text = write_report([run])[0].read_text()
    held_out = text[text.index("Samples: held-out questions"):text.index("Samples: teacher CoTs")]
    assert "Question t2: What is 2 plus 2?" in held_out and "| cot | 2 + 2 = 4. The answer is 4. | 4 | ✓ |" in held_out
    assert "cot.dev" not in held_out and "Question d" not in held_out


def test_the_yield_timings_training_and_config_are_reported(run):
    text = write_report([run])[0].read_text()
    assert "| kept | 2 | 50.0 |" in text and "| leak | 1 | 25.0 |" in text
    assert "teacher: llamacpp:qwen; questions with a kept CoT: 2 of 4." in text
    assert "| minutes | 0.5 | 0.6 | 1.20 |" in text and "| tokens | 800 | 848 | 1.06 |" in text
    assert "| cot | cross-entropy | 30 | – | 0.700 |" in text
    stages = re.findall(r"^\| (data|annotate|train:cot|evaluate:cot) \| done \| ([\d.]+) \|", text, re.MULTILINE)
    assert [s for s, _ in stages] == ["data", "annotate", "train:cot", "evaluate:cot"]
    assert dict(stages)["annotate"] == "42.0"
    assert "model: embedded:gemma-3-270m" in text


def test_a_run_with_missing_stages_says_what_was_not_run(tmp_path):
    run = RunDir(tmp_path / "fresh")
    write_examples(run.test_data, [Example("t0", "What is 1 plus 1?", "2", "number", "tiny")])
    md, html = write_report([run])
    text = md.read_text()
    for stage in ("evaluate", "annotate", "train"):
        assert f"{stage}: not run." in text
    assert "No manifest.json" in text and "<img" not in html.read_text()


def test_several_runs_are_compared_in_one_table(tmp_path):
    a = make_run(tmp_path / "runs" / "a", cot_correct=6)
    b = make_run(tmp_path / "runs" / "b", cot_correct=10, with_answer_only=False)
    md, _ = write_report([a, b])
    assert md.parent == tmp_path / "runs" / "comparison"
    text = md.read_text()
    assert "| evaluation | a | b |" in text
    assert "| cot | 60.0 [31.3–83.2] (n=10) | 100.0 [72.2–100.0] (n=10) |" in text
    assert "| answer-only | 20.0 [5.7–51.0] (n=10) | not run |" in text
    assert (md.parent / "plots" / "1-a-accuracy.png").exists() and (md.parent / "plots" / "2-b-accuracy.png").exists()


def test_the_cli_writes_the_report_and_rejects_a_missing_run_in_one_line(run, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "cotdistill.cli", "report", str(run.root), "--out", str(tmp_path / "out")],
                        check=False, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and (tmp_path / "out" / "report.html").exists(), ok.stderr
    bad = subprocess.run([sys.executable, "-m", "cotdistill.cli", "report", str(tmp_path / "nope")],
                         check=False, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip() == f"error: {tmp_path / 'nope'}: run directory not found"
