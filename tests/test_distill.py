"""Token-level distillation: the teacher's sparse probabilities on the student's sequences
(training/teacher_targets.py) and the loss that trains on them (training/head_loss.py).

The estimators are checked against full KD on a small vocabulary; the stage and training run on
tiny real Llama models sharing one tokenizer (teacher hf:DIR, student DIR), and, marked slow, on
the embedded Qwen pair (llama.cpp teacher, transformers student).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_lm import random_llama, tiny_tokenizer

from cotdistill.core.errors import UserError
from cotdistill.core.prompts import student_input
from cotdistill.core.fileio import read_jsonl_file
from cotdistill.core.records import write_jsonl
from cotdistill.core.sparse_targets import sample_targets, top_targets
from cotdistill.reporting.report import loss_label
from cotdistill.training import head_loss
from cotdistill.training.collate import Collator, encode_all, read_pairs
from cotdistill.training.head_loss import Distill, linear_cross_entropy, mixed_loss
from cotdistill.training.student_trainer import token_loss, weights_digest
from cotdistill.teachers.scoring import HFScorer, open_scorer
from cotdistill.training.teacher_targets import (
    TargetSettings,
    align,
    align_written,
    attach_targets,
    check_vocabulary,
    read_targets,
    recorded_ids,
    score_sequences,
    score_training_data,
    target_rows,
    written_row,
)
from cotdistill.training.train import TrainConfig, train_student

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEACHER_P = torch.tensor([0.5, 0.25, 0.12, 0.08, 0.04, 0.01])  # a small vocabulary with a tail


def scattered(ids: torch.Tensor, weights: torch.Tensor, vocab: int) -> torch.Tensor:
    """Per row, the target mass each token gets."""
    return torch.zeros(len(ids), vocab).scatter_add_(1, ids, weights)


# ---------------------------------------------------------------- the estimators


@pytest.mark.parametrize("power", [1.0, 0.5], ids=["proposal-is-teacher", "flatter-proposal"])
def test_sampled_targets_are_the_teachers_distribution_in_expectation(power):
    probs = TEACHER_P.repeat(20_000, 1)
    ids, weights = sample_targets(probs, 12, torch.Generator().manual_seed(0), proposal_power=power)
    mean = scattered(ids, weights, 6).mean(0)
    assert torch.allclose(mean, TEACHER_P, atol=0.004)
    if power != 1.0:  # without the importance weights the targets are the proposal, not the teacher
        naive = scattered(ids, torch.full_like(weights, 1 / 12), 6).mean(0)
        assert (naive - TEACHER_P).abs().max() > 0.05


def kd_gradient(logits: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """d KD / d logits of each row (distillation alone: weight 1, temperature 1)."""
    logits = logits.clone().requires_grad_()
    targets = torch.zeros(len(logits), dtype=torch.long)
    mixed_loss(logits, targets, Distill(ids, weights, 1.0, 1.0)).backward()
    return logits.grad


def test_sampled_kd_gradient_is_full_kd_in_expectation_and_top_k_is_biased():
    student = torch.tensor([1.0, 0.3, -0.2, 0.5, -1.0, 0.0])
    rows = 20_000
    logits = student.repeat(rows, 1)
    full = torch.softmax(student, 0) - TEACHER_P  # d KL(p || softmax(z)) / dz

    ids, weights = sample_targets(TEACHER_P.repeat(rows, 1), 12, torch.Generator().manual_seed(1), proposal_power=0.5)
    sampled = kd_gradient(logits, ids, weights).mean(0)
    assert torch.allclose(sampled, full, atol=0.005)

    top_ids, top_p = top_targets(TEACHER_P[None], 3)
    top = kd_gradient(student[None], top_ids, top_p / top_p.sum())[0]
    # The renormalised head pulls harder than the teacher does, and the tail is pushed to zero.
    expected = torch.softmax(student, 0) - torch.cat([TEACHER_P[:3] / TEACHER_P[:3].sum(), torch.zeros(3)])
    assert torch.allclose(top, expected, atol=1e-6)
    assert (top[:3] < full[:3] - 0.01).all() and (top[3:] > full[3:]).all()


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_the_chunked_head_computes_the_distillation_loss_of_full_logits(monkeypatch, temperature):
    torch.manual_seed(0)
    rows, dim, vocab = 37, 16, 50
    hidden = torch.randn(rows, dim, requires_grad=True)
    weight = torch.randn(vocab, dim, requires_grad=True)
    targets = torch.randint(vocab, (rows,))
    probs = torch.softmax(torch.randn(rows, vocab), 1)
    distill = Distill(*sample_targets(probs, 5, torch.Generator().manual_seed(0)), weight=0.3, temperature=temperature)

    reference = mixed_loss(hidden @ weight.T, targets, distill)
    grads = torch.autograd.grad(reference, (hidden, weight))
    monkeypatch.setattr(head_loss, "CHUNK_BYTES", 4 * vocab * 8)  # 8 rows per chunk: five chunks
    chunked = linear_cross_entropy(hidden, weight, targets, distill)
    chunked_grads = torch.autograd.grad(chunked, (hidden, weight))

    assert torch.allclose(chunked, reference, rtol=1e-5)
    for ours, theirs in zip(chunked_grads, grads):
        assert torch.allclose(ours, theirs, atol=1e-5)


# ---------------------------------------------------------------- tiny teacher and student


def rows(n: int) -> list[dict]:
    out = []
    for i in range(n):
        a, b = 2 + i % 7, 3 + i % 5
        out.append({"id": f"q{i}", "question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
                    "rationale": f"Tom has {a} + {b} = {a + b} apples.", "answer": str(a + b), "answer_type": "number"})
    return out


def texts(data: list[dict]) -> list[str]:
    return [student_input(r["question"]) + " " + r["rationale"] + " The answer is 1." for r in data]


@pytest.fixture(scope="module")
def distill(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "distill.jsonl"
    write_jsonl(path, rows(24))
    return path


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer(texts(rows(24)))


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tokenizer) -> Path:
    return random_llama(tmp_path_factory.mktemp("teacher"), tokenizer, seed=1)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory, tokenizer) -> Path:
    return random_llama(tmp_path_factory.mktemp("student"), tokenizer, seed=0)


@pytest.fixture(scope="module")
def targets(tmp_path_factory, distill, teacher_dir, student_dir) -> Path:
    settings = TargetSettings(f"hf:{teacher_dir}", 1.0, 8, 0)
    out = settings.file(tmp_path_factory.mktemp("run"))
    score_training_data([(distill, "cot")], str(student_dir), settings, 256, out, quiet=True)
    return out


def encoded(distill: Path, tokenizer) -> list[dict]:
    return encode_all(read_pairs(distill, "cot"), tokenizer, False, 256)[0]


def test_teacher_targets_line_up_with_the_tokens_the_loss_trains_on(distill, tokenizer, student_dir):
    """Targets that put all their mass on the true next token make distillation equal the
    cross-entropy: only if each target row sits at its own token."""
    from transformers import AutoModelForCausalLM

    batch_rows = encoded(distill, tokenizer)[:4]
    for enc in batch_rows:
        labels = enc["labels"]
        enc["kd_ids"] = [[labels[t], 0] for t in range(1, len(labels)) if labels[t] != -100]
        enc["kd_w"] = [[1.0, 0.0] for _ in enc["kd_ids"]]
    batch = Collator(tokenizer.pad_token_id)(batch_rows)
    model = AutoModelForCausalLM.from_pretrained(student_dir)
    plain, n = token_loss(model, batch, False, "chunked", model.lm_head)
    mixed, _ = token_loss(model, batch, False, "chunked", model.lm_head, distill=(0.7, 1.0))
    assert batch["kd_ids"].shape[0] == n
    assert torch.allclose(mixed, plain, rtol=1e-5)


class KilledAfter:
    """A real scorer that dies after `n` sequences, as a killed process would."""

    def __init__(self, scorer, n: int):
        self.scorer, self.n, self.name = scorer, n, scorer.name

    def logits(self, ids):
        if self.n == 0:
            raise KeyboardInterrupt
        self.n -= 1
        return self.scorer.logits(ids)


def test_a_killed_scoring_resumes_and_records_what_an_uninterrupted_one_would(distill, tokenizer, teacher_dir, tmp_path):
    sequences = encoded(distill, tokenizer)
    scorer = HFScorer(str(teacher_dir))
    settings = TargetSettings(f"hf:{teacher_dir}", 1.0, 8, 0)
    whole = tmp_path / "whole.jsonl"
    score_sequences(sequences, scorer, settings, whole)

    resumed = tmp_path / "resumed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        score_sequences(sequences, KilledAfter(scorer, 5), settings, resumed)
    with resumed.open("a") as f:
        f.write('{"key": "torn by the kill", "sampled_ids": [[1')
    assert len(read_targets(resumed)) == 5
    stats = score_sequences(sequences, scorer, settings, resumed)
    assert stats["scored_now"] == len(sequences) - 5
    assert read_targets(resumed) == read_targets(whole)


def test_each_target_row_holds_the_teachers_draws_and_its_top_tokens(targets, distill, tokenizer):
    sequences = encoded(distill, tokenizer)
    attach_targets(sequences, targets, "sampled")
    for enc in sequences:
        assert len(enc["kd_ids"]) == sum(label != -100 for label in enc["labels"])
        assert all(abs(sum(w) - 1) < 1e-3 and len(ids) <= 8 for ids, w in zip(enc["kd_ids"], enc["kd_w"]))
    attach_targets(sequences, targets, "top-k")
    assert all(len(ids) == 8 and abs(sum(w) - 1) < 1e-6 for enc in sequences for ids, w in zip(enc["kd_ids"], enc["kd_w"]))


# ---------------------------------------------------------------- the written context


def test_a_target_token_takes_the_written_distribution_only_after_the_same_tokens():
    assert align([5, 6, 7, 8, 9], [5, 6, 3, 8, 9]) == [0, 1, None, None, 4]  # 8 follows 3 there, 7 here
    assert align([1, 5, 6], [5, 6]) == [None, None, 1]  # the teacher began otherwise
    assert align([5, 6, 2, 0], [5, 6, 7, 8]) == [0, 1, None, None]  # an ending the teacher did not write


def recording(targets: list[int], sample: int = 0, swap: int | None = None) -> dict:
    """What the teacher would have recorded writing `targets` (token `swap` written otherwise):
    at each token, 0.8 on it and 0.1 on token 0."""
    ids = [t if i != swap else targets[i] + 1 for i, t in enumerate(targets)]
    return {"example_id": "q0", "sample": sample, "ids": ids, "sampled_ids": [[t] for t in ids],
            "sampled_w": [[1.0] for _ in ids], "top_ids": [[t, 0] for t in ids], "top_p": [[0.8, 0.1] for _ in ids]}


def test_each_training_token_distils_the_recording_of_its_cot_or_else_its_own_label(distill, tokenizer):
    enc = encoded(distill, tokenizer)[0]
    labels = [enc["labels"][t + 1] for t in target_rows(enc)]
    written = labels[:-1]  # the teacher's text stops before EOS
    poorer = recording(written[:10], sample=1)  # covers fewer tokens
    row, covered = written_row(enc, [poorer, recording(written, swap=4)])
    own = {4, 5, len(labels) - 1}  # the changed token, the one after it, EOS
    assert covered == len(labels) - len(own)
    for k, label in enumerate(labels):
        assert row["top_ids"][k] == ([label] if k in own else [label, 0])
        assert row["top_p"][k] == ([1.0] if k in own else [0.8, 0.1])
    assert written_row(enc, [])[1] == 0  # no recording: every token is its own target (cross-entropy)


def test_targets_from_the_written_context_line_up_with_the_training_sequences(distill, tokenizer, student_dir, tmp_path):
    written = tmp_path / "written.jsonl"
    rows = []
    for enc, row in zip(encoded(distill, tokenizer), read_jsonl_file(distill, {}, "")):
        rows.append({**recording([enc["labels"][t + 1] for t in target_rows(enc)][:-1]), "example_id": row["id"]})
    write_jsonl(written, rows)
    out = TargetSettings("embedded:x", 1.0, 8, 0, context="written").file(tmp_path)
    stats = align_written([(distill, "cot")], str(student_dir), 256, written, out, quiet=True)
    sequences = encoded(distill, tokenizer)
    assert stats["sequences"] == len(sequences) and stats["recorded_positions"] == stats["positions"] - len(sequences)
    attach_targets(sequences, out, "top-k")
    assert all(len(e["kd_ids"]) == len(target_rows(e)) for e in sequences)
    assert out != TargetSettings("embedded:x", 1.0, 8, 0).file(tmp_path)  # never mixed with the student context's


def server_recordings(distill: Path, tokenizer, piece) -> list[dict]:
    """What a server records writing each CoT: its tokens named by their bytes (`piece(id)`), the
    top-k view only, and an alternative no token of the student's has ("ffff")."""
    rows = []
    for enc, row in zip(encoded(distill, tokenizer), read_jsonl_file(distill, {}, "")):
        written = [enc["labels"][t + 1] for t in target_rows(enc)][:-1]
        rows.append({"example_id": row["id"], "sample": 0, "pieces": [piece(t) for t in written],
                     "top_pieces": [[piece(t), "ffff"] for t in written], "top_p": [[0.8, 0.2] for _ in written]})
    return rows


