"""`evaluate.engine: llamacpp`: a fine-tuned student evaluated from its GGUF export on llama.cpp's batched
engine writes what it writes on torch, and the evaluation says which engine ran it.

The student is test_gguf_export's: embedded:gemma-3-270m after 3 LoRA steps, asked its 4 training
questions (few, short generations: the machine is shared).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_bad_inputs import assert_one_line_error, call
from test_gguf_export import TRAINING, installed, trained_run
from tiny_lm import build_tiny_causal, build_tiny_seq2seq

from cotdistill.core.errors import UserError
from cotdistill.core.hashing import model_files
from cotdistill.core.records import read_jsonl, write_jsonl
from cotdistill.core.rundir import RunDir
from cotdistill.evaluation import evaluate, generation, llamacpp_student
from cotdistill.evaluation.evaluate import EvalOptions, evaluate_model
from cotdistill.evaluation.llamacpp_student import eval_gguf, resolve_engine

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NEW_TOKENS = 32


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> RunDir:
    pytest.importorskip("llama_cpp")
    installed("embedded:gemma-3-270m")
    return trained_run(tmp_path_factory.mktemp("run"), "embedded:gemma-3-270m", steps=3)


def options(**kw) -> EvalOptions:
    return EvalOptions(**{"max_new_tokens": NEW_TOKENS, "batch_size": 4, "dtype": "float32", "quiet": True, **kw})


def outputs(run: RunDir, name: str) -> list[str]:
    return [r["output"] for r in read_jsonl(run.predictions(name))]


def test_the_student_on_llama_cpp_writes_what_it_writes_on_torch(run):
    """f16 keeps every weight to 11 significant bits and llama.cpp sums in another order than torch, so
    a near-tie greedy token may go the other way and change the rest of one answer: 1 question in 4
    may differ (test_gguf_export allows the same of its token-level comparison); the others must be
    the same text, read as the same answer."""
    student = str(run.student("cot"))
    torch_summary = evaluate_model(run, student, "torch", options(engine="torch"))
    llama_summary = evaluate_model(run, student, "llama", options(engine="llamacpp", gguf_type="f16"))
    on_torch, on_llama = outputs(run, "torch"), outputs(run, "llama")
    same = sum(a == b for a, b in zip(on_torch, on_llama))
    assert same >= len(TRAINING) - 1, list(zip(on_torch, on_llama))
    assert any(on_llama), on_llama  # the student wrote something (not all prompts refused or empty)
    predicted = {r["example_id"]: r["predicted"] for r in read_jsonl(run.predictions("torch"))}
    for a, b, row in zip(on_torch, on_llama, read_jsonl(run.predictions("llama"))):
        if a == b:
            assert row["predicted"] == predicted[row["example_id"]]
    assert (torch_summary.engine, torch_summary.gguf_type, torch_summary.dtype) == ("torch", None, "float32")
    assert (llama_summary.engine, llama_summary.gguf_type) == ("llamacpp", "f16")
    saved = json.loads(run.predictions("llama").with_suffix(".summary.json").read_text())
    assert (saved["engine"], saved["gguf_type"]) == ("llamacpp", "f16")
    # The export, cached beside the student under the name `cotdistill export --gguf` gives it
    assert (run.student("cot") / "gguf" / f"{run.root.name}-cot-f16.gguf").is_file()


def test_generations_of_another_engine_are_not_reused(run, monkeypatch):
    """An evaluation interrupted on llama.cpp and rerun on torch generates every question again."""
    student = str(run.student("cot"))
    real = llamacpp_student.LlamaCppStudent.generate

    def interrupted(self, jobs, stop, on_batch):
        def then_interrupt(batch, gens):
            on_batch(batch, gens)
            raise KeyboardInterrupt

        return real(self, jobs, stop, then_interrupt)

    monkeypatch.setattr(llamacpp_student.LlamaCppStudent, "generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(run, student, "switch", options(engine="llamacpp"))
    assert len(run.read_generations("switch")) == 1
    asked: list[int] = []
    real_batched = generation.generate_batched

    def spy(model, tokenizer, prompts, **kw):
        asked.append(len(prompts))
        return real_batched(model, tokenizer, prompts, **kw)

    monkeypatch.setattr(generation, "generate_batched", spy)
    evaluate_model(run, student, "switch", options(engine="torch"))
    assert asked == [len(TRAINING)]


def test_the_export_is_reused_until_the_student_is_retrained(run):
    folder = run.student("cot")
    path = eval_gguf(folder, "f16")
    written = path.stat().st_mtime_ns
    assert eval_gguf(folder, "f16") == path and path.stat().st_mtime_ns == written  # reused, not rewritten
    assert not any("gguf" in p.parts for p in model_files(folder))  # an export does not change the model's fingerprint
    for weights in folder.glob("*.safetensors"):  # retrained: weights newer than the export
        later = written + 10**9
        os.utime(weights, ns=(later, later))
    assert eval_gguf(folder, "f16") == path and path.stat().st_mtime_ns > written


def test_a_student_runs_on_torch_unless_llama_cpp_is_asked_for(run, tmp_path):
    student = str(run.student("cot"))
    assert resolve_engine(student, EvalOptions()) == "torch"
    assert resolve_engine(student, EvalOptions(engine="llamacpp")) == "llamacpp"
    assert resolve_engine("embedded:gemma-3-270m", EvalOptions(engine="torch")) == "llamacpp"  # names its backend
    causal = build_tiny_causal(tmp_path / "tiny-llama", steps=1)  # a student of no embedded model: no GGUF export
    (causal / "train_config.json").write_text(json.dumps({"student": "tiny-llama", "mode": "cot"}))
    with pytest.raises(UserError, match="not an embedded model"):
        resolve_engine(str(causal), EvalOptions(engine="llamacpp"))


def test_a_seq2seq_student_on_llama_cpp_is_one_clear_error(tmp_path, capsys, monkeypatch):
    seq2seq = build_tiny_seq2seq(tmp_path / "t5", steps=1)
    run = RunDir(tmp_path / "run")
    write_jsonl(run.test_data, [{"id": "q0", "question": "What is 1 + 2?", "answer": "3", "answer_type": "number"}])
    with pytest.raises(UserError, match="seq2seq"):
        evaluate.open_model(str(seq2seq), EvalOptions(engine="llamacpp"))
    code, err = call(["evaluate", "--run", str(run.root), "--model", str(seq2seq), "--name", "t5", "--engine", "llamacpp"],
                     capsys, monkeypatch)
    assert_one_line_error(code, err, "seq2seq", "--engine torch")
    assert not Path(run.predictions("t5")).exists()
