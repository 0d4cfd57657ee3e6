"""Base rates: beside every accuracy on labels, what always giving the most common answer and
guessing score, so that a number that means nothing is seen to mean nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_report import make_run
from tiny_lm import build_tiny_causal

from cotdistill.core.baserates import BaseRates, above_majority, base_rates, majority_correct
from cotdistill.core.records import Example, write_examples, write_jsonl
from cotdistill.evaluation.evaluate import wilson_interval
from cotdistill.reporting.cards import model_card
from cotdistill.reporting.report import write_report
from cotdistill.core.rundir import RunDir


def yes_no(answers: str) -> list[Example]:
    """One yes/no question per letter of `answers` ('y' / 'n')."""
    return [Example(f"c{i}", f"Is coin {i} heads up?", "yes" if a == "y" else "no", "yes_no", "coin") for i, a in enumerate(answers)]


def test_a_yes_no_set_has_its_majority_answer_and_rate_and_half_by_chance():
    assert base_rates(yes_no("nnnyynny")) == BaseRates("no", 5 / 8, 0.5)


def test_multiple_choice_chance_is_the_mean_of_one_over_each_questions_options():
    questions = [Example("a", "?", "A", "choice", "s", choices=["x", "y"]), Example("b", "?", "A", "choice", "s", choices=list("vwxyz")),
                 Example("c", "?", "C", "choice", "s", choices=list("vwxyz"))]
    assert base_rates(questions) == BaseRates("A", 2 / 3, (1 / 2 + 1 / 5 + 1 / 5) / 3)


def test_open_answers_have_a_majority_rate_only_when_one_answer_is_common():
    varied = [Example(f"n{i}", "?", str(i), "number", "s") for i in range(20)]
    assert base_rates(varied) is None
    skewed = varied[3:] + [Example(f"m{i}", "?", "2", "number", "s") for i in range(3)]
    assert base_rates(skewed) == BaseRates("2", 0.15, None)
    assert base_rates([]) is None


def test_an_accuracy_is_above_the_majority_only_when_its_whole_interval_is():
    low, _ = wilson_interval(35, 60)  # 58.3 % of 60
    assert above_majority(low, 0.5) is False  # the interval reaches down past 50 %
    assert above_majority(wilson_interval(55, 60)[0], 0.5) is True
    assert above_majority(low, None) is None


def test_the_constant_predictor_is_right_exactly_where_the_gold_answer_is_the_majority():
    assert majority_correct(yes_no("nyn"), "no") == {"c0": True, "c1": False, "c2": True}


def yes_no_run(tmp_path, student_right: str, teacher_right: str | None = None) -> RunDir:
    """A run directory on 12 coin flips (9 'no'), a CoT student right where `student_right` has 'r',
    and optionally the teacher's own few-shot evaluation likewise."""
    run = RunDir(tmp_path / "coin")
    test = yes_no("nnynnynnynnn")
    write_examples(run.test_data, test)
    run.config.write_text("name: coin\nstudent:\n  model: embedded:gemma-3-270m\n", encoding="utf-8")
    write_jsonl(run.annotations, [{"example_id": "q0", "sample": 0, "text": "The answer is yes.", "predicted": "yes", "verdict": "kept"}])
    for name, right in (("student-cot", student_right), ("teacher-few-shot", teacher_right)):
        if right is None:
            continue
        rows = [{"example_id": e.id, "output": "", "predicted": e.answer if r == "r" else "other", "gold": e.answer,
                 "correct": r == "r", "tokens": 5, "finish_reason": "stop"} for e, r in zip(test, right)]
        write_jsonl(run.predictions(name), rows)
        correct = right.count("r")
        low, high = wilson_interval(correct, len(test))
        # Written as evaluate wrote summaries before base rates were recorded: the report derives them.
        summary = {"name": name, "model": "m", "spec": "m", "method": "8-shot CoT prompting" if name.startswith("teacher") else
                   "fine-tuned on teacher CoT", "n": len(test), "correct": correct, "accuracy": correct / len(test),
                   "ci_low": low, "ci_high": high, "unparsed": 0, "data": str(run.test_data), "extraction": "strict"}
        run.predictions(name).with_suffix(".summary.json").write_text(json.dumps(summary))
        run.record_stage(f"evaluate:{name}", status="done", **summary)
    return run