def test_a_servers_recording_by_bytes_is_read_through_the_students_vocabulary_and_trains_top_k_only(
        distill, tokenizer, student_dir, tmp_path):
    written, out = tmp_path / "written.jsonl", TargetSettings("openai:m", 1.0, 8, 0, context="written").file(tmp_path)
    write_jsonl(written, server_recordings(distill, tokenizer, lambda t: tokenizer.decode([t]).encode().hex()))
    stats = align_written([(distill, "cot")], str(student_dir), 256, written, out, quiet=True)
    sequences = encoded(distill, tokenizer)
    assert stats["recorded_positions"] == stats["positions"] - len(sequences)  # every token but EOS
    attach_targets(sequences, out, "top-k")
    for enc in sequences:  # the unknown alternative left out: each written token is its whole target
        labels = [enc["labels"][t + 1] for t in target_rows(enc)]
        assert enc["kd_ids"] == [[label] for label in labels] and all(w == [1.0] for w in enc["kd_w"])
    with pytest.raises(UserError, match="top logprobs only.*student.distill: top-k"):
        attach_targets(encoded(distill, tokenizer), out, "sampled")


def test_a_written_token_whose_alternatives_the_student_lacks_is_its_own_target():
    rec = {"pieces": ["61", "62"], "top_pieces": [["61", "ffff"], ["ffff", "eeee"]], "top_p": [[0.6, 0.4], [0.7, 0.3]]}
    ids, unknown = recorded_ids(rec, {"61": 5, "62": 7})
    assert unknown == 0 and ids["ids"] == [5, 7]
    assert ids["top_ids"] == [[5], [7]] and ids["top_p"] == [[0.6], [1.0]]


