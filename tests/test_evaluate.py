"""The evaluate stage on a tiny real student: predictions, accuracy with a Wilson CI, resume, voting."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_lm import addition_examples, build_tiny_causal

from cotdistill.evaluation import generation
from cotdistill.core.answers import answers_match, extract_answer
from cotdistill.core.errors import UserError
from cotdistill.evaluation.evaluate import EvalOptions, evaluate_model, wilson_interval
from cotdistill.core.hashing import fingerprint, model_files
from cotdistill.core.records import read_jsonl, write_examples
from cotdistill.core.rundir import RunDir

N_TEST = 10
REAL_GENERATE = generation.generate_batched


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    """A student directory as training leaves it: model, tokenizer and train_config.json."""
    path = build_tiny_causal(tmp_path_factory.mktemp("student"))
    (path / "train_config.json").write_text(json.dumps({"student": "tiny-llama", "mode": "cot"}))
    return path


@pytest.fixture
def run(tmp_path, student) -> RunDir:
    run = RunDir(tmp_path / "run")
    write_examples(run.test_data, addition_examples(N_TEST, seed=1))
    shutil.copytree(student, run.student("cot"))
    return run


def spy_prompts(monkeypatch) -> list[list[str]]:
    """Record the prompts of every batched-generation call (the real generation still runs)."""
    calls: list[list[str]] = []

    def spy(model, tokenizer, prompts, **kw):
        calls.append(list(prompts))
        return REAL_GENERATE(model, tokenizer, prompts, **kw)

    monkeypatch.setattr(generation, "generate_batched", spy)
    return calls


def interrupt_after_first_results(monkeypatch) -> list[int]:
    """Fault injection: Ctrl-C right after the first finished generations were handed over.
    Returns the indices of the prompts whose generations were handed over."""
    handed: list[int] = []

    def crashing(model, tokenizer, prompts, on_batch, **kw):
        def then_interrupt(indices, gens):
            on_batch(indices, gens)
            handed.extend(indices)
            raise KeyboardInterrupt

        return REAL_GENERATE(model, tokenizer, prompts, on_batch=then_interrupt, **kw)

    monkeypatch.setattr(generation, "generate_batched", crashing)
    return handed


@pytest.fixture
def prompts_seen(monkeypatch) -> list[list[str]]:
    return spy_prompts(monkeypatch)


def options(**kw) -> EvalOptions:
    return EvalOptions(**{"max_new_tokens": 24, "batch_size": 4, "quiet": True, **kw})


def test_wilson_interval_matches_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_a_fine_tuned_student_answers_bare_questions_and_its_accuracy_is_recorded(run, prompts_seen):
    s = evaluate_model(run, str(run.student("cot")), "cot", options())

    assert prompts_seen == [[f"Q: {e.question}\nA:" for e in addition_examples(N_TEST, seed=1)]]
    rows = read_jsonl(run.predictions("cot"))
    assert [r["example_id"] for r in rows] == [e.id for e in addition_examples(N_TEST, seed=1)]
    for r in rows:  # strict extraction: only a final-answer sentence counts
        x = extract_answer(r["output"], "number")
        assert r["predicted"] == x.value and r["correct"] == answers_match(x.value, r["gold"], "number")
        assert ("reason" in r) == (x.value is None)
    correct = sum(r["correct"] for r in rows)
    assert (s.n, s.correct, s.accuracy) == (N_TEST, correct, correct / N_TEST)
    assert (s.ci_low, s.ci_high) == wilson_interval(correct, N_TEST)
    assert (s.model, s.method, s.few_shot, s.extraction) == ("tiny-llama", "fine-tuned on teacher CoT", 0, "strict")
    assert s.tokens_generated == sum(r["tokens"] for r in rows) > 0
    assert "evaluate:cot" not in run.read_manifest()["stages"]  # whoever runs the stage records it (RunDir.stage)
    assert json.loads(run.predictions("cot").with_suffix(".summary.json").read_text())["ci_high"] == s.ci_high
    assert not run.predictions("cot").with_suffix(".partial.jsonl").exists()


def test_an_interrupted_evaluation_resumes_without_generating_finished_questions(run, monkeypatch):
    handed = interrupt_after_first_results(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(run, str(run.student("cot")), "cot", options())
    assert 0 < len(handed) < N_TEST
    assert len(read_jsonl(run.predictions("cot").with_suffix(".partial.jsonl"))) == len(handed)  # those saved

    seen = spy_prompts(monkeypatch)
    resumed = evaluate_model(run, str(run.student("cot")), "cot", options())
    assert [len(p) for p in seen] == [N_TEST - len(handed)]
    fresh = evaluate_model(run, str(run.student("cot")), "fresh", options())
    assert [r["output"] for r in read_jsonl(run.predictions("cot"))] == [r["output"] for r in read_jsonl(run.predictions("fresh"))]
    assert resumed.correct == fresh.correct


def test_a_row_torn_by_a_kill_costs_only_itself_when_the_evaluation_is_interrupted_again(run, monkeypatch):
    """The log is appended to: a resumed evaluation first drops a torn last line, or the next row
    would be glued onto it and lost with it."""
    first = interrupt_after_first_results(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(run, str(run.student("cot")), "cot", options())
    partial = run.predictions("cot").with_suffix(".partial.jsonl")
    with partial.open("a") as f:
        f.write('{"fp": "x", "exam')
    second = interrupt_after_first_results(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(run, str(run.student("cot")), "cot", options())
    assert len(run.read_generations("cot")) == len(first) + len(second)


def test_an_interrupted_sampling_evaluation_resumes_with_the_samples_an_uninterrupted_one_draws(run, monkeypatch):
    sampling = options(samples=3, temperature=1.0)
    handed = interrupt_after_first_results(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(run, str(run.student("cot")), "sc", sampling)
    assert 0 < len(handed) < 3 * N_TEST
    monkeypatch.setattr(generation, "generate_batched", REAL_GENERATE)
    evaluate_model(run, str(run.student("cot")), "sc", sampling)
    evaluate_model(run, str(run.student("cot")), "sc-fresh", sampling)
    resumed, fresh = read_jsonl(run.predictions("sc")), read_jsonl(run.predictions("sc-fresh"))
    assert [r["samples"] for r in resumed] == [r["samples"] for r in fresh]
    assert len({s for r in fresh for s in r["samples"]}) > N_TEST  # samples differ within questions too


def restore_with_new_mtimes(folder: Path) -> None:
    """A run directory copied away and back (as from a backup): the same bytes, new mtimes."""
    backup = folder.with_name(folder.name + ".backup")
    shutil.copytree(folder, backup, copy_function=shutil.copyfile)  # contents only, no dates
    shutil.rmtree(folder)
    backup.rename(folder)


def test_a_restored_student_resumes_its_evaluation_and_a_changed_weight_restarts_it(run, monkeypatch):
    """Evaluation judges a model by its files' content, as the pipeline's stage fingerprint does:
    new mtimes with the same bytes are the same model, changed bytes of the same size are not."""
    student = run.student("cot")
    weights = student / "model.safetensors"
    pipeline_fp = fingerprint(str(student), *model_files(student))
    handed = interrupt_after_first_results(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(run, str(student), "cot", options())
    mtime = weights.stat().st_mtime_ns
    restore_with_new_mtimes(student)
    assert weights.stat().st_mtime_ns != mtime
    assert fingerprint(str(student), *model_files(student)) == pipeline_fp  # the pipeline: up to date
    seen = spy_prompts(monkeypatch)
    evaluate_model(run, str(student), "cot", options())
    assert [len(p) for p in seen] == [N_TEST - len(handed)]  # evaluate: the finished ones are reused

    interrupt_after_first_results(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(run, str(student), "again", options())
    data = bytearray(weights.read_bytes())
    data[-4:] = struct.pack("<f", struct.unpack("<f", data[-4:])[0] + 1.0)  # one weight, same size
    weights.write_bytes(bytes(data))
    assert fingerprint(str(student), *model_files(student)) != pipeline_fp
    seen = spy_prompts(monkeypatch)
    evaluate_model(run, str(student), "again", options())
    assert [len(p) for p in seen] == [N_TEST]  # another model: nothing reused


def test_generations_of_other_settings_are_not_reused(run, monkeypatch):
    interrupt_after_first_results(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(run, str(run.student("cot")), "cot", options())
    seen = spy_prompts(monkeypatch)
    evaluate_model(run, str(run.student("cot")), "cot", options(max_new_tokens=30))
    assert [len(p) for p in seen] == [N_TEST]


def test_self_consistency_takes_the_majority_of_the_sampled_answers(run):
    s = evaluate_model(run, str(run.student("cot")), "sc", options(samples=3, temperature=1.0))
    assert "self-consistency (3 samples" in s.method
    for r in read_jsonl(run.predictions("sc")):
        assert len(r["samples"]) == 3
        values = [extract_answer(o, "number").value for o in r["samples"]]
        counts = {v: values.count(v) for v in values if v is not None}
        assert r["votes"] == counts
        if counts:
            assert counts[r["predicted"]] == max(counts.values())
            assert extract_answer(r["output"], "number").value == r["predicted"]  # the row shows a sample that voted for it


def test_self_consistency_needs_a_temperature(run):
    with pytest.raises(UserError, match="--temperature"):
        evaluate_model(run, str(run.student("cot")), "sc", options(samples=3))


def test_a_model_not_fine_tuned_here_gets_the_few_shot_prompt_without_the_hint(run, student, tmp_path, prompts_seen):
    base = tmp_path / "base"
    shutil.copytree(student, base)
    (base / "train_config.json").unlink()
    s = evaluate_model(run, str(base), "few-shot", options(few_shot=1, limit=3))
    prompt = prompts_seen[0][0]
    assert prompt.count("Q: ") == 2 and "muffins" in prompt and "hint" not in prompt.lower()
    assert prompt.endswith("Q: " + addition_examples(N_TEST, seed=1)[0].question + "\nA:")
    assert (s.method, s.extraction, s.n) == ("1-shot CoT prompting", "lenient", 3)


def test_a_multitask_student_is_asked_for_the_answer_task(run, prompts_seen):
    cfg = run.student("cot") / "train_config.json"
    cfg.write_text(json.dumps({"student": "tiny-llama", "mode": "multitask"}))
    evaluate_model(run, str(run.student("cot")), "mt", options(limit=2))
    assert all(p.startswith("[answer] Q: ") for p in prompts_seen[0])


@pytest.mark.parametrize(
    "model, name, kw, message",
    [
        ("STUDENT", "bad/name", {}, "--name"),
        ("STUDENT", "x", {"data": Path("missing.jsonl")}, "missing.jsonl: test questions not found"),
        ("nosuch:model", "x", {}, "unknown teacher 'nosuch:model'"),
        ("/no/such/dir", "x", {}, "no such model directory"),
    ],
)
def test_user_mistakes_are_one_clear_error(run, model, name, kw, message):
    with pytest.raises(UserError, match=message):
        evaluate_model(run, str(run.student("cot")) if model == "STUDENT" else model, name, options(**kw))


def test_the_cli_prints_accuracy_with_its_interval_and_where_predictions_are_and_records_the_stage(run):
    out = subprocess.run(
        [sys.executable, "-m", "cotdistill.cli", "evaluate", "--run", str(run.root), "--model", str(run.student("cot")),
         "--name", "cot", "--limit", "3", "--max-new-tokens", "24", "--quiet"],
        check=False, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    s = json.loads(run.predictions("cot").with_suffix(".summary.json").read_text())
    assert f"cot: accuracy {100 * s['accuracy']:.1f} % (95 % CI {100 * s['ci_low']:.1f}–{100 * s['ci_high']:.1f})" in out.stdout
    assert f"predictions: {run.predictions('cot')}" in out.stdout and s["n"] == 3
    stage = run.read_manifest()["stages"]["evaluate:cot"]
    assert stage["status"] == "done" and stage["summary"] == s and stage["seconds"] >= 0


def test_the_cli_reports_a_missing_test_set_in_one_line_with_exit_2(tmp_path, student):
    out = subprocess.run(
        [sys.executable, "-m", "cotdistill.cli", "evaluate", "--run", str(tmp_path), "--model", str(student), "--name", "x"],
        check=False, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "test questions not found" in out.stderr


@pytest.mark.slow
def test_the_embedded_teacher_is_evaluated_few_shot(run):
    pytest.importorskip("llama_cpp")
    s = evaluate_model(run, "embedded:gemma-3-270m", "teacher", options(limit=4, max_new_tokens=96))
    rows = read_jsonl(run.predictions("teacher"))
    assert s.few_shot == 8 and s.extraction == "lenient" and len(rows) == 4
    assert (s.engine, s.gguf_type) == ("llamacpp", "q4_k_m")  # the embedded GGUF's own type, in the protocol card
    assert all(r["output"] and "\nQ:" not in r["output"] for r in rows)  # stopped before the next question


def test_questions_in_an_authors_format_are_evaluated_as_they_are_and_the_report_reads_them_back(run, tmp_path):
    """`evaluate --data` takes any format annotate and data.extra_tests take, here GSM8K's own jsonl,
    without a `data prepare` first; the report finds the same questions in the same file."""
    from cotdistill.reporting.report import evaluated_examples

    gsm8k = tmp_path / "gsm8k.jsonl"
    gsm8k.write_text("".join(json.dumps({"question": e.question, "answer": f"{e.question} ... #### {e.answer}"}) + "\n"
                             for e in addition_examples(4, seed=2)))
    s = evaluate_model(run, str(run.student("cot")), "gsm8k", options(data=gsm8k))
    rows = read_jsonl(run.predictions("gsm8k"))
    assert s.n == len(rows) == 4 and [r["gold"] for r in rows] == [e.answer for e in addition_examples(4, seed=2)]
    read_back = evaluated_examples(run, s.to_dict())
    assert [e.id for e in read_back] == [r["example_id"] for r in rows]
    assert [e.question for e in read_back] == [e.question for e in addition_examples(4, seed=2)]


def test_a_format_named_on_the_command_line_is_how_the_file_is_read(run, tmp_path):
    data = tmp_path / "questions.txt"  # the name says nothing: --format decides
    data.write_text("".join(json.dumps({"question": e.question, "answer": f"#### {e.answer}"}) + "\n"
                            for e in addition_examples(3, seed=3)))
    s = evaluate_model(run, str(run.student("cot")), "named", options(data=data, data_format="gsm8k"))
    assert (s.n, s.data_format) == (3, "gsm8k")
    with pytest.raises(UserError, match="unknown format 'nope'"):
        evaluate_model(run, str(run.student("cot")), "named2", options(data=data, data_format="nope"))