def test_the_report_sets_majority_and_chance_beside_each_accuracy_and_marks_one_not_above_it(tmp_path):
    run = yes_no_run(tmp_path, student_right="rrrrrrrrrrwr")  # 11 of 12, where always 'no' gets 9: its CI reaches 75 %
    text = write_report([run])[0].read_text()
    assert "| majority % | chance % |" in text
    low, high = wilson_interval(11, 12)
    assert low < 0.75
    assert f"| 91.7 ≤ maj. | {100 * low:.1f}–{100 * high:.1f} | 12 | 75.0 (no) | 50.0 |" in text


def test_the_report_compares_a_student_with_always_giving_the_majority_answer(tmp_path):
    run = yes_no_run(tmp_path, student_right="rrrrrrrrrrwr")
    text = write_report([run])[0].read_text()
    # only the student right: the 3 'yes' questions; only the constant right: c10, which the student got wrong
    assert "| test | student-cot | always 'no' | 12 | 3 | 1 |" in text


def test_a_teacher_at_the_majority_rate_gets_a_warning_that_its_cots_are_rationalisations(tmp_path):
    at_majority = yes_no_run(tmp_path / "a", student_right="rrwrrwrrwrrr", teacher_right="rrwrrwrrwrrr")
    text = write_report([at_majority])[0].read_text()
    assert "Warning: the teacher without the hint scores 75.0 ≤ maj." in text
    assert "not above always answering 'no' (75.0 %) while it kept 1 of its 1 hinted CoTs" in text
    assert "rationalisations" in text

    knows = yes_no_run(tmp_path / "b", student_right="rrwrrwrrwrrr", teacher_right="r" * 12)
    assert "Warning: the teacher" not in write_report([knows])[0].read_text()


def test_a_number_task_without_a_common_answer_shows_no_base_rate_columns(tmp_path):
    text = write_report([make_run(tmp_path / "tiny")])[0].read_text()
    assert "majority %" not in text and "≤ maj." not in text


def test_the_model_card_shows_the_base_rates_of_each_result(tmp_path):
    run = yes_no_run(tmp_path, student_right="rrrrrrrrrrwr")
    card = model_card(run, "cot")
    assert "| student-cot | test | 91.7 ≤ maj. |" in card and "| 75.0 (no) | 50.0 |" in card


def test_the_study_comparison_shows_the_majority_rate_beside_the_runs(tmp_path):
    runs = [yes_no_run(tmp_path / "a", student_right="rrrrrrrrrrwr"), yes_no_run(tmp_path / "b", student_right="r" * 12)]
    text = write_report(runs, tmp_path / "cmp")[0].read_text()
    assert "| evaluation | coin | coin | majority % | chance % |" in text
    assert "| student-cot | 91.7 ≤ maj. [" in text and "| 75.0 (no) | 50.0 |" in text


@pytest.mark.usefixtures("one_torch_thread")
def test_evaluate_records_the_base_rates_and_its_summary_line_names_them(tmp_path):
    student = build_tiny_causal(tmp_path / "student")
    (student / "train_config.json").write_text(json.dumps({"student": "tiny-llama", "mode": "cot"}))
    run = RunDir(tmp_path / "run")
    questions = [Example(f"q{i}", "What is 1 plus 1?", "2", "number", "t") for i in range(3)] + [
        Example("q3", "What is 4 plus 5?", "9", "number", "t")]
    write_examples(run.test_data, questions)
    out = subprocess.run([sys.executable, "-m", "cotdistill.cli", "evaluate", "--run", str(run.root), "--model", str(student),
                          "--name", "cot", "--max-new-tokens", "16", "--quiet"], check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    s = json.loads(run.predictions("cot").with_suffix(".summary.json").read_text())
    assert (s["majority_answer"], s["majority_rate"], s["chance_rate"]) == ("2", 0.75, None)
    assert "always '2' scores 75.0 %: NOT above the majority rate" in out.stdout


def test_base_rates_are_found_for_a_run_reported_from_another_folder(tmp_path, monkeypatch):
    """evaluate records its data path as given (relative to where it ran): a run directory reported
    from elsewhere, or moved, still shows its base rates."""
    monkeypatch.chdir(tmp_path)
    run = yes_no_run(tmp_path, student_right="rrrrrrrrrrwr")
    for path in (run.root / "predictions").glob("*.summary.json"):
        path.write_text(path.read_text().replace(str(run.test_data), "runs/coin/data/test.jsonl"))
    moved = tmp_path / "elsewhere" / "coin"
    moved.parent.mkdir()
    run.root.rename(moved)
    text = write_report([RunDir(moved)])[0].read_text()
    assert "| 75.0 (no) | 50.0 |" in text
