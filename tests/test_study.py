"""`cotdistill study`: variants of one config that share its data split and teacher cache, and one
comparison report with accuracy against training-set size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cotdistill.core.errors import UserError
from cotdistill.core.rundir import RunDir
from cotdistill.reporting.study import dev_choice, size_plot
from cotdistill.study import variant_configs

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "src" / "cotdistill" / "configs" / "cpu-math.yaml"


def study_config(tmp_path: Path, variants: str) -> Path:
    path = tmp_path / "study.yaml"
    shipped = CONFIG.read_text().split("\nstudy:\n")[0] + "\n"  # its own variants replaced (a key given twice is refused)
    path.write_text(shipped + f"run_dir: {tmp_path / 'run'}\nstudy:\n  variants:\n{variants}")
    return path


def test_variants_share_the_teacher_cache_and_the_data_seed_and_score_baselines_once(tmp_path):
    path = study_config(tmp_path, "    - {name: quarter, set: [data.n_train=100]}\n    - {name: k1, set: [teacher.samples=1]}\n")
    (name0, base), (name1, quarter), (name2, k1) = variant_configs(path, ["seed=3"])
    assert (name0, name1, name2) == ("base", "quarter", "k1")
    assert quarter.run_path == tmp_path / "run" / "variants" / "quarter"
    assert quarter.teacher.cache == k1.teacher.cache == str(tmp_path / "run" / "cache.sqlite")
    assert base.teacher.cache is None  # the base run's own cache is the shared one
    assert {base.data_seed, quarter.data_seed, k1.data_seed} == {3}  # one split: smaller sets are subsets
    assert (quarter.data.n_train, k1.teacher.samples, k1.data.n_train) == (100, 1, base.data.n_train)
    assert base.evaluate.teacher and not quarter.evaluate.teacher and not k1.evaluate.few_shot_student


def test_a_study_without_variants_or_with_a_bad_override_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="study.variants is empty"):
        variant_configs(study_config(tmp_path, "    []\n"))
    with pytest.raises(UserError, match="student.epochz"):
        variant_configs(study_config(tmp_path, "    - {name: bad, set: [student.epochz=1]}\n"))


def test_only_runs_the_base_and_the_named_variants_and_names_a_misspelt_one(tmp_path):
    path = study_config(tmp_path, "    - {name: quarter, set: [data.n_train=100]}\n    - {name: k1, set: [teacher.samples=1]}\n")
    assert [name for name, _ in variant_configs(path, only=["k1"])] == ["base", "k1"]
    with pytest.raises(UserError, match="no study variant named k2; its variants: quarter, k1"):
        variant_configs(path, only=["k2"])


def fake_run(root: Path, n_train: int, accuracy: float, dev: float | None = None) -> RunDir:
    """A finished run as the report reads it: the data stage's count and evaluation summaries
    (student-cot on the test split, and on dev when `dev` is given)."""
    run = RunDir(root)
    run.record_stage("data", status="done", n_train=n_train)
    run.predictions("student-cot").parent.mkdir(parents=True)
    for name, acc in (("student-cot", accuracy), ("student-cot.dev", dev)):
        if acc is None:
            continue
        summary = {"name": name, "model": "m", "method": "fine-tuned on teacher CoT", "n": 100,
                   "correct": int(100 * acc), "accuracy": acc, "ci_low": acc - 0.05, "ci_high": acc + 0.05}
        run.predictions(name).with_suffix(".summary.json").write_text(json.dumps(summary))
    return run


def test_each_student_ships_the_variant_best_on_dev_and_is_reported_on_test(tmp_path):
    from cotdistill.reporting.blocks import Table

    runs = [fake_run(tmp_path / "a", 100, accuracy=0.40, dev=0.30),  # best on test, not on dev
            fake_run(tmp_path / "b", 100, accuracy=0.25, dev=0.35),
            fake_run(tmp_path / "c", 100, accuracy=0.20, dev=0.35)]  # tie on dev: the earlier variant
    table = next(b for b in dev_choice(runs, ["two-epochs", "three-epochs", "four-epochs"]) if isinstance(b, Table))
    assert table.rows == [["student-cot", "three-epochs", "35.0 (n=100)", "25.0 [20.0–30.0] (n=100)"]]
    assert dev_choice([fake_run(tmp_path / "d", 100, 0.4)], ["base"]) == []  # no dev figures: nothing to choose on


def test_the_size_plot_appears_only_when_variants_differ_in_training_size(tmp_path):
    from cotdistill.reporting.blocks import Image
    from cotdistill.reporting.report import write_report

    runs = [fake_run(tmp_path / "a", 100, 0.2), fake_run(tmp_path / "b", 400, 0.3)]
    blocks = size_plot(runs, ["quarter", "base"])
    assert any(isinstance(b, Image) and b.png.startswith(b"\x89PNG") for b in blocks)
    assert size_plot([runs[0], fake_run(tmp_path / "c", 100, 0.25)], ["x", "y"]) == []
    md, _ = write_report(runs, tmp_path / "study", labels=["quarter", "base"], extra=blocks)
    text = md.read_text()
    assert "| evaluation | quarter | base |" in text and "Accuracy against training-set size" in text
    assert (tmp_path / "study" / "plots" / "accuracy-vs-size.png").is_file()
