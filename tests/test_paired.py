"""The exact McNemar test on paired correctness."""

from cotdistill.reporting.paired import compare, mcnemar_exact


def test_no_disagreement_is_no_evidence():
    assert mcnemar_exact(0, 0) == 1.0


def test_the_p_value_is_the_doubled_binomial_tail():
    # 10 disagreements, all one way: 2 * (1/2)^10
    assert abs(mcnemar_exact(10, 0) - 2 / 1024) < 1e-12
    # 6 vs 4: 2 * P(X <= 4), X ~ Bin(10, 1/2) = 2 * 386/1024, capped at 1
    assert abs(mcnemar_exact(6, 4) - min(1.0, 2 * 386 / 1024)) < 1e-12
    assert mcnemar_exact(3, 7) == mcnemar_exact(7, 3)


def test_only_questions_both_models_answered_are_paired():
    first = {"a": True, "b": True, "c": False, "d": True}
    second = {"a": False, "b": True, "c": True, "e": True}
    p = compare(first, second)
    assert (p.n, p.only_first, p.only_second) == (3, 1, 1) and p.p_value == 1.0


def test_the_report_compares_each_cot_student_with_its_baselines_on_the_same_questions(tmp_path):
    import json

    from cotdistill.reporting.report import write_report
    from cotdistill.core.rundir import RunDir

    run = RunDir(tmp_path / "run")
    run.predictions("x").parent.mkdir(parents=True)
    right = {"student-cot": [1] * 12 + [0] * 8, "student-answer-only": [0] * 12 + [1] * 2 + [0] * 6}
    for name, marks in right.items():
        rows = [{"example_id": f"q{i}", "output": "The answer is 1.", "predicted": "1", "correct": bool(m)} for i, m in enumerate(marks)]
        run.predictions(name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        acc = sum(marks) / len(marks)
        run.predictions(name).with_suffix(".summary.json").write_text(json.dumps(
            {"name": name, "n": 20, "correct": sum(marks), "accuracy": acc, "ci_low": acc / 2, "ci_high": min(1, acc * 1.5)}))
    md, _ = write_report([run])
    line = next(line for line in md.read_text().splitlines() if "| student-cot | student-answer-only |" in line)
    assert "| 20 | 12 | 2 |" in line  # 12 only the CoT student got, 2 only answer-only got
    assert f"{mcnemar_exact(12, 2):.2g}" in line