def test_a_servers_recording_in_another_vocabulary_is_refused(distill, tokenizer, student_dir, tmp_path):
    written = tmp_path / "written.jsonl"
    write_jsonl(written, server_recordings(distill, tokenizer, lambda t: "ffff"))
    with pytest.raises(UserError, match="tokens the teacher wrote are not in .*vocabulary: teacher and student tokenize differently"):
        align_written([(distill, "cot")], str(student_dir), 256, written, tmp_path / "t.jsonl", quiet=True)


def test_a_teacher_with_another_vocabulary_is_refused_naming_both(distill, student_dir, tmp_path):
    other = random_llama(tmp_path / "other", tiny_tokenizer(["completely different words here"] * 5), seed=2)
    settings = TargetSettings(f"hf:{other}", 1.0, 8, 0)
    with pytest.raises(UserError, match="different vocabularies") as e:
        score_training_data([(distill, "cot")], str(student_dir), settings, 256, tmp_path / "t.jsonl", quiet=True)
    assert str(other) in str(e.value) and str(student_dir) in str(e.value)
    with pytest.raises(UserError, match="'a' vs 'b'"):
        check_vocabulary(["a"], "teacher", ["b"], "student")


def test_a_run_refuses_a_pair_with_different_vocabularies_before_the_teacher_annotates(student_dir, tmp_path):
    from cotdistill.core.config import RunConfig
    from cotdistill.core.rundir import RunDir
    from cotdistill.pipeline import run_pipeline

    other = random_llama(tmp_path / "other", tiny_tokenizer(["completely different words here"] * 5), seed=2)
    config = RunConfig.model_validate({
        "name": "kd", "run_dir": str(tmp_path / "run"), "quiet": True,
        "data": {"generate": "coin_flip", "n_train": 4, "n_test": 4},
        "teacher": {"model": f"hf:{other}"},
        "student": {"model": str(student_dir), "modes": ["cot"], "distill": "sampled"},
        "evaluate": {"teacher": False, "few_shot_student": False},
    })
    with pytest.raises(UserError, match="different vocabularies"):
        run_pipeline(config)
    assert "annotate" not in RunDir(tmp_path / "run").read_manifest().get("stages", {})


