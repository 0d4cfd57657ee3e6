"""Shareable artefacts: each student folder carries a model card and loads with transformers'
pipeline; `cotdistill export` writes the distilled set as a dataset that `datasets` loads back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tiny_lm import build_tiny_causal

from cotdistill.core.hashing import CARD, model_files
from cotdistill.reporting.cards import write_model_cards
from cotdistill.core.records import write_jsonl
from cotdistill.core.rundir import RunDir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DISTILL = [
    {"id": "q1#0", "example_id": "q1", "sample": 0, "question": "Ann has 2 pens and buys 3 more. How many pens?",
     "rationale": "Ann has 2 + 3 = 5 pens.", "answer": "5", "answer_type": "number"},
    {"id": "q1#1", "example_id": "q1", "sample": 1, "question": "Ann has 2 pens and buys 3 more. How many pens?",
     "rationale": "2 pens and 3 more make 5.", "answer": "5", "answer_type": "number"},
    {"id": "q2#0", "example_id": "q2", "sample": 0, "question": "Is 7 odd?", "rationale": "7 = 2 * 3 + 1, odd.",
     "answer": "yes", "answer_type": "yes_no"},
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> RunDir:
    """A run as the pipeline leaves it: config, manifest, distill set, a trained student, evaluations."""
    run = RunDir(tmp_path_factory.mktemp("run"))
    build_tiny_causal(run.student("cot"), steps=20)
    run.config.write_text("name: pens\nseed: 0\ndata:\n  train: [/data/AddSub.json]\n  n_test: 5\n"
                          "teacher:\n  model: embedded:qwen2.5-1.5b\n  samples: 2\nstudent:\n  model: embedded:gemma-3-270m\n"
                          "  lora: true\n  epochs: 2\n")
    write_jsonl(run.distill, DISTILL)
    run.record_stage("data", status="done", n_train=2, n_dev=1, n_test=5, decontaminated={"ngram": 8, "test": 0})
    run.record_stage("annotate", status="done", n_distill=3, teacher="llamacpp:qwen2.5-1.5b@cc324af070c2")
    run.record_stage("train:cot", status="done", metrics={"steps": 20, "bf16": False, "first_train_loss": 3.2,
                                                          "final_train_loss": 0.4, "final_eval_loss": 0.5})
    (run.root / "predictions").mkdir()
    for name, acc in (("student-cot", 0.6), ("student-cot.dev", 0.5), ("student-answer-only", 0.2)):
        summary = {"name": name, "model": "m", "n": 5, "correct": int(5 * acc), "accuracy": acc,
                   "ci_low": acc - 0.2, "ci_high": acc + 0.2}
        run.predictions(name).with_suffix(".summary.json").write_text(json.dumps(summary))
    return run


def test_the_student_folder_gets_a_model_card_with_its_results_settings_and_licences(finished_run):
    [card] = write_model_cards(finished_run, ["cot", "answer-only"])  # answer-only was not trained: no card
    assert card == finished_run.student("cot") / CARD
    text = card.read_text()
    assert text.startswith("---\nlibrary_name: transformers\npipeline_tag: text-generation")
    assert "`embedded:gemma-3-270m` fine-tuned" in text and "`embedded:qwen2.5-1.5b`, 2 sample(s)" in text
    assert "| student-cot | test | 60.0 | 40.0–80.0 | 5 |" in text and "| student-cot | dev | 50.0 |" in text
    assert "| student-answer-only | test | 20.0 |" in text
    assert "training loss 3.200 → 0.400" in text and "`/data/AddSub.json`" in text
    assert "Gemma Terms of Use" in text and "Apache-2.0" in text
    assert f"cotdistill run {finished_run.config}" in text


def test_the_card_is_not_part_of_the_model_so_writing_it_never_reruns_an_evaluation(finished_run):
    before = model_files(finished_run.student("cot"))
    write_model_cards(finished_run, ["cot"])
    assert model_files(finished_run.student("cot")) == before
    assert finished_run.student("cot") / CARD not in before


def test_the_student_loads_with_the_transformers_text_generation_pipeline(finished_run):
    from transformers import pipeline

    write_model_cards(finished_run, ["cot"])
    generate = pipeline("text-generation", model=str(finished_run.student("cot")))
    out = generate("Q: What is 2 plus 3?\nA:", max_new_tokens=8, do_sample=False, return_full_text=False)
    assert isinstance(out[0]["generated_text"], str) and out[0]["generated_text"]


def test_export_writes_a_dataset_that_datasets_load_dataset_reads_back(finished_run, tmp_path):
    from datasets import load_dataset

    out = tmp_path / "hf"
    done = subprocess.run([sys.executable, "-m", "cotdistill.cli", "export", str(finished_run.root), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    data = load_dataset(str(out))["train"]
    assert data.num_rows == 3 and data.column_names == ["id", "question", "rationale", "answer", "answer_type", "sample"]
    assert data[1]["rationale"] == "2 pens and 3 more make 5." and data[2]["answer"] == "yes"
    assert "configs:" in (out / CARD).read_text() and "llamacpp:qwen2.5-1.5b" in (out / CARD).read_text()


def test_export_of_a_run_without_a_distilled_set_is_a_one_line_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "cotdistill.cli", "export", str(tmp_path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_a_setting_the_config_copy_leaves_out_is_shown_at_the_configs_default(tmp_path):
    """The card falls back on the config classes' defaults: a run whose config.yaml does not name
    teacher.hint ran with the hint (the card used to say it did not)."""
    from cotdistill.reporting.cards import model_card

    run = RunDir(tmp_path)
    run.config.write_text("name: pens\ndata:\n  generate: coin_flip\n  n_train: 2\n  n_test: 1\n")
    card = model_card(run, "cot")
    assert "1 sample(s) per question at temperature\n  0.0, gold answer as hint: True;" in card
    assert "sharing 8 consecutive words" in card