def test_a_server_teacher_cannot_score_and_says_which_can():
    with pytest.raises(UserError, match="embedded:, gguf: or hf:"):
        open_scorer("openai:gpt-4o-mini@http://127.0.0.1:9/v1", 256)


def train(student_dir: Path, data: Path, out: Path, **kw) -> dict:
    base = dict(student=str(student_dir), data=data, out=out, lora=False, lr=3e-3, batch_size=8, max_steps=6,
                save_steps=50, bf16=False, quiet=True)
    config = TrainConfig(**{**base, **kw})
    return train_student(config).metrics


def test_a_student_trains_with_the_distillation_loss_and_records_it(student_dir, distill, targets, tmp_path):
    from cotdistill.models.students import load_student

    ce = train(student_dir, distill, tmp_path / "ce")
    zero = train(student_dir, distill, tmp_path / "zero", distill="sampled", distill_weight=0.0, distill_targets=targets)
    kd = train(student_dir, distill, tmp_path / "kd", distill="sampled", distill_weight=0.5, distill_targets=targets)
    assert ce["distill"] == "off" and kd["distill"] == "sampled" and zero["distill_weight"] == 0.0
    # what the report's training table and the model card say each was trained with
    assert loss_label(ce) == "cross-entropy"
    assert loss_label(kd) == "0.50 CE + 0.50 sampled KD (T 1.0, 12 teacher tokens per position)"
    digests = {name: weights_digest(load_student(str(tmp_path / name))[0]) for name in ("ce", "zero", "kd")}
    assert digests["zero"] == digests["ce"]  # weight 0: the cross-entropy student, bit for bit
    assert digests["kd"] != digests["ce"]
    assert ce["fingerprint"] != kd["fingerprint"]
    card = json.loads((tmp_path / "kd" / "train_metrics.json").read_text())
    assert card["distill_tokens"] == 12


def test_training_with_distillation_but_no_targets_says_where_they_come_from(student_dir, distill, tmp_path):
    with pytest.raises(UserError, match="teacher-targets|scores them"):
        train(student_dir, distill, tmp_path / "kd", distill="sampled")


@pytest.mark.slow
def test_the_embedded_qwen_pair_scores_on_llama_cpp_and_trains_with_sampled_kd(distill, tmp_path):
    """The recipes' pair: the 0.5B GGUF teacher on llama.cpp scores the 0.5B student's sequences."""
    settings = TargetSettings("embedded:qwen2.5-0.5b", 1.0, 12, 0)
    out = settings.file(tmp_path)
    few = tmp_path / "few.jsonl"
    write_jsonl(few, rows(3))
    stats = score_training_data([(few, "cot")], "embedded:qwen2.5-0.5b", settings, 256, out, quiet=True)
    assert stats["sequences"] == 3 and 0 < stats["bytes_per_position"] < 400  # JSON: about 230 bytes a token
    metrics = train("embedded:qwen2.5-0.5b", few, tmp_path / "kd", distill="sampled", distill_targets=out,
                    max_steps=1, batch_size=3, lora=True, lr=1e-4)
    assert metrics["distill"] == "sampled" and metrics["steps"] == 1


@pytest.mark.slow
def test_a_run_distils_the_probabilities_the_embedded_teacher_recorded_as_it_wrote(tmp_path):
    """`cotdistill run` with distill_context: written: annotation records, the teacher-targets stage
    aligns (no teacher runs), the student trains with the loss, a rerun redoes nothing."""
    from cotdistill.core.config import load_config
    from cotdistill.pipeline import run_pipeline

    configs = Path(__file__).resolve().parents[1] / "configs"
    overrides = [f"run_dir={tmp_path}", "quiet=true", "data.n_train=6", "data.n_test=2", "data.n_dev=0",
                 "teacher.model=embedded:qwen2.5-0.5b", "teacher.max_tokens=80", "student.model=embedded:qwen2.5-0.5b",
                 "student.modes=[cot]", "student.distill=sampled", "student.distill_context=written", "student.max_steps=1",
                 "student.batch_size=4", "student.eval_fraction=0", "evaluate.max_new_tokens=16",
                 "evaluate.few_shot_student=false", "evaluate.teacher=false"]
    run = run_pipeline(load_config(configs / "demo.yaml", overrides))
    stages = run.read_manifest()["stages"]
    assert stages["annotate"]["record"] == {"temperature": 1.0, "tokens": 12}
    targets = stages["teacher-targets"]
    assert targets["context"] == "written" and targets["recorded_percent"] > 50
    assert loss_label(stages["train:cot"]["metrics"]).endswith("per position, recorded as the teacher wrote)")
    before = {name: info["updated"] for name, info in stages.items()}
    run_pipeline(load_config(configs / "demo.yaml", overrides))
    assert all(run.read_manifest()["stages"][name]["updated"] == before[name] for name in ("annotate", "teacher-targets", "train:cot"))
